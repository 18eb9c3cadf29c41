"""Tests for the boundary-guided random walk and pseudo-mask generation."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import load_label_png, save_cam, save_label_png, save_torch
from conta_core.models.irn import EdgeNet
from conta_core.steps.random_walk import (
    affinity_matrix_sparse,
    boundary_map,
    make_pseudo_masks,
    pseudo_mask_from_cam,
    random_walk,
    random_walk_dense,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent

RW_CFG = {"radius": 5, "beta": 10, "exp_times": 8, "bg_threshold": 0.25}


class ConstantEdge(nn.Module):
    """Stand-in edge net: constant logit at stride 4 (boundary = sigmoid(logit) everywhere)."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.full((b, 1, -(-h // 4), -(-w // 4)), self.logit)


def test_affinity_matrix_hand_values():
    b = torch.tensor([[0.1, 0.2, 0.6]])
    a = affinity_matrix_sparse(b, beta=2, radius=3).to_dense()
    expect = torch.tensor([[1.0, 0.64, 0.16], [0.64, 1.0, 0.16], [0.16, 0.16, 1.0]])
    assert torch.allclose(a, expect, atol=1e-6)


def test_affinity_matrix_symmetric_with_radius():
    g = torch.Generator().manual_seed(0)
    a = affinity_matrix_sparse(torch.rand(7, 9, generator=g), beta=3, radius=3).to_dense()
    assert torch.equal(a, a.T)
    assert torch.all(a.diagonal() == 1)
    # (0,0) and (0,3) are 3 apart: outside radius 3 (strict); (0,0) and (2,2): 8 < 9, inside
    assert a[0, 3] == 0 and a[0, 2 * 9 + 2] > 0


def test_sparse_random_walk_matches_dense():
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(12, 12, generator=g) * 0.6
    cams = torch.rand(3, 12, 12, generator=g)
    sparse = random_walk(cams, boundary, beta=10, exp_times=8, radius=5)
    dense = random_walk_dense(cams, boundary, beta=10, exp_times=8, radius=5)
    assert sparse.shape == (3, 12, 12) and sparse.dtype == torch.float32
    # float32: 256 sparse steps vs 8 dense squarings differ by rounding only (~2e-4 relative)
    torch.testing.assert_close(sparse, dense, rtol=5e-4, atol=1e-6)
    # float64 shows the two computations are the same maths
    s64 = random_walk(cams, boundary, beta=10, exp_times=8, radius=5, dtype=torch.float64)
    d64 = random_walk_dense(cams, boundary, beta=10, exp_times=8, radius=5, dtype=torch.float64)
    torch.testing.assert_close(s64, d64, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sparse, s64.float(), rtol=5e-4, atol=1e-6)
    few = random_walk(cams, boundary, beta=4, exp_times=2, radius=3)
    torch.testing.assert_close(few, random_walk_dense(cams, boundary, 4, 2, 3), rtol=1e-4, atol=1e-6)


def test_random_walk_respects_a_boundary_wall():
    boundary = torch.zeros(12, 12)
    boundary[:, 6] = 1.0  # a vertical wall: left = columns 0..5, right = 7..11
    cams = torch.zeros(2, 12, 12)
    cams[0, 5, 1] = 1.0  # class A seed on the left
    cams[1, 5, 10] = 1.0  # class B seed on the right
    rw = random_walk(cams, boundary, beta=10, exp_times=8, radius=5)
    left, right = rw[:, :, :6], rw[:, :, 7:]
    assert torch.all(left[1] == 0) and torch.all(left[0] > 0)
    assert torch.all(right[0] == 0) and torch.all(right[1] > 0)
    assert torch.all(rw[:, :, 6] == 0)  # wall pixels: damped seeds, only self-affinity
    winner = rw.argmax(0)
    assert torch.all(winner[:, :6] == 0) and torch.all(winner[:, 7:] == 1)


def test_boundary_map_shape_and_range():
    torch.manual_seed(0)
    img = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    b = boundary_map(EdgeNet("resnet18"), img, torch.device("cpu"))
    assert b.shape == (10, 13) and b.dtype == np.float32
    assert np.all((b > 0) & (b < 1))
    b0 = boundary_map(ConstantEdge(0.0), img, torch.device("cpu"))
    assert np.allclose(b0, 0.5)


