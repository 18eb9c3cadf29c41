"""Tests of conta_core.models.classifier: CAMNet with and without CONTA context."""

import pytest
import torch

from conta_core.infra.fileio import save_torch
from conta_core.models.classifier import CAMNet, build_classifier, load_classifier

torch.set_num_threads(1)

NUM_FG = 3
SIZE = [4, 4]
CLS_CFG = {"backbone": "resnet18", "pretrained": None, "freeze_bn": False, "frozen_stages": 0}


def _ctx(block):
    return {"mode": "conta", "block": block, "size": SIZE, "xm_encoding": "foreground", "prior": "uniform"}


def _net(context=None, seed=0, frozen_stages=0):
    torch.manual_seed(seed)
    return CAMNet(NUM_FG, backbone="resnet18", freeze_bn=False, frozen_stages=frozen_stages, context=context)


def _inputs(b=2, px=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, px, px, generator=g), torch.rand(b, *SIZE, generator=g)


@pytest.mark.parametrize("block", [None, 2, 3, 4, 5, "dense"])
def test_forward_and_cam_shapes(block):
    net = _net(None if block is None else _ctx(block)).eval()
    x, xm = _inputs()
    xm = None if block is None else xm
    with torch.no_grad():
        logits = net(x, xm)
        cams = net.cam_maps(x, xm)
    assert logits.shape == (2, NUM_FG)
    assert cams.shape == (2, NUM_FG, 2, 2)  # output stride 16
    assert (cams >= 0).all()
    extra = 1 if block in (5, "dense") else 0
    assert net.classifier.weight.shape == (NUM_FG, 512 + extra, 1, 1)
    assert net.classifier.bias is None


@pytest.mark.parametrize("block", [2, 3, 4])
def test_identity_adapters_start_as_plain_network(block):
    plain = _net().eval()
    ctx = _net(_ctx(block), seed=5).eval()
    missing, unexpected = ctx.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("context.", "adapters.", "confounder")) for k in missing)
    ctx.set_confounder(torch.rand(NUM_FG, *SIZE))
    x, xm = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(ctx(x, xm), plain(x))
        torch.testing.assert_close(ctx.cam_maps(x, xm), plain.cam_maps(x))


def test_confounder_is_a_saved_buffer_and_xm_required():
    net = _net(_ctx(5))
    assert "confounder" in net.state_dict() and net.state_dict()["confounder"].shape == (NUM_FG, *SIZE)
    x, _ = _inputs()
    with pytest.raises(ValueError, match="xm"):
        net(x)
    with pytest.raises(ValueError, match="shape"):
        net.set_confounder(torch.zeros(NUM_FG + 1, *SIZE))
    with pytest.raises(ValueError, match="xm"):
        _net()(x, torch.zeros(2, *SIZE))


@pytest.mark.parametrize("block", [5, 2])
def test_context_gets_gradient_behind_frozen_stages(block):
    net = _net(_ctx(block), frozen_stages=2).train()
    net.set_confounder(torch.rand(NUM_FG, *SIZE))
    x, xm = _inputs()
    net(x, xm).sum().backward()
    if block == 5:
        assert net.context.w1.weight.grad.abs().sum() > 0
    else:  # the adapter's M column starts at zero: the gradient reaches it first
        assert net.adapters["2"].weight.grad[:, -1].abs().sum() > 0
    assert all(p.grad is None for p in net.backbone.stages[0].parameters())


def test_param_groups_split_backbone_and_new_layers():
    net = _net(_ctx("dense"), frozen_stages=2)
    backbone, new, context = net.param_groups()
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(names[id(p)].startswith("backbone.stages.") for p in backbone)
    assert {names[id(p)].split(".")[0] for p in new} == {"classifier", "adapters"}
    assert {names[id(p)].split(".")[0] for p in context} == {"context"}  # own group: context.lr_mult
    assert len(backbone) + len(new) + len(context) == sum(p.requires_grad for p in net.parameters())
    assert not any(names[id(p)].startswith(("backbone.stages.0.", "backbone.stages.1.")) for p in backbone)


def test_build_and_load_round_trip(tmp_path):
    ctx = _ctx(5)
    conf = torch.rand(NUM_FG, *SIZE)
    torch.manual_seed(0)
    net = build_classifier(CLS_CFG, ctx, NUM_FG, confounder=conf)
    path = tmp_path / "model.pth"
    save_torch(
        path, {"state_dict": net.state_dict(), "config": {"classifier": CLS_CFG, "context": ctx, "num_fg": NUM_FG}}
    )
    loaded = load_classifier(path, "cpu")
    assert not loaded.training and loaded.uses_context
    torch.testing.assert_close(loaded.confounder, conf)
    x, xm = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, xm), net.eval()(x, xm))


def test_mode_none_builds_plain_and_bad_block_raises():
    assert not build_classifier(CLS_CFG, {**_ctx(5), "mode": "none"}, NUM_FG).uses_context
    with pytest.raises(ValueError, match="context.block"):
        build_classifier(CLS_CFG, _ctx(6), NUM_FG)
    with pytest.raises(ValueError, match="classifier.backbone"):
        build_classifier({}, None, NUM_FG)


