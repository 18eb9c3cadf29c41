"""conta_core.evaluation.evaluate on a tiny hand-made manifest (PNG masks + JPEG images in tmp_path)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.evaluation.evaluate import evaluate_label_maps, evaluate_to_csv
from conta_core.infra.fileio import save_label_png

GT = {
    "a": np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8),
    "b": np.array([[2, 2, 0], [0, 0, 0]], dtype=np.uint8),
}
PRED = {
    "a": np.array([[0, 1, 1], [1, 255, 2]], dtype=np.uint8),
    "b": np.array([[2, 0, 0], [0, 0, 1]], dtype=np.uint8),
    "c": np.zeros((2, 3), dtype=np.uint8),  # image without GT: not evaluated
}
# confusion a: [[1,1,0],[0,2,0],[1,0,0]]; b: [[3,1,0],[0,0,0],[1,0,1]] (rows GT, cols pred)
CONF = np.array([[4, 2, 0], [0, 2, 0], [2, 0, 1]])


def build(root: Path) -> Manifest:
    for i in ("a", "b", "c"):
        Image.fromarray(np.full((2, 3, 3), 128, np.uint8)).save(root / f"{i}.jpg")
    for i, gt in GT.items():
        save_label_png(root / "gt" / f"{i}.png", gt)
    # predictions split over two shard folders, one of them grayscale
    save_label_png(root / "pred" / "0" / "a.png", PRED["a"])
    save_label_png(root / "pred" / "1" / "b.png", PRED["b"], palette=False)
    save_label_png(root / "pred" / "0" / "c.png", PRED["c"])
    manifest = Manifest(
        name="tiny",
        root=root,
        class_names=["background", "cat", "dog"],
        splits={"train": ["a", "b", "c"]},
        labels={"a": [1, 2], "b": [2], "c": [1]},
        images={i: f"{i}.jpg" for i in "abc"},
        masks={i: f"gt/{i}.png" for i in GT},
    )
    manifest.save(root / "manifest.json")
    return Manifest.load(root / "manifest.json")


def expected_iou() -> np.ndarray:
    tp = np.diag(CONF)
    return tp / (CONF.sum(0) + CONF.sum(1) - tp)  # [4/8, 2/4, 1/3]


def test_evaluate_to_csv(tmp_path):
    manifest = build(tmp_path)
    out = tmp_path / "eval" / "pseudo_mask_eval.csv"
    miou = evaluate_to_csv(manifest, "train", [tmp_path / "pred" / "0", tmp_path / "pred" / "1"], out, "pseudo_mask")
    iou = expected_iou()
    np.testing.assert_allclose(iou, [1 / 2, 1 / 2, 1 / 3])
    assert miou == pytest.approx(iou.mean())
    df = pd.read_csv(out)
    assert list(df.columns) == ["stage", "class", "iou", "precision", "recall", "gt_pixels", "pred_pixels"]
    assert df["class"].tolist() == ["background", "cat", "dog", "mean"]
    assert (df["stage"] == "pseudo_mask").all()
    np.testing.assert_allclose(df["iou"].to_numpy(), [*iou, iou.mean()])
    assert df["gt_pixels"].tolist() == [6, 2, 3, 11]
    assert df["pred_pixels"].tolist() == [6, 4, 1, 11]
    np.testing.assert_allclose(df["precision"][:3], [4 / 6, 2 / 4, 1.0])
    np.testing.assert_allclose(df["recall"][:3], [4 / 6, 1.0, 1 / 3])


def test_missing_prediction_or_gt_raises(tmp_path):
    manifest = build(tmp_path)
    with pytest.raises(ValueError, match="'b'"):
        evaluate_to_csv(manifest, "train", [tmp_path / "pred" / "0"], tmp_path / "x.csv", "seg")
    assert not (tmp_path / "x.csv").exists()
    preds = {i: tmp_path / "pred" / "0" / f"{i}.png" for i in "ac"}
    with pytest.raises(ValueError, match="'c'"):
        evaluate_label_maps(manifest, ["a", "c"], preds)


def test_size_mismatch_raises(tmp_path):
    manifest = build(tmp_path)
    save_label_png(tmp_path / "bad" / "a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="'a'"):
        evaluate_label_maps(manifest, ["a"], {"a": tmp_path / "bad" / "a.png"})
