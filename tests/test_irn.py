"""Tests for the IRNet boundary network, pair indexing, affinity labels, loss and training."""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from resume_helpers import assert_same_weights, stop_then_resume

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import load_torch, save_label_png, save_torch
from conta_core.models.backbone import ResNetBackbone
from conta_core.models.irn import EdgeNet, edge_net_from_checkpoint, load_backbone_from_classifier
from conta_core.steps.irn import (
    affinity_labels,
    affinity_loss,
    build_edge_net,
    build_pair_index,
    downsample_label,
    pair_affinity,
    pair_offsets,
    path_cells,
    poly_lr,
    train_irn,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def irn_cfg(**over) -> dict:
    cfg = {
        "backbone": "resnet18", "backbone_init": "random", "pretrained": None, "freeze_bn": True,
        "radius": 5, "epochs": 2, "batch_size": 2, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
        "poly_power": 0.9, "crop_size": 32, "scale_range": [0.9, 1.1], "loss_eps": 1e-5,
    }  # fmt: skip
    cfg.update(over)
    return cfg


def two_region_image(h: int, w: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark left part (bg, label 0), bright right part (class 1); IR label with a 255 seam."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, :split] = (30, 40, 50)
    img[:, split:] = (220, 200, 90)
    label = np.zeros((h, w), dtype=np.uint8)
    label[:, split:] = 1
    label[:, split - 1 : split + 1] = 255
    return img, label


def toy_dataset(tmp_path, n: int = 3, h: int = 40, w: int = 44) -> tuple[Manifest, dict]:
    from PIL import Image

    ids = [f"im{i}" for i in range(n)]
    images, labels, files = {}, {}, {}
    for k, i in enumerate(ids):
        img, label = two_region_image(h, w, 14 + 4 * k)
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "img" / f"{i}.png")
        images[i] = f"img/{i}.png"
        labels[i] = [1]
        files[i] = tmp_path / "ir" / f"{i}.png"
        save_label_png(files[i], label)
    m = Manifest("toy", tmp_path, ["background", "thing"], {"train": ids}, labels, images)
    return m, files


# ----------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("radius, count, disc", [(5, 34, 69), (10, 152, 305)])
def test_pair_offsets_count_and_half_plane(radius, count, disc):
    # Integer points strictly inside the disc: 69 (r=5), 305 (r=10); minus the centre, halved.
    off = pair_offsets(radius)
    assert off.shape == (count, 2)
    assert (disc - 1) // 2 == count
    s = {tuple(o) for o in off.tolist()}
    assert len(s) == count
    for dy, dx in s:
        assert dy > 0 or (dy == 0 and dx > 0)
        assert dy * dy + dx * dx < radius * radius
        assert (-dy, -dx) not in s


def test_path_cells_hand_cases():
    assert sorted(map(tuple, path_cells(0, 3).tolist())) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert sorted(map(tuple, path_cells(1, 1).tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(map(tuple, path_cells(2, 0).tolist())) == [(0, 0), (1, 0), (2, 0)]
    # (2, -1): distance of (0,-1) to the line is 2/sqrt(5) < 1, of (1,-1) 1/sqrt(5), ...
    assert sorted(map(tuple, path_cells(2, -1).tolist())) == [(0, -1), (0, 0), (1, -1), (1, 0), (2, -1), (2, 0)]


def test_pair_index_destinations_and_validity():
    idx = build_pair_index(3, 4, 2)  # offsets (0,1), (1,-1), (1,0), (1,1)
    assert idx.offsets.tolist() == [[0, 1], [1, -1], [1, 0], [1, 1]]
    # offset (0,1): valid unless x == 3 -> 3 rows * 3 = 9
    assert idx.valid.sum(1).tolist() == [9, 6, 8, 6]
    assert int(idx.dst[0, 5]) == 6 and int(idx.dst[2, 5]) == 9 and int(idx.dst[1, 5]) == 8


def test_pair_affinity_is_one_minus_path_max():
    b = torch.tensor([[[0.0, 0.5, 0.2, 0.1]]])  # 1 x 4 grid
    idx = build_pair_index(1, 4, 4)  # offsets (0,1), (0,2), (0,3)
    aff = pair_affinity(b, idx)[0]
    assert aff[2, 0].item() == pytest.approx(0.5)  # 0 -> 3 crosses 0.5
    assert aff[0, 2].item() == pytest.approx(0.8)  # 2 -> 3: max(0.2, 0.1)
    assert aff[1, 1].item() == pytest.approx(0.5)  # 1 -> 3: max(0.5, 0.2, 0.1)


def test_affinity_labels_hand_made_map():
    lab = torch.tensor([[[0, 0, 1], [0, 255, 1], [2, 2, 1]]])
    idx = build_pair_index(3, 3, 2)  # offsets (0,1), (1,-1), (1,0), (1,1)
    bg, fg, neg = affinity_labels(lab, idx)
    # right (0,1): (0,0)-(0,1) bg; (0,1)-(0,2) neg; row 1 touches 255; (2,0)-(2,1) fg; (2,1)-(2,2) neg
    assert bg[0, 0].nonzero().flatten().tolist() == [0]
    assert fg[0, 0].nonzero().flatten().tolist() == [6]
    assert neg[0, 0].nonzero().flatten().tolist() == [1, 7]
    # down (1,0): (0,0)-(1,0) bg; (0,2)-(1,2) fg; (1,2)-(2,2) fg; (1,0)-(2,0) neg (0 vs 2)
    assert bg[0, 2].nonzero().flatten().tolist() == [0]
    assert fg[0, 2].nonzero().flatten().tolist() == [2, 5]
    assert neg[0, 2].nonzero().flatten().tolist() == [3]
    # down-left (1,-1): (0,1)-(1,0) bg, (0,2)-(1,1) ignored, (1,1)-.. ignored, (1,2)-(2,1) neg
    assert bg[0, 1].nonzero().flatten().tolist() == [1]
    assert fg[0, 1].sum() == 0
    assert neg[0, 1].nonzero().flatten().tolist() == [5]
    # the classes never overlap and never use invalid pairs
    assert not (bg & fg).any() and not (bg & neg).any() and not (fg & neg).any()
    assert not ((bg | fg | neg) & ~idx.valid[None]).any()


def test_downsample_label_nearest_quarter():
    label = np.zeros((10, 13), dtype=np.uint8)
    label[:, 8:] = 3
    small = downsample_label(label)
    assert small.shape == (3, 4)
    assert set(np.unique(small)) <= {0, 3}


def test_affinity_loss_hand_computed():
    aff = torch.tensor([[[0.5, 0.25, 1.0, 0.1]]])
    bg = torch.tensor([[[True, False, False, False]]])
    fg = torch.tensor([[[False, True, False, False]]])
    neg = torch.tensor([[[False, False, False, True]]])
    loss, parts = affinity_loss(aff, bg, fg, neg, eps=0.0)
    expect = (math.log(2) / 2 + math.log(4) / 2 - math.log(0.9)) / 2
    assert loss.item() == pytest.approx(expect, rel=1e-6)
    assert parts["pos_bg"] == pytest.approx(math.log(2), rel=1e-6)
    # empty classes contribute 0; eps keeps -log finite at aff = 0 / 1
    none = torch.zeros_like(bg)
    loss0, _ = affinity_loss(torch.tensor([[[0.0, 1.0, 0.0, 0.0]]]), bg, none, ~bg, eps=1e-5)
    assert torch.isfinite(loss0)


# ----------------------------------------------------------------------------- network


def test_edge_net_shape_and_frozen_backbone():
    torch.manual_seed(0)
    net = EdgeNet("resnet18").train()
    out = net(torch.randn(2, 3, 40, 52))
    assert out.shape == (2, 1, 10, 13)
    assert not net.backbone.training
    assert all(not p.requires_grad for p in net.backbone.parameters())
    out.sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.trainable_parameters())


def test_load_backbone_from_classifier():
    torch.manual_seed(1)
    cls_backbone = ResNetBackbone("resnet18", output_stride=16)
    state = {f"backbone.{k}": v for k, v in cls_backbone.state_dict().items()}
    state["classifier.weight"] = torch.zeros(3, 512, 1, 1)
    net = EdgeNet("resnet18")
    load_backbone_from_classifier(net, {"state_dict": state, "config": {}})
    for k, v in cls_backbone.state_dict().items():
        assert torch.equal(net.backbone.state_dict()[k], v)
    with pytest.raises(ValueError, match="backbone"):
        load_backbone_from_classifier(EdgeNet("resnet34"), state)
    with pytest.raises(ValueError, match="backbone"):
        load_backbone_from_classifier(net, {"classifier.weight": state["classifier.weight"]})


def test_loss_decreases_on_toy_batch():
    img, label = two_region_image(32, 32, 16)
    from conta_core.data.transforms import normalize

    x = torch.from_numpy(normalize(img))[None]
    lab = torch.from_numpy(downsample_label(label).astype(np.int64))[None]
    net = build_edge_net(irn_cfg(), None, seed=0).train()
    idx = build_pair_index(8, 8, 5)
    opt = torch.optim.SGD(net.trainable_parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        loss, _ = affinity_loss(pair_affinity(torch.sigmoid(net(x))[:, 0], idx), *affinity_labels(lab, idx), eps=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_poly_lr():
    assert poly_lr(0.1, 0, 10, 0.9) == pytest.approx(0.1)
    assert poly_lr(0.1, 5, 10, 1.0) == pytest.approx(0.05)


# ----------------------------------------------------------------------------- training loop


def test_train_irn_checkpoint_log_and_determinism(tmp_path):
    m, files = toy_dataset(tmp_path)
    cfg = irn_cfg()
    ids = m.ids("train")
    out1, out2 = tmp_path / "a" / "model.pth", tmp_path / "b" / "model.pth"
    log = tmp_path / "a" / "log.csv"
    train_irn(m, ids, files, cfg, torch.device("cpu"), out1, None, seed=3, log_csv=log)
    train_irn(m, ids, files, cfg, torch.device("cpu"), out2, None, seed=3, log_csv=None)
    ck1, ck2 = load_torch(out1), load_torch(out2)
    assert ck1["config"] == cfg and ck1["iterations"] == 2  # 3 images, batch 2 -> 1 step/epoch
    for k in ck1["state_dict"]:
        assert torch.equal(ck1["state_dict"][k], ck2["state_dict"][k]), k
    df = pd.read_csv(log)
    assert list(df.columns[:4]) == ["epoch", "iter", "loss", "lr"]
    assert df["iter"].tolist() == [0, 1] and df["lr"].iloc[0] == pytest.approx(0.1)
    assert np.isfinite(df["loss"]).all()
    net = edge_net_from_checkpoint(out1, torch.device("cpu"))
    assert net(torch.zeros(1, 3, 16, 20)).shape == (1, 1, 4, 5)


def test_train_irn_errors(tmp_path):
    m, files = toy_dataset(tmp_path, n=2)
    dev = torch.device("cpu")
    with pytest.raises(ValueError, match="im1"):
        train_irn(m, m.ids("train"), {"im0": files["im0"]}, irn_cfg(), dev, tmp_path / "m.pth", None, 0, None)
    with pytest.raises(ValueError, match="irn.backbone_init"):
        train_irn(m, m.ids("train"), files, irn_cfg(backbone_init="classifier"), dev, tmp_path / "m.pth", None, 0, None)
    bad = irn_cfg()
    del bad["loss_eps"]
    with pytest.raises(ValueError, match="irn.loss_eps"):
        train_irn(m, m.ids("train"), files, bad, dev, tmp_path / "m.pth", None, 0, None)


def test_train_irn_script_with_classifier_init(tmp_path, monkeypatch):
    import json

    m, files = toy_dataset(tmp_path, n=2)
    m.save(tmp_path / "manifest.json")
    cls = ResNetBackbone("resnet18", output_stride=16)
    state = {f"backbone.{k}": v for k, v in cls.state_dict().items()}
    save_torch(tmp_path / "cls.pth", {"state_dict": state, "config": {}})
    cfg = irn_cfg(backbone_init="classifier", epochs=1)
    argv = ["train_irn.py", "--cfg", json.dumps(cfg), "--manifest", str(tmp_path / "manifest.json"),
            "--ir-label-dir", str(tmp_path / "ir"), "--classifier", str(tmp_path / "cls.pth"),
            "--out", str(tmp_path / "irn" / "model.pth"), "--log", str(tmp_path / "irn" / "log.csv"),
            "--device", "cpu", "--threads", "1"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "workflow_scripts" / "train_irn.py"), run_name="__main__")
    ck = load_torch(tmp_path / "irn" / "model.pth")
    key = "backbone.stages.0.0.weight"  # conv1 of the stem, copied from the classifier
    assert torch.equal(ck["state_dict"][key], state[key])
    assert (tmp_path / "irn" / "log.csv").is_file()


def test_train_irn_loader_workers_deterministic_and_equal_to_main_process(tmp_path):
    """Two runs with 2 DataLoader workers and one seed give identical weights, equal to 0 workers
    (items draw their augmentation from their own (seed, epoch, index) generator)."""
    m, files = toy_dataset(tmp_path)
    states = {}
    for name, workers in (("w2a", 2), ("w2b", 2), ("w0", 0)):
        out = tmp_path / name / "model.pth"
        train_irn(m, m.ids("train"), files, irn_cfg(), torch.device("cpu"), out, None, 3, None, num_workers=workers)
        states[name] = load_torch(out)["state_dict"]
    for other in ("w2b", "w0"):
        for k, v in states["w2a"].items():
            assert torch.equal(v, states[other][k]), (other, k)


def test_train_irn_stopped_by_signal_resumes_to_identical_weights(tmp_path, monkeypatch):
    """3 images, batch 1: SIGUSR1 after step 2 (mid epoch 0); the rerun ends as an uninterrupted run."""
    m, files = toy_dataset(tmp_path)
    cfg = irn_cfg(batch_size=1)

    def train(name):
        out = tmp_path / name / "model.pth"
        train_irn(
            m, m.ids("train"), files, cfg, torch.device("cpu"), out, None, seed=3, log_csv=out.with_name("log.csv")
        )
        return out

    ref = train("ref")
    out = tmp_path / "cut" / "model.pth"
    stop_then_resume(monkeypatch, lambda: train("cut"), out, 2)
    assert_same_weights(load_torch(ref)["state_dict"], load_torch(out)["state_dict"])
    pd.testing.assert_frame_equal(pd.read_csv(ref.with_name("log.csv")), pd.read_csv(out.with_name("log.csv")))