def _exact_and_nwgm(scale=3.0):
    nwgm = _net({**_ctx(5), "m_scale": scale, "init_std": 0.5}).eval()
    nwgm.set_confounder(torch.rand(NUM_FG, *SIZE, generator=torch.Generator().manual_seed(7)))
    with torch.no_grad():
        nwgm.classifier.weight[:, -1, 0, 0] = torch.tensor([2.0, -1.5, 0.7])  # M matters
    exact = _net({**_ctx(5), "m_scale": scale, "init_std": 0.5, "adjustment": "exact"}).eval()
    exact.load_state_dict(nwgm.state_dict())
    return nwgm, exact


def test_exact_adjustment_is_the_prior_weighted_mixture_of_the_strata():
    """context.adjustment exact: P = sum_i P(c_i) sigmoid(logit(M = alpha_i c_i)), checked against
    the nwgm network fed each stratum as its M through the ordinary concatenation path."""
    nwgm, exact = _exact_and_nwgm()
    x, xm = _inputs()
    with torch.no_grad():
        alpha = nwgm.context.attention(xm, nwgm.confounder)
        per_logit, per_cam = [], []
        for i in range(NUM_FG):
            m_i = (alpha[:, i, None, None] * nwgm.confounder[i])[:, None]  # [B, 1, h, w]
            feats = nwgm.features(x, m_i)
            per_logit.append(nwgm.classifier(feats.mean(dim=(2, 3), keepdim=True)).flatten(1))
            per_cam.append(torch.relu(nwgm.classifier(feats)))
        p = torch.stack([torch.sigmoid(lg) for lg in per_logit]).mean(0)
        torch.testing.assert_close(torch.sigmoid(exact(x, xm)), p, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(exact.cam_maps(x, xm), torch.stack(per_cam).mean(0), rtol=1e-5, atol=1e-6)
        # the NWGM feeds the mean stratum once: same map, different network output
        assert not torch.allclose(nwgm(x, xm), exact(x, xm))


def test_inject_xm_concatenates_x_m_itself_in_place_of_m():
    """context.inject xm (Table 1 Q1): the encoded X_m goes where M goes (same resize, gain and
    block); the attention gets no gradient; exact is refused."""
    net = _net({**_ctx(5), "m_scale": 3.0, "inject": "xm"})
    net.set_confounder(torch.rand(NUM_FG, *SIZE, generator=torch.Generator().manual_seed(7)))
    with torch.no_grad():
        net.classifier.weight[:, -1, 0, 0] = torch.tensor([2.0, -1.5, 0.7])
    x, xm = _inputs()
    m, alpha = net.context_map(xm)
    torch.testing.assert_close(m, xm[:, None])
    torch.testing.assert_close(alpha, torch.full((2, NUM_FG), 1.0 / NUM_FG))
    net.eval()
    with torch.no_grad():
        expected = net.classifier(net.features(x, xm[:, None]).mean(dim=(2, 3), keepdim=True)).flatten(1)
        torch.testing.assert_close(net(x, xm), expected)
        assert not torch.allclose(net(x, xm), net(x, 1.0 - xm))
    net.train()
    loss = torch.nn.functional.multilabel_soft_margin_loss(net(x, xm), torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    loss.backward()
    assert net.context.w1.weight.grad is None
    assert net.classifier.weight.grad[:, -1].abs().sum() > 0
    with pytest.raises(ValueError, match="context.inject"):
        _net({**_ctx(5), "inject": "xm", "adjustment": "exact"})
    with pytest.raises(ValueError, match="context.inject"):
        _net({**_ctx(5), "inject": "mask"})


def test_m_scale_auto_calibrates_the_same_gain_for_exact_and_nwgm():
    """m_scale auto: exact calibrates g on the expected map sum_i P(c_i) alpha_i c_i, the M
    that nwgm feeds, not on the stack of strata, so the two adjustments differ only by the
    sigmoid of the mixture (docs/context.md)."""
    nwgm, exact = _exact_and_nwgm(scale="auto")
    assert float(nwgm.m_gain) == 0.0 == float(exact.m_gain)
    x, xm = _inputs()
    with torch.no_grad():
        nwgm.train()(x, xm)
        exact.train()(x, xm)
    assert float(nwgm.m_gain) > 1.0
    assert float(exact.m_gain) == pytest.approx(float(nwgm.m_gain), rel=1e-5)


def test_exact_adjustment_trains_and_needs_block5():
    _, exact = _exact_and_nwgm()
    exact.train()
    x, xm = _inputs()
    loss = torch.nn.functional.multilabel_soft_margin_loss(exact(x, xm), torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    loss.backward()
    assert exact.context.w1.weight.grad.abs().sum() > 0
    assert exact.classifier.weight.grad[:, -1].abs().sum() > 0
    with pytest.raises(ValueError, match="context.adjustment"):
        _net({**_ctx(4), "adjustment": "exact"})
    with pytest.raises(ValueError, match="context.adjustment"):
        _net({**_ctx(5), "adjustment": "median"})
