"""Tests of conta_core.steps.cam: multi-scale CAM inference, make_cams and the threshold sweep."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.evaluation.cam_eval import best_threshold, cam_label, eval_cam_sweep, eval_cam_to_csv, sweep_thresholds
from conta_core.infra.fileio import load_cam, save_cam, save_label_png, save_torch
from conta_core.models.classifier import build_classifier
from conta_core.steps.cam import compute_cam, make_cams

torch.set_num_threads(1)

CLS_CFG = {"backbone": "resnet18", "pretrained": None, "freeze_bn": False, "frozen_stages": 0}
SCALES = [1.0, 0.5]


class PoolCAM(nn.Module):
    """A flip-equivariant stand-in: class k map = ReLU(image channel k) average-pooled by 16."""

    uses_context = False

    def cam_maps(self, x, xm=None):
        return F.avg_pool2d(F.relu(x), 16, ceil_mode=True)


class RecordingContextCAM(PoolCAM):
    uses_context = True

    def encode_xm(self, label):
        return (label[:4, :4] > 0).astype(np.float32)

    def cam_maps(self, x, xm=None):
        self.xm = xm
        return super().cam_maps(x)


def _image(h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _plain_net():
    torch.manual_seed(0)
    return build_classifier(CLS_CFG, None, 3).eval()


def test_shapes_and_max_normalised():
    img = _image(30, 22)
    cam, high = compute_cam(PoolCAM(), img, np.array([0, 1, 2]), SCALES, True, "cpu")
    assert cam.shape == (3, 8, 6) and high.shape == (3, 30, 22)
    assert cam.dtype == np.float32 and high.dtype == np.float32
    for maps in (cam, high):
        assert maps.min() >= 0
        np.testing.assert_allclose(maps.reshape(3, -1).max(1), 1.0, atol=1e-4)
        assert (maps < 1).all()


def test_real_classifier_shapes():
    cam, high = compute_cam(_plain_net(), _image(36, 28), np.array([1]), SCALES, True, "cpu")
    assert cam.shape == (1, 9, 7) and high.shape == (1, 36, 28)
    cam, high = compute_cam(_plain_net(), _image(36, 28), np.array([], np.int64), SCALES, True, "cpu")
    assert cam.shape == (0, 9, 7) and high.shape == (0, 36, 28)


def test_keys_selection():
    img = _image()
    full, full_hr = compute_cam(PoolCAM(), img, np.array([0, 1, 2]), SCALES, True, "cpu")
    sub, sub_hr = compute_cam(PoolCAM(), img, np.array([2, 0]), SCALES, True, "cpu")
    np.testing.assert_allclose(sub, full[[2, 0]], rtol=1e-6)
    np.testing.assert_allclose(sub_hr, full_hr[[2, 0]], rtol=1e-6)


def test_symmetric_model_gives_symmetric_cam():
    half = _image(32, 16)
    img = np.concatenate([half, half[:, ::-1]], axis=1)  # mirror-symmetric image
    cam, high = compute_cam(PoolCAM(), img, np.array([0, 1]), [1.0], False, "cpu")
    np.testing.assert_allclose(cam, cam[:, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(high, high[:, :, ::-1], atol=1e-6)


def test_flip_consistency_of_any_model():
    net, img = _plain_net(), _image(32, 48)
    cam, high = compute_cam(net, img, np.array([0, 1, 2]), SCALES, True, "cpu")
    cam_f, high_f = compute_cam(net, img[:, ::-1].copy(), np.array([0, 1, 2]), SCALES, True, "cpu")
    np.testing.assert_allclose(cam_f, cam[:, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(high_f, high[:, :, ::-1], atol=1e-5)


def test_xm_is_flipped_with_the_image():
    model = RecordingContextCAM()
    xm = np.zeros((32, 32), np.uint8)
    xm[:, 0] = 1
    compute_cam(model, _image(), np.array([0]), [1.0], True, "cpu", xm=xm)
    assert model.xm.shape == (2, 4, 4)
    assert model.xm[0, :, 0].all() and not model.xm[1].any()  # flipped copy: column 0 moved to the right
    with pytest.raises(ValueError, match="xm"):
        compute_cam(model, _image(), np.array([0]), [1.0], True, "cpu")


def _manifest(tmp_path, ids, shape=(20, 24)):
    rng = np.random.default_rng(0)
    images, masks = {}, {}
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images[i] = f"{i}.png"
    return Manifest(
        "toy",
        tmp_path,
        ["background", "a", "b", "c"],
        {"train": list(ids), "train_eval": list(ids)},
        {ids[0]: [1, 3], ids[1]: [2]},
        images,
        masks,
    )


def test_make_cams_writes_and_resumes(tmp_path):
    m = _manifest(tmp_path, ["x", "y"])
    model_path = tmp_path / "model.pth"
    net = _plain_net()
    save_torch(
        model_path, {"state_dict": net.state_dict(), "config": {"classifier": CLS_CFG, "context": None, "num_fg": 3}}
    )
    out = tmp_path / "cam" / "0"
    make_cams(m, ["x", "y"], model_path, out, {"scales": SCALES, "flip": True}, "cpu")
    d = load_cam(out / "x.npz")
    np.testing.assert_array_equal(d["keys"], [0, 2])
    assert d["cam"].shape == (2, 5, 6) and d["high_res"].shape == (2, 20, 24)
    mtime = (out / "x.npz").stat().st_mtime_ns
    make_cams(m, ["x", "y"], model_path, out, {"scales": SCALES, "flip": True}, "cpu")
    assert (out / "x.npz").stat().st_mtime_ns == mtime


def test_cam_label_hand_case():
    high = np.array([[[0.1, 0.5, 0.9]], [[0.2, 0.6, 0.3]]], np.float32)  # K=2, H=1, W=3
    np.testing.assert_array_equal(cam_label(high, np.array([0, 4]), 0.15), [[5, 5, 1]])
    np.testing.assert_array_equal(cam_label(high, np.array([0, 4]), 0.55), [[0, 5, 1]])
    np.testing.assert_array_equal(cam_label(high, np.array([0, 4]), 0.6), [[0, 0, 1]])  # tie -> background


def _eval_fixture(tmp_path):
    ids = ["x", "y"]
    m = _manifest(tmp_path, ids, shape=(6, 8))
    rng = np.random.default_rng(3)
    cam_dir = tmp_path / "cam" / "0"
    for i in ids:
        gt = rng.integers(0, 4, (6, 8)).astype(np.uint8)
        gt[0, 0] = 255
        save_label_png(tmp_path / f"{i}_gt.png", gt)
        m.masks[i] = f"{i}_gt.png"
        keys = np.array(m.labels[i]) - 1
        high = rng.random((len(keys), 6, 8)).astype(np.float32)
        save_cam(cam_dir / f"{i}.npz", keys, np.zeros((len(keys), 2, 2), np.float32), high)
    return m, ids, cam_dir


def _direct_miou(m, ids, cam_dir, t):
    conf = np.zeros((4, 4), np.int64)
    for i in ids:
        d = load_cam(cam_dir / f"{i}.npz")
        pred = cam_label(d["high_res"], d["keys"], t)
        gt = np.array(Image.open(m.mask_file(i)))
        ok = gt != 255
        np.add.at(conf, (gt[ok], pred[ok]), 1)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return np.nanmean(iou), iou


def test_sweep_equals_direct_metrics(tmp_path):
    m, ids, cam_dir = _eval_fixture(tmp_path)
    thresholds = [0.1, 0.3, 0.5, 0.7]
    df = eval_cam_sweep(m, ids, {i: cam_dir / f"{i}.npz" for i in ids}, thresholds, 4)
    assert list(df.columns) == ["threshold", "miou", "background", "a", "b", "c"]
    for t, row in zip(thresholds, df.itertuples()):
        miou, iou = _direct_miou(m, ids, cam_dir, t)
        assert row.threshold == t
        np.testing.assert_allclose(row.miou, miou)
        np.testing.assert_allclose([row.background, row.a, row.b, row.c], iou)
    assert best_threshold(df) == df.loc[df["miou"].idxmax(), "threshold"]


def test_eval_cam_to_csv_flags(tmp_path):
    m, ids, cam_dir = _eval_fixture(tmp_path)
    cfg = {"sweep": [0.1, 0.5, 0.2], "eval_threshold": 0.15}
    assert sweep_thresholds(cfg) == [0.1, 0.15, 0.3, 0.5]
    out = tmp_path / "cam_eval.csv"
    df = eval_cam_to_csv(m, "train_eval", [cam_dir], cfg, out)
    back = pd.read_csv(out)
    assert list(back["threshold"]) == [0.1, 0.15, 0.3, 0.5]
    assert back["is_eval_threshold"].tolist() == [False, True, False, False]
    assert back["is_best"].sum() == 1
    assert back.loc[back["is_best"], "miou"].iloc[0] == pytest.approx(df["miou"].max())


def test_missing_cam_names_the_id(tmp_path):
    m, ids, cam_dir = _eval_fixture(tmp_path)
    (cam_dir / "y.npz").unlink()
    with pytest.raises(ValueError, match="'y'"):
        eval_cam_to_csv(
            m, "train_eval", [cam_dir], {"sweep": [0.1, 0.2, 0.1], "eval_threshold": 0.15}, tmp_path / "o.csv"
        )
