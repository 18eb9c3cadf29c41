"""DeepLab-v2 model: output stride, ASPP sum, MSC outputs/fusion, config build, param groups, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from conta_core.infra.fileio import save_torch
from conta_core.models.deeplab import (
    ASPP,
    ASPP_INIT_STD,
    MSC,
    DeepLabV2,
    build_deeplab,
    checkpoint_dict,
    load_deeplab,
    msc_extra_scales,
    param_groups,
)

torch.set_num_threads(1)


def tiny_cfg(**over) -> dict:
    cfg = {
        "backbone": "resnet18",
        "pretrained": None,
        "output_stride": 8,
        "aspp_rates": [6, 12, 18, 24],
        "freeze_bn": True,
        "msc_scales": [1.0, 0.75, 0.5],
        "lr": 0.01,
        "lr_aspp_mult": 10,
        "weight_decay": 5.0e-4,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def net() -> DeepLabV2:
    torch.manual_seed(0)
    return DeepLabV2(3, backbone="resnet18", aspp_rates=(2, 4), freeze_bn=True).eval()


@pytest.mark.parametrize("hw", [(33, 33), (65, 65), (47, 39), (40, 57)])
def test_output_stride_8(net: DeepLabV2, hw: tuple[int, int]) -> None:
    h, w = hw
    with torch.inference_mode():
        out = net(torch.randn(2, 3, h, w))
    assert out.shape == (2, 3, math.ceil(h / 8), math.ceil(w / 8))


def test_aspp_sums_branches_hand_computed() -> None:
    aspp = ASPP(in_channels=1, num_classes=1, rates=(1, 2))
    with torch.no_grad():
        for conv in aspp.branches:
            conv.weight.zero_()
        aspp.branches[0].weight[0, 0, 1, 1] = 1.0  # centre tap: identity
        aspp.branches[0].bias.fill_(0.5)
        aspp.branches[1].weight[0, 0, 0, 0] = 2.0  # top-left tap at dilation 2: x[i-2, j-2]
        aspp.branches[1].bias.fill_(0.25)
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    out = aspp(x)[0, 0]
    expected = x[0, 0] + 0.5 + 0.25
    shifted = torch.zeros(5, 5)
    shifted[2:, 2:] = x[0, 0, :3, :3]
    expected = expected + 2.0 * shifted
    torch.testing.assert_close(out, expected)
    assert out[0, 0].item() == 0.75 and out[4, 4].item() == 24 + 0.75 + 2 * 12


def test_aspp_init_and_dilations() -> None:
    torch.manual_seed(0)
    aspp = ASPP(in_channels=256, num_classes=5, rates=(6, 12, 18, 24))
    assert [c.dilation for c in aspp.branches] == [(r, r) for r in (6, 12, 18, 24)]
    assert [c.padding for c in aspp.branches] == [(r, r) for r in (6, 12, 18, 24)]
    w = torch.cat([c.weight.flatten() for c in aspp.branches])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - ASPP_INIT_STD) < 1e-3
    assert all(torch.count_nonzero(c.bias) == 0 for c in aspp.branches)


def test_msc_train_returns_four_eval_returns_fused(net: DeepLabV2) -> None:
    msc = MSC(net, scales=(0.75, 0.5))
    x = torch.randn(1, 3, 41, 35)
    msc.train()
    outs = msc(x)
    assert isinstance(outs, list) and len(outs) == 4
    assert outs[0].shape == outs[3].shape == (1, 3, 6, 5)
    assert outs[1].shape == (1, 3, math.ceil(30 / 8), math.ceil(26 / 8))  # 41*0.75 -> 30, 35*0.75 -> 26
    assert outs[2].shape == (1, 3, math.ceil(20 / 8), math.ceil(17 / 8))
    fused = outs[3]
    for o in outs[:3]:
        up = nn.functional.interpolate(o, size=fused.shape[-2:], mode="bilinear", align_corners=False)
        assert torch.all(fused >= up - 1e-6)
    msc.eval()
    with torch.inference_mode():
        out_eval = msc(x)
    assert isinstance(out_eval, torch.Tensor)
    torch.testing.assert_close(out_eval, fused.detach())  # frozen BN: train and eval agree


def test_frozen_bn_stays_in_eval_mode() -> None:
    model = build_deeplab(tiny_cfg(freeze_bn=True), 3).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())


def test_build_from_config_and_errors() -> None:
    model = build_deeplab(tiny_cfg(aspp_rates=[3, 5]), 4)
    assert isinstance(model, MSC) and model.scales == (0.75, 0.5)
    assert [c.dilation[0] for c in model.base.aspp.branches] == [3, 5]
    assert model.base.aspp.branches[0].out_channels == 4
    assert msc_extra_scales({"msc_scales": [1.0]}) == ()
    with pytest.raises(ValueError, match="msc_scales"):
        msc_extra_scales({"msc_scales": [0.5, 0.75]})
    cfg = tiny_cfg()
    del cfg["aspp_rates"]
    with pytest.raises(ValueError, match="segmentation.aspp_rates"):
        build_deeplab(cfg, 3)
    with pytest.raises(FileNotFoundError):
        build_deeplab(tiny_cfg(pretrained="/nonexistent/resnet18.pth"), 3)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_param_groups(freeze_bn: bool) -> None:
    model = build_deeplab(tiny_cfg(freeze_bn=freeze_bn), 3)
    groups = param_groups(model, tiny_cfg())
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.1, 0.2])
    assert [g["weight_decay"] for g in groups] == [5.0e-4, 5.0e-4, 0.0]
    aspp = model.base.aspp.branches
    assert {id(p) for p in groups[1]["params"]} == {id(c.weight) for c in aspp}
    assert {id(p) for p in groups[2]["params"]} == {id(c.bias) for c in aspp}
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    assert set(in_groups) == {id(p) for p in model.parameters() if p.requires_grad}
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert bool(bn_params & set(in_groups)) == (not freeze_bn)


def test_checkpoint_roundtrip(tmp_path) -> None:
    torch.manual_seed(1)
    cfg = tiny_cfg(aspp_rates=[2])
    model = build_deeplab(cfg, 3).eval()
    save_torch(tmp_path / "model.pth", checkpoint_dict(model, cfg, 3, iteration=7))
    loaded = load_deeplab(tmp_path / "model.pth", torch.device("cpu"))
    assert not loaded.training
    x = torch.randn(1, 3, 33, 37)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    save_torch(tmp_path / "bad.pth", {"weights": torch.zeros(1)})
    with pytest.raises(ValueError, match="bad.pth"):
        load_deeplab(tmp_path / "bad.pth", torch.device("cpu"))
