"""Object-centric pre-training (conta_core.steps.pretrain): source set, determinism, loadable weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from resume_helpers import assert_same_weights, stop_then_resume

from conta_core.data import synthetic
from conta_core.infra.checkpoint import load_model
from conta_core.infra.fileio import load_torch
from conta_core.models.backbone import build_torchvision_resnet, load_pretrained
from conta_core.steps.pretrain import check_cfg, pretrain_backbone, source_images

TINY = {
    "backbone": "resnet18",
    "num_images": 16,
    "image_size": 32,
    "object_frac": [0.5, 0.9],
    "epochs": 1,
    "batch_size": 8,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1.0e-4,
    "poly_power": 0.9,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_source_images_are_balanced_single_objects():
    images, labels = source_images({**TINY, "num_images": 24}, seed=3)
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=8).tolist() == [3] * 8  # 8 catalogue classes, balanced
    again, labels2 = source_images({**TINY, "num_images": 24}, seed=3)
    assert np.array_equal(images, again) and np.array_equal(labels, labels2)
    other, _ = source_images({**TINY, "num_images": 24}, seed=4)
    assert not np.array_equal(images, other)


def test_source_object_colour_matches_its_label():
    """The label is the class that was drawn: its primary colour is in the image."""
    images, labels = source_images({**TINY, "num_images": 16, "image_size": 64}, seed=0)
    names = list(synthetic.CLASS_CATALOGUE)
    for im, k in zip(images, labels):
        colour = np.array(synthetic.CLASS_CATALOGUE[names[k]]["colors"][0])
        dist = np.abs(im.reshape(-1, 3).astype(int) - colour).max(axis=1)
        assert (dist <= synthetic.COLOR_JITTER + 8).sum() > 10, names[k]  # JPEG-free render: jitter only


def test_pretrain_is_deterministic_and_loadable(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    info = pretrain_backbone(TINY, seed=0, out_path=a, device="cpu", log_csv=tmp_path / "log.csv")
    pretrain_backbone(TINY, seed=0, out_path=b, device="cpu")
    ca, cb = load_model(a, "pretrain"), load_model(b, "pretrain")  # the model-file layout, kind pretrain
    sa, sb = ca["state_dict"], cb["state_dict"]
    assert ca["config"] == dict(TINY) and ca["seed"] == 0
    assert not any(k.startswith("fc.") for k in sa)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.isfinite(info["final_loss"]) and 0.0 <= info["train_accuracy"] <= 1.0
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "epoch,iter,loss,lr"
    net = build_torchvision_resnet("resnet18", output_stride=8, dilate=True)  # e.g. DeepLab's backbone
    load_pretrained(net, a)
    assert torch.equal(net.conv1.weight, sa["conv1.weight"])


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("object_frac", [0.9, 0.5], "pretrain.object_frac"),
        ("num_images", 4, "pretrain.num_images"),
        ("image_size", 8, "pretrain.image_size"),
    ],
)
def test_bad_config_names_the_key(key, value, msg):
    with pytest.raises(ValueError, match=msg):
        check_cfg({**TINY, key: value})
    with pytest.raises(ValueError, match="pretrain.lr"):
        check_cfg({k: v for k, v in TINY.items() if k != "lr"})


def test_stopped_at_an_epoch_boundary_resumes_to_identical_weights(tmp_path, monkeypatch):
    """SIGUSR1 after step 2 = the end of epoch 0 (the order of epoch 1 is drawn from the
    generator after the checkpoint): the rerun ends with the weights of an uninterrupted run."""
    cfg = {**TINY, "epochs": 2}
    ref = tmp_path / "ref.pth"
    info = pretrain_backbone(cfg, seed=0, out_path=ref, device="cpu")
    out = tmp_path / "cut.pth"
    stop_then_resume(monkeypatch, lambda: pretrain_backbone(cfg, seed=0, out_path=out, device="cpu"), out, 2)
    assert_same_weights(load_torch(ref)["state_dict"], load_torch(out)["state_dict"])
    assert pretrain_backbone(cfg, seed=0, out_path=tmp_path / "again.pth", device="cpu") == info


def test_cache_reuses_identical_pretraining_and_keys_every_input(tmp_path, caplog):
    import logging

    from conta_core.steps.pretrain import cache_key, pretrain_cached

    cache = tmp_path / "cache"
    a, b = tmp_path / "a" / "w.pth", tmp_path / "b" / "w.pth"
    assert pretrain_cached(TINY, 0, a, "cpu", a.with_suffix(".csv"), cache) is False  # trains, stores
    with caplog.at_level(logging.INFO, logger="conta.pretrain"):
        assert pretrain_cached(TINY, 0, b, "cpu", b.with_suffix(".csv"), cache) is True  # copies
    assert "reused" in caplog.text
    assert a.read_bytes() == b.read_bytes() and a.with_suffix(".csv").read_bytes() == b.with_suffix(".csv").read_bytes()
    key = cache_key(TINY, 0, "cpu")
    assert (
        len({key, cache_key(TINY, 1, "cpu"), cache_key({**TINY, "lr": 0.02}, 0, "cpu"), cache_key(TINY, 0, "cuda")})
        == 4
    )
    assert sorted(p.name for p in cache.iterdir()) == [f"resnet18-{key}"]


def test_resnet38_pretraining_gives_seams_trunk_its_weights(tmp_path):
    """backbone resnet38_w<width>: SEAM's ResNet-38 trunk at that width, trained with BatchNorm,
    saved with the official key names and no head; SEAM's and AffinityNet's loaders take it."""
    from conta_core.models.affinity import AffinityNet
    from conta_core.models.resnet38 import trunk_keys
    from conta_core.models.seam import build_seam
    from conta_core.steps.seam import load_trunk

    cfg = {**TINY, "backbone": "resnet38_w0.0625"}
    out = tmp_path / "r38.pth"
    pretrain_backbone(cfg, seed=0, out_path=out, device="cpu")
    state = load_model(out, "pretrain")["state_dict"]
    assert list(state) == trunk_keys(0.0625)
    torch.manual_seed(0)
    fresh = build_seam({"width": 0.0625}, None, num_fg=3)
    assert not torch.equal(fresh.bn7.running_var, state["bn7.running_var"])  # BatchNorm statistics were trained
    load_trunk(fresh, out, "seam.pretrained")
    assert torch.equal(fresh.b4_3.conv_branch2a.weight, state["b4_3.conv_branch2a.weight"])
    assert torch.equal(fresh.bn7.running_var, state["bn7.running_var"])
    aff = AffinityNet(0.0625, radius=5)
    load_trunk(aff, out, "seam.aff.pretrained")
    assert torch.equal(aff.b6.conv_branch2b2.weight, state["b6.conv_branch2b2.weight"])


@pytest.mark.parametrize("backbone", ["resnet38", "resnet38_w0", "resnet38_wide", "resnet38_w0.50", "vgg16"])
def test_unknown_backbone_names_the_key(backbone):
    with pytest.raises(ValueError, match="pretrain.backbone"):
        check_cfg({**TINY, "backbone": backbone})