def test_pseudo_mask_from_cam_shape_dtype_values():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    cam = rng.random((2, 10, 13)).astype(np.float32)
    cam_dict = {"keys": np.array([1, 3]), "cam": cam, "high_res": np.zeros((2, 40, 52), np.float32)}
    mask = pseudo_mask_from_cam(img, cam_dict, EdgeNet("resnet18"), RW_CFG, torch.device("cpu"))
    assert mask.shape == (40, 52) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 2, 4}
    assert (mask > 0).any()  # the global max is 1 > bg_threshold somewhere
    empty = {"keys": np.zeros(0, np.int64), "cam": np.zeros((0, 10, 13), np.float32)}
    assert not pseudo_mask_from_cam(img, empty, EdgeNet("resnet18"), RW_CFG, torch.device("cpu")).any()
    with pytest.raises(ValueError, match="shape"):
        pseudo_mask_from_cam(img, {"keys": np.array([1]), "cam": cam}, EdgeNet("resnet18"), RW_CFG, torch.device("cpu"))


def test_pseudo_mask_postprocessing_hand_case():
    # A very high beta makes every off-diagonal affinity ~0: T ~ identity, rw = cam * (1 - 0.5).
    # Left half: class key 2 scores 1 -> 0.5 -> /max = 1 > 0.25; right half: 0.1 -> 0.2 < 0.25.
    img = np.zeros((16, 24, 3), dtype=np.uint8)
    cam = np.full((1, 4, 6), 0.1, dtype=np.float32)
    cam[0, :, :3] = 1.0
    cfg = dict(RW_CFG, beta=200, exp_times=0)
    mask = pseudo_mask_from_cam(img, {"keys": np.array([2]), "cam": cam}, ConstantEdge(0.0), cfg, torch.device("cpu"))
    assert np.all(mask[:, :10] == 3) and np.all(mask[:, 14:] == 0)


def _rw_fixture(tmp_path):
    from PIL import Image

    ids = ["a", "b"]
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        cam = rng.random((1, 5, 7)).astype(np.float32)
        save_cam(tmp_path / "cam" / "0" / f"{i}.npz", np.array([0]), cam, np.zeros((1, 20, 28), np.float32))
    m = Manifest("toy", tmp_path, ["background", "x"], {"train": ids}, {i: [1] for i in ids},
                 {i: f"img/{i}.png" for i in ids})  # fmt: skip
    torch.manual_seed(0)
    net = EdgeNet("resnet18")
    ckpt = {"state_dict": net.state_dict(), "config": {"backbone": "resnet18", "freeze_bn": True}}
    save_torch(tmp_path / "irn.pth", ckpt)
    cams = {i: tmp_path / "cam" / "0" / f"{i}.npz" for i in ids}
    return m, ids, cams


def test_make_pseudo_masks_resume(tmp_path):
    m, ids, cams = _rw_fixture(tmp_path)
    out = tmp_path / "pm"
    make_pseudo_masks(m, ids, cams, tmp_path / "irn.pth", out, RW_CFG, torch.device("cpu"))
    first = {i: load_label_png(out / f"{i}.png") for i in ids}
    assert all(v.shape == (20, 28) and set(np.unique(v)) <= {0, 1} for v in first.values())
    save_label_png(out / "a.png", np.full((20, 28), 7, np.uint8))  # a sentinel: must survive
    (out / "b.png").unlink()
    make_pseudo_masks(m, ids, cams, tmp_path / "irn.pth", out, RW_CFG, torch.device("cpu"))
    assert np.all(load_label_png(out / "a.png") == 7)
    assert np.array_equal(load_label_png(out / "b.png"), first["b"])
    (out / "b.png").unlink()
    with pytest.raises(ValueError, match="'b'"):
        make_pseudo_masks(m, ids, {"a": cams["a"]}, tmp_path / "irn.pth", out, RW_CFG, torch.device("cpu"))


def test_random_walk_script(tmp_path, monkeypatch):
    m, ids, _ = _rw_fixture(tmp_path)
    m.save(tmp_path / "manifest.json")
    argv = ["random_walk.py", "--cfg", json.dumps(RW_CFG), "--manifest", str(tmp_path / "manifest.json"),
            "--shard", "1", "--num-shards", "2", "--cams-dir", str(tmp_path / "cam" / "0"),
            "--irn", str(tmp_path / "irn.pth"), "--out-dir", str(tmp_path / "pm" / "1"), "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "workflow_scripts" / "random_walk.py"), run_name="__main__")
    assert sorted(p.name for p in (tmp_path / "pm" / "1").iterdir()) == ["b.png"]
