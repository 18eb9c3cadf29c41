"""conta_core.steps.ir_label: IRNet cam_to_ir_label logic, resume and worker independence."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import load_label_png, save_cam, save_label_png
from conta_core.steps.ir_label import cam_to_ir_label, make_ir_labels

torch.set_num_threads(1)

CRF = dict(
    iterations=10,
    gt_prob=0.7,
    gaussian_sxy=3,
    gaussian_compat=3,
    bilateral_sxy=50,
    bilateral_srgb=5,
    bilateral_compat=10,
)
NO_CRF = {**CRF, "iterations": 0}  # zero mean-field steps: argmax of the unary = input labels
CFG = {"fg_threshold": 0.30, "bg_threshold": 0.05, "crf": CRF}
KEYS = np.array([1, 4, 6])  # class ids 2, 5, 7


def hand_cam() -> tuple[np.ndarray, np.ndarray]:
    """A 4x6 CAM over KEYS and the IR label it must give.

    columns 0-1: key 1 at 0.8 -> class 2; column 2: key 4 at 0.2 (between thresholds) -> 255;
    column 3: all CAMs 0.01 -> 0; column 4: key 6 at 0.9 beats key 1 at 0.5 -> class 7;
    column 5: key 1 exactly at fg_threshold (tie -> background plane), above bg -> 255.
    """
    cam = np.zeros((3, 4, 6), dtype=np.float32)
    cam[:, :, 3] = 0.01
    cam[0, :, 0:2] = 0.8
    cam[1, :, 2] = 0.2
    cam[2, :, 4], cam[0, :, 4] = 0.9, 0.5
    cam[0, :, 5] = 0.30
    expected = np.tile(np.array([2, 2, 255, 0, 7, 255], dtype=np.uint8), (4, 1))
    return cam, expected


def test_cam_to_ir_label_logic():
    cam, expected = hand_cam()
    img = np.zeros((4, 6, 3), dtype=np.uint8)
    out = cam_to_ir_label(img, KEYS, cam, 0.30, 0.05, NO_CRF)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_cam_to_ir_label_with_crf_on_aligned_regions():
    """Regions that follow image edges survive the real CRF unchanged."""
    img = np.zeros((24, 24, 3), dtype=np.uint8)
    img[:, 8:16] = (200, 40, 40)
    img[:, 16:] = (40, 200, 40)
    cam = np.zeros((2, 24, 24), dtype=np.float32)
    cam[0, :, 8:16] = 0.9  # key 0 -> class 1, confident
    cam[1, :, 16:] = 0.15  # key 3 -> class 4, only above bg threshold -> uncertain
    out = cam_to_ir_label(img, np.array([0, 3]), cam, 0.30, 0.05, CRF)
    expected = np.zeros((24, 24), dtype=np.uint8)
    expected[:, 8:16] = 1
    expected[:, 16:] = 255
    np.testing.assert_array_equal(out, expected)


def test_no_keys_gives_background():
    out = cam_to_ir_label(np.zeros((4, 4, 3), np.uint8), np.zeros(0), np.zeros((0, 4, 4), np.float32), 0.3, 0.05, CRF)
    assert (out == 0).all()


def test_shape_mismatch_raises():
    cam, _ = hand_cam()
    with pytest.raises(ValueError, match="K = len"):
        cam_to_ir_label(np.zeros((4, 6, 3), np.uint8), KEYS[:2], cam, 0.3, 0.05, CRF)
    with pytest.raises(ValueError, match="image size"):
        cam_to_ir_label(np.zeros((5, 6, 3), np.uint8), KEYS, cam, 0.3, 0.05, CRF)


def tiny_dataset(root: Path, n: int = 4, size: int = 20) -> tuple[Manifest, dict[str, Path]]:
    """n random images with 2-class CAMs (smooth blobs) -> (manifest, id -> CAM file)."""
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(n)]
    images, cams = {}, {}
    yy, xx = np.mgrid[0:size, 0:size]
    for i in ids:
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
        images[i] = f"{i}.png"
        cy, cx = rng.uniform(0, size, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 4) ** 2)).astype(np.float32)
        high_res = np.stack([blob, blob[::-1, ::-1].copy()])
        cams[i] = root / "cam" / f"{i}.npz"
        save_cam(cams[i], np.array([0, 2]), high_res[:, ::4, ::4], high_res)
    manifest = Manifest(
        name="tiny",
        root=root,
        class_names=["background", "a", "b", "c"],
        splits={"train": ids},
        labels={i: [1, 3] for i in ids},
        images=images,
    )
    return manifest, cams


def test_make_ir_labels_workers_identical_and_resume(tmp_path):
    manifest, cams = tiny_dataset(tmp_path)
    ids = manifest.ids("train")
    make_ir_labels(manifest, ids, cams, tmp_path / "w1", CFG, workers=1)
    make_ir_labels(manifest, ids, cams, tmp_path / "w2", CFG, workers=2)
    for i in ids:
        a = load_label_png(tmp_path / "w1" / f"{i}.png")
        np.testing.assert_array_equal(a, load_label_png(tmp_path / "w2" / f"{i}.png"))
        assert set(np.unique(a)) <= {0, 1, 3, 255}  # keys 0, 2 -> classes 1, 3

    sentinel = np.full((20, 20), 3, dtype=np.uint8)  # an "existing output": must not be recomputed
    save_label_png(tmp_path / "w1" / "img0.png", sentinel)
    (tmp_path / "w1" / "img1.png").unlink()
    make_ir_labels(manifest, ids, cams, tmp_path / "w1", CFG, workers=1)
    np.testing.assert_array_equal(load_label_png(tmp_path / "w1" / "img0.png"), sentinel)
    np.testing.assert_array_equal(
        load_label_png(tmp_path / "w1" / "img1.png"), load_label_png(tmp_path / "w2" / "img1.png")
    )
    assert not [p for p in (tmp_path / "w1").iterdir() if p.name.startswith(".")]  # no temp files left


def test_make_ir_labels_bad_input(tmp_path):
    manifest, cams = tiny_dataset(tmp_path, n=2)
    with pytest.raises(ValueError, match="img1"):
        make_ir_labels(manifest, ["img0", "img1"], {"img0": cams["img0"]}, tmp_path / "out", CFG, 1)
    with pytest.raises(ValueError, match="bg_threshold"):
        make_ir_labels(manifest, ["img0"], cams, tmp_path / "out", {"fg_threshold": 0.3, "crf": CRF}, 1)
