"""conta_core.infra.checkpoint: one layout for every final model file, with a kind tag."""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from conta_core.infra.checkpoint import KINDS, load_model, model_checkpoint, save_model
from conta_core.infra.config import ConfigError, config_error
from conta_core.infra.fileio import load_torch, save_torch


def test_save_and_load_every_kind(tmp_path) -> None:
    net = torch.nn.Conv2d(3, 4, 1)
    for kind in KINDS:
        path = tmp_path / f"{kind}.pth"
        save_model(path, kind, net, {"section": kind}, seed=3)
        ckpt = load_model(path, kind)
        assert ckpt["kind"] == kind and ckpt["config"] == {"section": kind} and ckpt["seed"] == 3
        assert set(ckpt["state_dict"]) == {"weight", "bias"}
        assert all(v.device.type == "cpu" and not v.requires_grad for v in ckpt["state_dict"].values())
        assert torch.equal(ckpt["state_dict"]["weight"], net.weight.detach())
        assert not list(tmp_path.glob("*.tmp*"))  # written through a temporary file, renamed


def test_a_checkpoint_of_another_kind_is_refused_naming_both(tmp_path) -> None:
    path = tmp_path / "model.pth"
    save_model(path, "segmentation", torch.nn.Linear(2, 2), {}, num_classes=3)
    with pytest.raises(ValueError, match=r"model\.pth: a segmentation checkpoint, expected a classifier checkpoint"):
        load_model(path, "classifier")


def test_structure_errors_name_the_file_and_the_missing_key(tmp_path) -> None:
    save_torch(tmp_path / "plain.pth", {"weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"plain\.pth: not a irn checkpoint \(no 'state_dict'\)"):
        load_model(tmp_path / "plain.pth", "irn")
    save_model(tmp_path / "seg.pth", "segmentation", {}, {})
    with pytest.raises(ValueError, match=r"seg\.pth: not a segmentation checkpoint \(needs 'num_classes'\)"):
        load_model(tmp_path / "seg.pth", "segmentation", required=("config", "num_classes"))
    with pytest.raises(ValueError, match="unknown checkpoint kind 'cls'"):
        save_model(tmp_path / "x.pth", "cls", {}, {})
    with pytest.raises(ValueError, match="may not be named"):
        model_checkpoint("irn", {}, {}, state_dict={})


def test_untagged_files_of_earlier_runs_still_load(tmp_path) -> None:
    save_torch(tmp_path / "old.pth", {"state_dict": {"w": torch.ones(2)}, "config": {"backbone": "resnet18"}})
    assert load_model(tmp_path / "old.pth", "irn")["config"] == {"backbone": "resnet18"}


def test_loaders_refuse_a_model_of_the_wrong_kind(tmp_path) -> None:
    from conta_core.models.amn import load_amn
    from conta_core.models.classifier import load_classifier
    from conta_core.models.deeplab import load_deeplab
    from conta_core.models.irn import edge_net_from_checkpoint

    path = tmp_path / "pretrain.pth"
    save_model(path, "pretrain", {}, {})
    for load, kind in (
        (load_classifier, "classifier"),
        (load_amn, "amn"),
        (load_deeplab, "segmentation"),
        (edge_net_from_checkpoint, "irn"),
    ):
        with pytest.raises(ValueError, match=f"a pretrain checkpoint, expected a {kind} checkpoint"):
            load(path, torch.device("cpu"))


def test_pretrain_file_is_usable_as_pretrained_weights(tmp_path) -> None:
    from conta_core.models.backbone import build_torchvision_resnet, load_pretrained

    src = build_torchvision_resnet("resnet18", output_stride=32, dilate=False)
    save_model(
        tmp_path / "resnet18.pth",
        "pretrain",
        {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")},
        {"backbone": "resnet18"},
    )
    dst = build_torchvision_resnet("resnet18", output_stride=32, dilate=False)
    assert load_pretrained(dst, tmp_path / "resnet18.pth") == "torchvision"
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    assert load_torch(tmp_path / "resnet18.pth")["kind"] == "pretrain"


def test_one_config_error_format() -> None:
    err = config_error("cam.sweep", "expected [start, stop >= start, step > 0]")
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)
    assert str(err) == "config key cam.sweep: expected [start, stop >= start, step > 0]"


LIBRARY_CHECKS = [  # (module, function, argument, the key the error must name)
    (
        "conta_core.evaluation.cam_eval",
        "sweep_thresholds",
        {"sweep": [0.5, 0.1, 0.1], "eval_threshold": 0.2},
        "cam.sweep",
    ),
    ("conta_core.evaluation.cam_eval", "sweep_thresholds", {"sweep": [0.1, 0.5, 0.1]}, "cam.eval_threshold"),
    ("conta_core.models.deeplab", "msc_extra_scales", {"msc_scales": [0.5]}, "segmentation.msc_scales"),
    (
        "conta_core.models.classifier",
        "validate_context_cfg",
        {"mode": "conta", "block": 9, "size": [4, 4], "xm_encoding": "onehot"},
        "context.block",
    ),
    ("conta_core.models.classifier", "validate_context_cfg", {"mode": "conta"}, "context.block"),
    ("conta_core.steps.ir_label", "_check_cfg", {"fg_threshold": 0.3}, "ir_label.bg_threshold"),
]


@pytest.mark.parametrize("module, function, arg, key", LIBRARY_CHECKS)
def test_library_config_checks_use_the_one_format(module, function, arg, key) -> None:
    fn = getattr(importlib.import_module(module), function)
    with pytest.raises(ConfigError, match=rf"^config key {re.escape(key)}: "):
        fn(arg)
