"""Report plots and tables from tiny hand-written CSV / HDF5 artifacts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conta_core.report import plots

CLASSES = ["background", "cat", "dog"]


def write_cam_eval(path: Path, shift: float = 0.0) -> None:
    thr = np.round(np.arange(0.05, 0.40, 0.05), 2)
    miou = 0.4 + shift - (thr - 0.15) ** 2
    df = pd.DataFrame({"threshold": thr, "miou": miou})
    for j, c in enumerate(CLASSES):
        df[c] = miou + 0.01 * j
    df["is_eval_threshold"] = np.isclose(thr, 0.15)
    df["is_best"] = np.isclose(thr, 0.15)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


def write_mask_eval(path: Path, stage: str, ious: list[float]) -> None:
    rows = [
        {"stage": stage, "class": c, "iou": v, "precision": v, "recall": v, "gt_pixels": 10, "pred_pixels": 10}
        for c, v in zip(CLASSES, ious)
    ]
    rows.append(
        {
            "stage": stage,
            "class": "mean",
            "iou": float(np.mean(ious)),
            "precision": 0.5,
            "recall": 0.5,
            "gt_pixels": 30,
            "pred_pixels": 30,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def write_summary(path: Path, rounds: int = 3) -> None:
    df = pd.DataFrame(
        {
            "round": range(rounds),
            "cam_miou": [40.0 + r for r in range(rounds)],
            "cam_best_miou": [42.0 + r for r in range(rounds)],
            "cam_best_threshold": [0.15] * rounds,
            "pseudo_mask_miou": [50.0 + r for r in range(rounds)],
            "seg_train_miou": [np.nan] + [55.0 + r for r in range(1, rounds)],
            "seg_val_miou": [52.0 + r for r in range(rounds)],
        }
    )
    df.to_csv(path, index=False)


def write_confounder(path: Path, n: int = 5) -> None:
    C = np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("C", data=C)
        f.attrs["classes"] = np.array([f"class{i}" for i in range(n)], dtype=h5py.string_dtype())
        f.attrs["round"] = 1
        f.attrs["source"] = "seg"
        f.attrs["image_counts"] = np.arange(n, dtype=np.int64)


def write_train_log(path: Path, step_col: str, n: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    loss = np.exp(-np.arange(n) / 10.0) + 0.05 * np.random.default_rng(0).random(n)
    df = pd.DataFrame({"epoch": np.arange(n) // 10, step_col: np.arange(n), "loss": loss, "lr": 0.1})
    df.to_csv(path, index=False)


def _assert_nonblank_png(path: Path) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 50 and arr.shape[1] > 50
    assert arr.std() > 0


def test_plot_miou(tmp_path):
    write_summary(tmp_path / "summary.csv")
    out = plots.plot_miou(tmp_path / "summary.csv", tmp_path / "f" / "miou.png")
    assert out == tmp_path / "f" / "miou.png"
    _assert_nonblank_png(out)


def test_plot_miou_single_round_and_all_nan(tmp_path):
    pd.DataFrame({"round": [0], "cam_miou": [np.nan]}).to_csv(tmp_path / "s.csv", index=False)
    _assert_nonblank_png(plots.plot_miou(tmp_path / "s.csv", tmp_path / "m.png"))


def test_plot_cam_sweep(tmp_path):
    write_cam_eval(tmp_path / "r0.csv")
    write_cam_eval(tmp_path / "r1.csv", shift=0.05)
    out = plots.plot_cam_sweep({"round 0": tmp_path / "r0.csv", "round 1": tmp_path / "r1.csv"}, tmp_path / "s.png")
    _assert_nonblank_png(out)
    with pytest.raises(ValueError, match="no cam_eval"):
        plots.plot_cam_sweep({}, tmp_path / "x.png")


def test_plot_cam_sweep_names_file_with_missing_column(tmp_path):
    pd.DataFrame({"threshold": [0.1], "miou": [0.3]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: missing column 'is_eval_threshold'"):
        plots.plot_cam_sweep({"round 0": tmp_path / "bad.csv"}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_confounder(tmp_path):
    write_confounder(tmp_path / "c.h5")
    _assert_nonblank_png(plots.plot_confounder(tmp_path / "c.h5", tmp_path / "c.png"))
    with pytest.raises(ValueError, match="nothing.h5"):
        plots.plot_confounder(tmp_path / "nothing.h5", tmp_path / "c2.png")


def test_plot_loss_curves(tmp_path):
    logs = {
        "cls": {0: tmp_path / "r0/cls.csv", 1: tmp_path / "r1/cls.csv"},
        "seg": {0: tmp_path / "r0/seg.csv"},
    }
    write_train_log(logs["cls"][0], "iter")
    write_train_log(logs["cls"][1], "iter")
    write_train_log(logs["seg"][0], "iteration")
    _assert_nonblank_png(plots.plot_loss_curves(logs, tmp_path / "loss.png"))


def test_per_class_iou_table_hand_computed(tmp_path):
    write_cam_eval(tmp_path / "r0" / "cam_eval.csv")
    write_mask_eval(tmp_path / "r0" / "pm.csv", "pseudo_mask", [0.9, 0.5, 0.25])
    write_mask_eval(tmp_path / "r1" / "pm.csv", "pseudo_mask", [0.8, 0.6, 0.4])
    evals = [
        (0, "cam", tmp_path / "r0" / "cam_eval.csv"),
        (0, "pseudo_mask", tmp_path / "r0" / "pm.csv"),
        (1, "pseudo_mask", tmp_path / "r1" / "pm.csv"),
    ]
    table = plots.write_per_class_iou(evals, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back.columns) == ["stage", "class", "round 0", "round 1"]
    pm = table[table["stage"] == "pseudo_mask"].set_index("class")
    assert list(pm.index) == ["background", "cat", "dog", "mean"]
    assert pm.loc["dog", "round 0"] == 25.0 and pm.loc["dog", "round 1"] == 40.0
    assert pm.loc["mean", "round 1"] == 60.0
    cam = table[table["stage"] == "cam"].set_index("class")
    assert cam.loc["mean", "round 0"] == 40.0  # miou at the eval threshold 0.15
    assert cam.loc["cat", "round 0"] == 41.0
    assert np.isnan(cam.loc["cat", "round 1"])


def test_plot_confounding_and_without_the_columns(tmp_path):
    pd.DataFrame(
        {"round": [0, 1], "cf_cam_pair": [0.4, 0.3], "cf_cam_bg": [0.2, 0.25], "cf_pseudo_mask_pair": [0.3, np.nan]}
    ).to_csv(tmp_path / "s.csv", index=False)
    _assert_nonblank_png(plots.plot_confounding(tmp_path / "s.csv", tmp_path / "c.png"))
    pd.DataFrame({"round": [0]}).to_csv(tmp_path / "n.csv", index=False)  # e.g. no GT: "not measured"
    _assert_nonblank_png(plots.plot_confounding(tmp_path / "n.csv", tmp_path / "n.png"))
