"""Segmentation step: loss, poly LR, training on a toy, prediction (scales/flip), inference, CRF."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from resume_helpers import assert_same_weights, stop_then_resume

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import normalize
from conta_core.infra.fileio import load_label_png, load_torch, save_label_png, save_torch
from conta_core.models.deeplab import build_deeplab, checkpoint_dict, load_deeplab
from conta_core.steps.segment import (
    infer_segmentation,
    msc_loss,
    poly_lr,
    predict,
    predict_labels,
    train_segmentation,
)

torch.set_num_threads(1)
CPU = torch.device("cpu")
CLASS_NAMES = ["background", "square"]
SQUARE_RGB = (220, 40, 40)


def seg_cfg(**over) -> dict:
    cfg = {
        "backbone": "resnet18",
        "pretrained": None,
        "output_stride": 8,
        "aspp_rates": [2, 4],
        "freeze_bn": False,
        "iterations": 10,
        "batch_size": 2,
        "lr": 0.01,
        "lr_aspp_mult": 10,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
        "poly_power": 0.9,
        "crop_size": 40,
        "scale_range": [1.0, 1.0],
        "msc_scales": [1.0, 0.75, 0.5],
        "infer": {"scales": [1.0], "flip": True, "crf": False},
        "crf": {
            "iterations": 2,
            "gaussian_sxy": 1,
            "gaussian_compat": 3,
            "bilateral_sxy": 67,
            "bilateral_srgb": 3,
            "bilateral_compat": 4,
        },
    }
    cfg.update(over)
    return cfg


def make_toy(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> tuple[Manifest, dict[str, Path]]:
    """Grey noisy images with one red square each; perfect labels (0 bg, 1 square)."""
    rng = np.random.default_rng(seed)
    images, labels, label_files = {}, {}, {}
    for n, (h, w) in enumerate(sizes):
        image_id = f"img{n:02d}"
        img = rng.integers(90, 130, size=(h, w, 3)).astype(np.uint8)
        lab = np.zeros((h, w), np.uint8)
        side = int(rng.integers(min(h, w) // 3, min(h, w) // 2 + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img[y : y + side, x : x + side] = SQUARE_RGB
        lab[y : y + side, x : x + side] = 1
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "img" / f"{image_id}.png")
        save_label_png(root / "mask" / f"{image_id}.png", lab)
        images[image_id] = f"img/{image_id}.png"
        labels[image_id] = [1]
        label_files[image_id] = root / "mask" / f"{image_id}.png"
    ids = sorted(images)
    manifest = Manifest("toy", root, CLASS_NAMES, {"train": ids, "val": ids}, labels, images)
    return manifest, label_files


def save_model(path: Path, cfg: dict, num_classes: int = 2, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = build_deeplab(cfg, num_classes)
    save_torch(path, checkpoint_dict(model, cfg, num_classes))


# --- loss and schedule -----------------------------------------------------------------


def test_msc_loss_hand_computed() -> None:
    k = 3
    labels = torch.tensor([[[0, 1, 2, 255], [1, 1, 255, 255], [2, 0, 0, 0], [1, 1, 1, 1]]])
    outputs = [torch.zeros(1, k, 4, 4), torch.zeros(1, k, 2, 2), torch.zeros(1, k, 4, 4)]
    # uniform logits: CE = log(K) for every non-ignored pixel of every output
    assert msc_loss(outputs, labels).item() == pytest.approx(3 * math.log(k))
    # 2x4 labels -> 1x2 logits: nearest at pixel centres samples row 1, columns 1 and 3
    lab = torch.tensor([[[2, 2, 2, 2], [2, 1, 2, 255]]])  # -> target [[1, 255]]
    logits = torch.zeros(1, k, 1, 2)
    logits[0, 1, 0, 0] = 10.0
    assert msc_loss([logits], lab).item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), rel=1e-3)
    assert msc_loss([torch.zeros(1, k, 2, 2)], torch.full((1, 4, 4), 255)).item() == 0.0


def test_poly_lr() -> None:
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 99, 100, 1.0) == pytest.approx(1e-4)


# --- training --------------------------------------------------------------------------


def test_training_lowers_loss_deterministic(tmp_path) -> None:
    manifest, label_files = make_toy(tmp_path / "data", [(33, 33)] * 4)
    # random-init backbone: small LR and no ASPP multiplier keep the toy stable
    cfg = seg_cfg(iterations=8, batch_size=4, crop_size=33, lr=1e-3, lr_aspp_mult=1)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name / "seg" / "model.pth"
        train_segmentation(manifest, manifest.ids("train"), label_files, cfg, CPU, out, 0, tmp_path / name / "log.csv")
        runs.append((load_torch(out), pd.read_csv(tmp_path / name / "log.csv")))
    (ck_a, log_a), (ck_b, log_b) = runs
    assert list(log_a.columns) == ["iteration", "loss", "lr"]
    assert log_a["iteration"].tolist() == list(range(1, 9))
    assert log_a["lr"].iloc[0] == pytest.approx(1e-3) and log_a["lr"].is_monotonic_decreasing
    assert log_a["loss"].iloc[-3:].mean() < 0.75 * log_a["loss"].iloc[:3].mean()
    pd.testing.assert_frame_equal(log_a, log_b)
    assert ck_a["state_dict"].keys() == ck_b["state_dict"].keys()
    for k, v in ck_a["state_dict"].items():
        torch.testing.assert_close(v, ck_b["state_dict"][k], rtol=0, atol=0)
    assert ck_a["config"] == cfg and ck_a["num_classes"] == 2 and ck_a["iteration"] == 8
    assert not (tmp_path / "a" / "seg" / "model.pth.resume").exists()  # removed after the final weights
    model = load_deeplab(tmp_path / "a" / "seg" / "model.pth", CPU)
    assert not model.training


def test_training_loader_workers_deterministic_and_equal_to_main_process(tmp_path) -> None:
    """Two runs with 2 DataLoader workers and one seed give identical weights, equal to 0 workers
    (items draw their augmentation from their own (seed, epoch, index) generator)."""
    manifest, label_files = make_toy(tmp_path / "data", [(33, 33)] * 4)
    cfg = seg_cfg(iterations=4, batch_size=2, crop_size=33, scale_range=[0.8, 1.2], lr=1e-3, lr_aspp_mult=1)
    states = {}
    for name, workers in (("w2a", 2), ("w2b", 2), ("w0", 0)):
        out = tmp_path / name / "model.pth"
        train_segmentation(manifest, manifest.ids("train"), label_files, cfg, CPU, out, 1, None, num_workers=workers)
        states[name] = load_torch(out)["state_dict"]
    for other in ("w2b", "w0"):
        for k, v in states["w2a"].items():
            assert torch.equal(v, states[other][k]), (other, k)


def test_training_input_errors(tmp_path) -> None:
    manifest, label_files = make_toy(tmp_path / "data", [(33, 33)] * 2)
    ids = manifest.ids("train")
    out = tmp_path / "model.pth"
    with pytest.raises(ValueError, match="img01"):
        train_segmentation(manifest, ids, {"img00": label_files["img00"]}, seg_cfg(), CPU, out, 0, None)
    with pytest.raises(ValueError, match="segmentation.batch_size"):
        train_segmentation(manifest, ids, label_files, seg_cfg(batch_size=3), CPU, out, 0, None)
    cfg = seg_cfg()
    del cfg["poly_power"]
    with pytest.raises(ValueError, match="segmentation.poly_power"):
        train_segmentation(manifest, ids, label_files, cfg, CPU, out, 0, None)
    assert not out.exists()


# --- prediction ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return build_deeplab(seg_cfg(), 3).eval()


@pytest.mark.parametrize("hw", [(33, 37), (65, 41), (20, 9)])
def test_predict_odd_sizes(model, hw) -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(*hw, 3)).astype(np.uint8)
    probs = predict(model, img, [1.0, 0.75], True, CPU)
    assert probs.shape == (3, *hw) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    labels = predict_labels(model, img, [1.0], False, CPU)
    assert labels.shape == hw and labels.dtype == np.uint8 and labels.max() <= 2


def test_predict_flip_symmetric_input_gives_symmetric_output(model) -> None:
    left = np.random.default_rng(1).integers(0, 256, size=(35, 19, 3)).astype(np.uint8)
    img = np.concatenate([left, left[:, -2::-1]], axis=1)  # 35 x 37, mirror-symmetric
    assert np.array_equal(img, img[:, ::-1])
    probs = predict(model, img, [1.0, 0.5], True, CPU)
    np.testing.assert_allclose(probs, probs[:, :, ::-1], atol=1e-6)
    no_flip = predict(model, img, [1.0, 0.5], False, CPU)
    assert not np.allclose(no_flip, no_flip[:, :, ::-1], atol=1e-4)  # the network itself is not symmetric


def test_predict_fusion_is_softmax_of_mean_logits(model) -> None:
    img = np.random.default_rng(2).integers(0, 256, size=(33, 41, 3)).astype(np.uint8)
    x = torch.from_numpy(normalize(img))[None]
    with torch.inference_mode():
        up = lambda t: F.interpolate(model(t), size=(33, 41), mode="bilinear", align_corners=False)  # noqa: E731
        mean = (up(x) + up(x.flip(-1)).flip(-1)) / 2
        expected = torch.softmax(mean[0], dim=0).numpy()
    np.testing.assert_allclose(predict(model, img, [1.0], True, CPU), expected, atol=1e-6)


# --- inference -------------------------------------------------------------------------


def test_infer_writes_palette_pngs_and_skips_existing(tmp_path) -> None:
    manifest, _ = make_toy(tmp_path / "data", [(33, 41), (40, 40), (27, 35)])
    cfg = seg_cfg()
    save_model(tmp_path / "model.pth", cfg)
    out_dir = tmp_path / "pred"
    sentinel = np.full((27, 35), 1, np.uint8)
    sentinel[0, 0] = 0
    save_label_png(out_dir / "img02.png", sentinel)
    before = (out_dir / "img02.png").stat().st_mtime_ns
    infer_segmentation(manifest, manifest.ids("val"), tmp_path / "model.pth", out_dir, cfg, CPU)
    for image_id, hw in (("img00", (33, 41)), ("img01", (40, 40))):
        with Image.open(out_dir / f"{image_id}.png") as im:
            assert im.mode == "P"
        lab = load_label_png(out_dir / f"{image_id}.png")
        assert lab.shape == hw and lab.max() <= manifest.num_fg
    assert (out_dir / "img02.png").stat().st_mtime_ns == before
    np.testing.assert_array_equal(load_label_png(out_dir / "img02.png"), sentinel)
    # everything done: returns without even opening the model
    infer_segmentation(manifest, manifest.ids("val"), tmp_path / "missing.pth", out_dir, cfg, CPU)
    assert sorted(p.name for p in out_dir.iterdir()) == ["img00.png", "img01.png", "img02.png"]


def test_infer_rejects_model_of_other_class_count(tmp_path) -> None:
    manifest, _ = make_toy(tmp_path / "data", [(33, 33)])
    save_model(tmp_path / "model.pth", seg_cfg(), num_classes=5)
    with pytest.raises(ValueError, match="5 classes"):
        infer_segmentation(manifest, ["img00"], tmp_path / "model.pth", tmp_path / "pred", seg_cfg(), CPU)


def test_crf_gets_raw_rgb_image(monkeypatch, model) -> None:
    """Wiring check with a recording fake: the CRF sees the raw uint8 RGB image and the probabilities."""
    import sys
    import types

    seen = {}

    def fake_crf(img, probs, params):
        seen.update(img=img, probs=probs, params=params)
        out = np.zeros_like(probs)
        out[2] = 1.0
        return out

    monkeypatch.setitem(sys.modules, "conta_core.steps.crf", types.SimpleNamespace(crf_inference_prob=fake_crf))
    img = np.random.default_rng(4).integers(0, 256, size=(25, 31, 3)).astype(np.uint8)
    params = seg_cfg()["crf"]
    labels = predict_labels(model, img, [1.0], False, CPU, crf_params=params)
    assert np.all(labels == 2)
    assert seen["img"].dtype == np.uint8 and np.array_equal(seen["img"], img)
    np.testing.assert_allclose(seen["probs"], predict(model, img, [1.0], False, CPU))
    assert seen["params"] == params


def _real_crf_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pydensecrf") is not None


@pytest.mark.skipif(
    not _real_crf_available(), reason="conta_core.steps.crf.crf_inference_prob or pydensecrf not available yet"
)
def test_infer_with_real_crf(tmp_path) -> None:
    manifest, _ = make_toy(tmp_path / "data", [(33, 37), (24, 29)])
    cfg = seg_cfg(infer={"scales": [1.0], "flip": False, "crf": True})
    save_model(tmp_path / "model.pth", cfg)
    infer_segmentation(manifest, manifest.ids("val"), tmp_path / "model.pth", tmp_path / "pred", cfg, CPU)
    for image_id, hw in (("img00", (33, 37)), ("img01", (24, 29))):
        lab = load_label_png(tmp_path / "pred" / f"{image_id}.png")
        assert lab.shape == hw and lab.max() <= 1


# --- workflow scripts ------------------------------------------------------------------


def _load_script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "workflow_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workflow_scripts_train_and_infer(tmp_path) -> None:
    import json

    manifest, label_files = make_toy(tmp_path / "data", [(33, 33), (35, 33), (33, 37)])
    manifest.save(tmp_path / "manifest.json")
    shard_dirs = [tmp_path / "pm" / "0", tmp_path / "pm" / "1"]  # pseudo-masks split over two shards
    for n, image_id in enumerate(manifest.ids("train")):
        shard_dirs[n % 2].mkdir(parents=True, exist_ok=True)
        (shard_dirs[n % 2] / f"{image_id}.png").write_bytes(label_files[image_id].read_bytes())
    cfg = json.dumps(seg_cfg(iterations=2, batch_size=2, crop_size=33))
    model = tmp_path / "seg" / "model.pth"
    _load_script("train_seg").main(
        ["--cfg", cfg, "--manifest", str(tmp_path / "manifest.json"), "--split", "train",
         "--label-dir", str(shard_dirs[0]), "--label-dir", str(shard_dirs[1]),
         "--out", str(model), "--log", str(tmp_path / "seg" / "log.csv"), "--device", "cpu", "--seed", "3"]
    )  # fmt: skip
    assert model.is_file() and len(pd.read_csv(tmp_path / "seg" / "log.csv")) == 2
    out = tmp_path / "pred" / "1"
    _load_script("infer_seg").main(
        ["--cfg", cfg, "--manifest", str(tmp_path / "manifest.json"), "--split", "val",
         "--shard", "1", "--num-shards", "2", "--model", str(model), "--out-dir", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["img01.png"]  # shard 1 of sorted ids [img00, img01, img02]


def test_training_stopped_by_signal_resumes_to_identical_weights(tmp_path, monkeypatch) -> None:
    """4 images, batch 2, 5 iterations (the last epoch cut short): SIGUSR1 after iteration 3;
    the rerun ends with the weights and log of an uninterrupted run."""
    manifest, label_files = make_toy(tmp_path / "data", [(33, 33)] * 4)
    cfg = seg_cfg(iterations=5, batch_size=2, crop_size=33, lr=1e-3, lr_aspp_mult=1)

    def train(name):
        out = tmp_path / name / "seg" / "model.pth"
        train_segmentation(manifest, manifest.ids("train"), label_files, cfg, CPU, out, 0, out.with_name("log.csv"))
        return out

    ref = train("ref")
    out = tmp_path / "cut" / "seg" / "model.pth"
    stop_then_resume(monkeypatch, lambda: train("cut"), out, 3)
    assert_same_weights(load_torch(ref)["state_dict"], load_torch(out)["state_dict"])
    pd.testing.assert_frame_equal(pd.read_csv(ref.with_name("log.csv")), pd.read_csv(out.with_name("log.csv")))
