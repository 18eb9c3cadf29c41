"""Tests of conta_core.steps.train_cls: loss decreases on a separable toy set, determinism, context round."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from resume_helpers import assert_same_weights, stop_then_resume
from torch.utils.data import Dataset

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import load_torch, save_label_png
from conta_core.models.classifier import load_classifier
from conta_core.steps.confounder import save_confounder
from conta_core.steps.train_cls import train_classifier

torch.set_num_threads(1)

CLS_CFG = {
    "backbone": "resnet18",
    "pretrained": None,
    "freeze_bn": False,
    "frozen_stages": 0,
    "epochs": 6,
    "batch_size": 4,
    "lr": 0.01,
    "lr_new_mult": 10,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "poly_power": 0.9,
    "crop_size": 32,
    "scale_range": [0.9, 1.1],
}
CONTEXT = {"mode": "conta", "block": 5, "size": [4, 4], "xm_encoding": "foreground", "prior": "uniform"}


class ToyColours(Dataset):
    """8 images of 32 px: class 1 = red blob, class 2 = blue blob (separable by colour)."""

    LABELS = [[1, 0], [0, 1], [1, 1], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]]

    def __init__(self):
        rng = np.random.default_rng(0)
        self.items = []
        for i, lab in enumerate(self.LABELS):
            x = rng.normal(0, 0.1, (3, 32, 32)).astype(np.float32)
            if lab[0]:
                x[0, 4:16, 4:16] += 2.0
            if lab[1]:
                x[2, 16:28, 16:28] += 2.0
            self.items.append({"image": x, "label": np.array(lab, np.float32), "id": f"t{i}"})
        self.epochs_seen = []

    def set_epoch(self, epoch):
        self.epochs_seen.append(epoch)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _toy_manifest(tmp_path):
    return Manifest("toy", tmp_path, ["background", "red", "blue"], {"train": []}, {}, {})


def test_loss_decreases_and_checkpoint(tmp_path):
    ds = ToyColours()
    out, log_csv = tmp_path / "cls" / "model.pth", tmp_path / "cls" / "log.csv"
    train_classifier(_toy_manifest(tmp_path), [], CLS_CFG, CONTEXT, "cpu", out, seed=0, log_csv=log_csv, dataset=ds)
    log = pd.read_csv(log_csv)
    assert list(log.columns) == ["epoch", "iter", "loss", "lr"] and len(log) == 6 * 2  # drop_last: 2 batches/epoch
    per_epoch = log.groupby("epoch")["loss"].mean()
    assert per_epoch.iloc[-1] < 0.5 * per_epoch.iloc[0]
    assert log["lr"].iloc[0] == pytest.approx(0.01) and log["lr"].is_monotonic_decreasing
    assert ds.epochs_seen == list(range(6))
    ckpt = load_torch(out)
    assert ckpt["config"]["context"] is None  # no confounder given: plain round-0 classifier
    assert ckpt["config"]["num_fg"] == 2 and ckpt["config"]["classifier"]["backbone"] == "resnet18"
    assert any(k.startswith("backbone.") for k in ckpt["state_dict"])
    model = load_classifier(out, "cpu")
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack([it["image"] for it in ds.items])))
    np.testing.assert_array_equal((logits > 0).numpy(), np.array(ToyColours.LABELS, bool))


def test_deterministic_on_cpu(tmp_path):
    cfg = {**CLS_CFG, "epochs": 2}
    for name in ("a", "b"):
        train_classifier(
            _toy_manifest(tmp_path), [], cfg, None, "cpu", tmp_path / f"{name}.pth", seed=3, dataset=ToyColours()
        )
    a, b = load_torch(tmp_path / "a.pth")["state_dict"], load_torch(tmp_path / "b.pth")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def _disk_set(tmp_path, n=4):
    """Images, X_m PNGs and a confounder file on disk for a context round."""
    rng = np.random.default_rng(0)
    images, labels = {}, {}
    xm_dir = tmp_path / "seg_pred" / "0"
    for i in range(n):
        img = rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        images[f"im{i}"], labels[f"im{i}"] = f"im{i}.png", [1 + i % 2]
        save_label_png(xm_dir / f"im{i}.png", rng.integers(0, 3, (24, 28)).astype(np.uint8))
    m = Manifest("disk", tmp_path, ["background", "a", "b"], {"train": list(images)}, labels, images)
    conf = tmp_path / "confounder.h5"
    save_confounder(conf, rng.random((2, 4, 4)).astype(np.float32), np.array([2, 2]), ["a", "b"], round=0, source="seg")
    return m, {i: xm_dir / f"{i}.png" for i in images}, conf


def test_context_round_from_disk(tmp_path):
    m, xm_files, conf = _disk_set(tmp_path)
    cfg = {**CLS_CFG, "epochs": 1, "batch_size": 2, "crop_size": 16}
    out = tmp_path / "model.pth"
    train_classifier(m, m.ids("train"), cfg, CONTEXT, "cpu", out, seed=0, xm_files=xm_files, confounder_path=conf)
    model = load_classifier(out, "cpu")
    assert model.uses_context and model.blocks == (5,)
    assert load_torch(out)["config"]["context"]["block"] == 5
    assert torch.count_nonzero(model.confounder) > 0
    with pytest.raises(ValueError, match="X_m"):
        train_classifier(m, m.ids("train"), cfg, CONTEXT, "cpu", out, seed=0, confounder_path=conf)
    with pytest.raises(ValueError, match="batch_size"):
        train_classifier(m, m.ids("train"), {**cfg, "batch_size": 8}, None, "cpu", out, seed=0)


def test_loader_workers_deterministic_and_equal_to_main_process(tmp_path):
    """Two runs with 2 DataLoader workers and one seed give identical weights, equal to 0 workers.

    The augmentation of an item is drawn from its own (seed, epoch, index) generator, so the
    worker count changes nothing.
    """
    m, xm_files, conf = _disk_set(tmp_path)
    cfg = {**CLS_CFG, "epochs": 2, "batch_size": 2, "crop_size": 16}
    runs = {}
    for name, workers in (("w2a", 2), ("w2b", 2), ("w0", 0)):
        out = tmp_path / f"{name}.pth"
        train_classifier(
            m,
            m.ids("train"),
            cfg,
            CONTEXT,
            "cpu",
            out,
            seed=5,
            xm_files=xm_files,
            confounder_path=conf,
            num_workers=workers,
        )
        runs[name] = load_torch(out)["state_dict"]
    for other in ("w2b", "w0"):
        assert runs[other].keys() == runs["w2a"].keys()
        for k, v in runs["w2a"].items():
            assert torch.equal(v, runs[other][k]), (other, k)


@pytest.mark.parametrize("stop_step", [3, 4], ids=["mid-epoch", "epoch-boundary"])
def test_stopped_by_signal_resumes_to_identical_weights(tmp_path, monkeypatch, stop_step):
    """SIGUSR1 after step 3 (mid epoch 1) or 4 (end of epoch 1, 2 steps per epoch): the rerun
    resumes from the checkpoint and ends with the weights and log of an uninterrupted run."""
    cfg = {**CLS_CFG, "epochs": 3}
    m = _toy_manifest(tmp_path)

    def train(name):
        out = tmp_path / name / "model.pth"
        train_classifier(m, [], cfg, None, "cpu", out, seed=3, log_csv=out.with_name("log.csv"), dataset=ToyColours())
        return out

    ref = train("ref")
    out = tmp_path / "cut" / "model.pth"
    stop_then_resume(monkeypatch, lambda: train("cut"), out, stop_step)
    assert_same_weights(load_torch(ref)["state_dict"], load_torch(out)["state_dict"])
    pd.testing.assert_frame_equal(pd.read_csv(ref.with_name("log.csv")), pd.read_csv(out.with_name("log.csv")))
