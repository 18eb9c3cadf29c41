"""SEAM and AffinityNet: the networks' interface, the losses, the walk, the optimiser quirk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conta_core.models.affinity import AffinityNet, affinity_labels, pair_indices, random_walk, walk_labels
from conta_core.models.resnet38 import ResNet38
from conta_core.models.seam import SEAMNet, cam_d_norm, pcm
from conta_core.steps.seam import adaptive_min_pooling_loss, affinity_label, make_optimizer, max_onehot, seam_losses

CTX = {"mode": "conta", "block": 5, "size": [4, 4], "xm_encoding": "foreground", "m_scale": 1.0, "init_std": 0.2}


def _shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_width_one_has_the_official_key_names_and_shapes():
    with torch.device("meta"):
        trunk, seam, aff = _shapes(ResNet38()), _shapes(SEAMNet()), _shapes(AffinityNet())
    assert len([k for k in trunk if k.endswith("weight")]) == 80 and "bn7.running_var" in trunk
    assert trunk["conv1a.weight"] == (64, 3, 3, 3) and trunk["b2.conv_branch1.weight"] == (128, 64, 1, 1)
    assert trunk["b5.conv_branch2a.weight"] == (512, 512, 3, 3) and trunk["b4_5.bn_branch2b1.weight"] == (512,)
    assert trunk["b7.conv_branch2b2.weight"] == (4096, 2048, 1, 1) and "b6.bn_branch2b2.running_mean" in trunk
    assert set(seam) - set(trunk) == {"fc8.weight", "f8_3.weight", "f8_4.weight", "f9.weight"}
    assert seam["fc8.weight"] == (21, 4096, 1, 1) and seam["f9.weight"] == (192, 195, 1, 1)
    assert set(aff) - set(trunk) == {"f8_3.weight", "f8_4.weight", "f8_5.weight", "f9.weight"}
    assert aff["f9.weight"] == (448, 448, 1, 1)


def test_forward_shapes_and_the_frozen_parts():
    torch.manual_seed(0)
    net = SEAMNet(0.0625, num_classes=4).eval()
    d = net.forward_as_dict(torch.randn(2, 3, 40, 48))
    assert set(d) >= {"conv4", "conv5", "conv6"} and d["conv6"].shape[-2:] == (5, 6)
    cam, cam_rv, logits = net(torch.randn(2, 3, 40, 48), with_logits=True)
    assert cam.shape == cam_rv.shape == (2, 4, 40, 48) and logits.shape == (2, 4)
    net.train()
    frozen = {k.split(".")[0] for k, p in net.named_parameters() if not p.requires_grad}
    assert {"conv1a", "b2", "b2_1", "b2_2"} <= frozen and not any(
        m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    net.freeze_bn = net.freeze_early = False
    assert all(p.requires_grad for p in net.train().parameters())


def test_cam_d_norm_and_pcm():
    cam = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]], [[0.5, 1.0]]]])  # [1, 3 (bg + 2), 1, 2]
    n = cam_d_norm(cam)
    # normalised fg: [1/3, 1] and [1/2, 1]: background 1 - [1/2, 1]; the non-maximal fg zeroed
    assert torch.allclose(n[0, 0, 0], torch.tensor([0.5, 0.0]), atol=1e-4)
    assert n[0, 1, 0, 0] == 0 and n[0, 2, 0, 1] == 0 and n[0, 1, 0, 1] == pytest.approx(1.0, abs=1e-4)
    f = torch.ones(1, 4, 1, 2)  # identical embeddings: every pixel gets the mean
    out = pcm(cam, f)
    assert torch.allclose(out, cam.mean(dim=-1, keepdim=True).expand_as(cam), atol=1e-4)


def test_losses_by_hand():
    x = torch.arange(8.0).view(1, 2, 2, 2) - 2  # per-pixel max over channels: 2, 3, 4, 5
    assert adaptive_min_pooling_loss(x).item() == pytest.approx(2.0)  # the lowest 25 %: one pixel
    m = max_onehot(torch.tensor([[[[0.3]], [[0.2]], [[0.5]]]]))
    assert m.flatten().tolist() == pytest.approx([0.3, 0.0, 0.5])
    torch.manual_seed(0)
    net = SEAMNet(0.0625, num_classes=3)
    net.freeze_bn = net.freeze_early = False
    net.train()
    x1 = torch.randn(2, 3, 40, 40)
    x2 = torch.nn.functional.interpolate(x1, scale_factor=0.3, mode="bilinear", align_corners=True)
    loss, parts = seam_losses(
        *net(x1, with_logits=True), *net(x2, with_logits=True), torch.tensor([[1.0, 0], [1, 1]]), 0.3, 0.2
    )
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"loss_cls", "loss_er", "loss_ecr"}
    assert net.fc8.weight.grad.abs().sum() > 0 and net.f9.weight.grad.abs().sum() > 0


def test_psa_optimizer_quirk_puts_the_weight_decay_into_the_momentum():
    net = SEAMNet(0.0625, num_classes=3).train()
    cfg = {"lr_mults": [1, 2, 10, 20], "weight_decay": 5e-4, "momentum": 0.9, "psa_optimizer_quirk": True}
    opt = make_optimizer(net, 0.01, cfg)
    assert {g["momentum"] for g in opt.param_groups} == {5e-4}
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.01, 5e-4), (0.1, 5e-4)]  # no biases
    assert make_optimizer(net, 0.01, {**cfg, "psa_optimizer_quirk": False}).param_groups[0]["momentum"] == 0.9


def test_context_learns_at_the_new_layers_rate_times_lr_mult_as_in_irnet():
    """W_1, W_2 get new-weights lr x context.lr_mult (biases: new-biases lr x lr_mult), as IRNet's
    classifier gives them new_lr x lr_mult; before, they joined the new layers at 1/lr_mult of it."""
    net = SEAMNet(0.0625, num_classes=3, context={**CTX, "lr_mult": 100.0, "bias": True}).train()
    cfg = {"lr_mults": [1, 2, 10, 20], "weight_decay": 5e-4, "momentum": 0.9, "psa_optimizer_quirk": False}
    groups = make_optimizer(net, 0.01, cfg).param_groups
    ctx_ids = {id(p) for p in net.context.parameters() if p.requires_grad}
    ctx_groups = [g for g in groups if {id(p) for p in g["params"]} & ctx_ids]
    assert all({id(p) for p in g["params"]} <= ctx_ids for g in ctx_groups)  # only context in them
    assert sum(len(g["params"]) for g in ctx_groups) == len(ctx_ids) == 4  # W_1, W_2 and their biases
    assert [(g["lr"], g["initial_lr"], g["weight_decay"], len(g["params"])) for g in ctx_groups] == [
        (pytest.approx(0.01 * 10 * 100), pytest.approx(0.01 * 10 * 100), 5e-4, 2),  # weights
        (pytest.approx(0.01 * 20 * 100), pytest.approx(0.01 * 20 * 100), 0.0, 2),  # biases: no decay
    ]
    # the official groups are what they were without context
    plain = make_optimizer(SEAMNet(0.0625, num_classes=3).train(), 0.01, cfg).param_groups
    official = [g for g in groups if not any(g is c for c in ctx_groups)]
    assert [(g["lr"], len(g["params"])) for g in official] == [(g["lr"], len(g["params"])) for g in plain]


def test_context_at_block_5_and_the_exact_mixture():
    torch.manual_seed(0)
    net = SEAMNet(0.0625, num_classes=4, context={**CTX, "adjustment": "exact"}).eval()
    net.set_confounder(torch.rand(3, 4, 4))
    assert net.fc8.weight.shape[1] == net.channels["b7"] + 1 and net.fg_head_weight().shape[0] == 3
    xm = torch.rand(2, 4, 4)
    cam, _, logits = net(torch.randn(2, 3, 32, 32), xm, with_logits=True)
    net.exact = False
    cam_n, _, logits_n = net(torch.randn(2, 3, 32, 32) * 0 + 1, xm, with_logits=True)
    assert logits.shape == logits_n.shape == (2, 4)
    with torch.no_grad():
        net.fc8.weight[:, -1] = 0  # M has no weight: the mixture is the plain logit
    net.exact = True
    x = torch.randn(1, 3, 32, 32)
    cam, _, logits = net(x, xm[:1], with_logits=True)
    assert torch.allclose(logits[:, 1:], cam.mean(dim=(2, 3))[:, 1:], atol=1e-5)
    with pytest.raises(ValueError, match="block 5"):
        SEAMNet(0.0625, num_classes=4, context={**CTX, "block": 3})


def test_pairs_labels_and_walk():
    ind_from, ind_to = pair_indices(5, (12, 12))
    assert len(ind_to) == 34 * len(ind_from) == 34 * 8 * 4
    label = np.zeros((12, 12), np.uint8)
    label[:, 6:] = 1
    label[0, 0] = 255
    bg, fg, neg = affinity_labels(label, 5)
    assert bg.shape == (34, 32) and (bg + fg + neg).max() == 1 and neg.sum() > 0 and fg.sum() > 0
    la = np.stack([np.full((2, 2), 0.6), np.full((2, 2), 0.4)])
    ha = np.stack([np.array([[0.7, 0.2], [0.2, 0.2]]), np.array([[0.3, 0.8], [0.8, 0.8]])])
    assert affinity_label(la, ha).tolist() == [[0, 255], [255, 255]]
    scores = torch.rand(3, 16)
    assert torch.allclose(random_walk(torch.eye(16), scores, 8, 3), scores)
    torch.manual_seed(0)
    idx = walk_labels(AffinityNet(0.0625).eval(), torch.randn(1, 3, 37, 45), torch.rand(2, 37, 45), 8, 2, 6)
    assert idx.shape == (37, 45) and int(idx.max()) <= 2


def test_resize_long_draws_the_long_side_in_bounds():
    from conta_core.steps.seam import resize_long

    img = np.zeros((30, 60, 3), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, (m,) = resize_long(img, [np.zeros((30, 60), np.uint8)], (90, 100), rng)
        assert 90 <= out.shape[1] <= 100 and out.shape[0] == round(30 * out.shape[1] / 60) and m.shape == out.shape[:2]


def test_exact_logits_equal_the_brute_force_mixture_over_strata():
    import torch.nn.functional as F

    torch.manual_seed(1)
    net = SEAMNet(0.0625, num_classes=4, context={**CTX, "adjustment": "exact"}).eval()
    c = torch.rand(3, 4, 4)
    net.set_confounder(c)
    x, xm = torch.randn(1, 3, 32, 40), torch.rand(1, 4, 4)
    _, _, logits = net(x, xm, with_logits=True)
    with torch.no_grad():
        feats = net.forward_as_dict(x)["conv6"]
        alpha = net.context.attention(xm, c)[0]
        probs = 0
        for i in range(3):
            mi = F.interpolate(
                (alpha[i] * c[i])[None, None], size=feats.shape[-2:], mode="bilinear", align_corners=False
            )
            cam_i = net.fc8(torch.cat([feats, mi * net.m_gain], dim=1))
            up = F.interpolate(cam_i, (32, 40), mode="bilinear", align_corners=True)
            probs = probs + torch.sigmoid(up.mean(dim=(2, 3))[:, 1:]) / 3
    assert torch.allclose(logits[:, 1:], torch.log(probs) - torch.log1p(-probs), atol=1e-4)


def test_crf_labels_take_the_ir_label_call_and_do_not_depend_on_workers(tmp_path):
    """make_seam_crf_labels runs as the make_ir_label step of method seam: make_ir_labels'
    call (workers last); 1 or 2 worker processes write the same files; existing PNGs are kept."""
    from test_ir_label import CRF, tiny_dataset

    from conta_core.infra.fileio import load_label_png, save_label_png
    from conta_core.steps.seam import load_crf_label, make_seam_crf_labels

    manifest, cams = tiny_dataset(tmp_path)
    ids = manifest.ids("train")
    cfg = {"crf_alphas": [4, 24], "crf": CRF}
    make_seam_crf_labels(manifest, ids, cams, tmp_path / "w1", cfg, 1)
    make_seam_crf_labels(manifest, ids, cams, tmp_path / "w2", cfg, 2)
    for i in ids:
        a, b = load_crf_label(tmp_path / "w1" / f"{i}.npz"), load_crf_label(tmp_path / "w2" / f"{i}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in ("keys", "la", "ha")) and a["la"].shape == (3, 20, 20)
        png = load_label_png(tmp_path / "w1" / f"{i}.png")
        np.testing.assert_array_equal(png, load_label_png(tmp_path / "w2" / f"{i}.png"))
        assert set(np.unique(png)) <= {0, 1, 3, 255}  # keys 0, 2 -> classes 1, 3
    sentinel = np.full((20, 20), 3, dtype=np.uint8)
    save_label_png(tmp_path / "w1" / "img0.png", sentinel)
    make_seam_crf_labels(manifest, ids, cams, tmp_path / "w1", cfg, 1)
    np.testing.assert_array_equal(load_label_png(tmp_path / "w1" / "img0.png"), sentinel)
    with pytest.raises(ValueError, match="img1"):
        make_seam_crf_labels(manifest, ids, {"img0": cams["img0"]}, tmp_path / "w3", cfg, 1)


def test_color_jitter_reaches_both_trainings_and_is_seeded(tmp_path):
    """seam.color_jitter: SEAM's and AffinityNet's training items change, identically for the
    same (seed, epoch, index); null keeps the project's standard augmentation."""
    from test_ir_label import CRF, tiny_dataset

    from conta_core.steps.seam import AffinityDataset, SeamDataset, make_seam_crf_labels

    manifest, cams = tiny_dataset(tmp_path)
    ids = manifest.ids("train")
    cfg = {"crop_size": 16, "scale_range": [1.0, 1.0], "resize_long": None, "color_jitter": None}
    plain = SeamDataset(manifest, ids, cfg, seed=3)[0]["image"]
    jit = {**cfg, "color_jitter": [0.3, 0.3, 0.3, 0.1]}
    a, b = SeamDataset(manifest, ids, jit, seed=3)[0]["image"], SeamDataset(manifest, ids, jit, seed=3)[0]["image"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == plain.shape and not np.array_equal(a, plain)

    make_seam_crf_labels(manifest, ids, cams, tmp_path / "crf", {"crf_alphas": [4, 24], "crf": CRF}, 1)
    files = {i: tmp_path / "crf" / f"{i}.npz" for i in ids}
    aff = [AffinityDataset(manifest, ids, files, 48, 5, 3, j)[0] for j in (None, [0.3, 0.3, 0.3, 0.1])]
    assert not np.array_equal(aff[0]["image"], aff[1]["image"]) and aff[0]["fg"].shape == aff[1]["fg"].shape
    again = AffinityDataset(manifest, ids, files, 48, 5, 3, [0.3, 0.3, 0.3, 0.1])[0]
    np.testing.assert_array_equal(aff[1]["image"], again["image"])


def test_walk_takes_the_cams_at_another_size_and_answers_at_out_size(monkeypatch):
    """seam.aff.scale: walk_labels resizes the CAMs to the (rescaled) image, walks at it, and
    resizes the walked scores to out_size before the argmax (checked by hand with the walk
    itself an identity); without out_size it answers at the image's size, as before."""
    import torch.nn.functional as F

    import conta_core.models.affinity as affinity

    torch.manual_seed(0)
    model = AffinityNet(0.0625).eval()
    x, fg = torch.randn(1, 3, 74, 90), torch.rand(2, 37, 45)
    with torch.inference_mode():
        big = F.interpolate(fg[None], (74, 90), mode="bilinear", align_corners=False)[0]
        np.testing.assert_array_equal(walk_labels(model, x, fg, 8, 2, 6), walk_labels(model, x, big, 8, 2, 6))
        same = walk_labels(model, x, big, 8, 2, 6, out_size=(74, 90))
        np.testing.assert_array_equal(same, walk_labels(model, x, big, 8, 2, 6))
        assert walk_labels(model, x, torch.zeros(0, 37, 45), 8, 2, 6, out_size=(37, 45)).eq(0).all()

        monkeypatch.setattr(affinity, "random_walk", lambda dense, scores, beta, logt: scores)
        scores = torch.cat([1 - big.amax(dim=0, keepdim=True), big])  # alpha 1: all three classes win somewhere
        pooled = F.avg_pool2d(F.pad(scores, (0, 6, 0, 6))[None], 8, 8)  # padded to 80 x 96
        up = F.interpolate(pooled, (80, 96), mode="bilinear", align_corners=False)[:, :, :74, :90]
        want = F.interpolate(up, (37, 45), mode="bilinear", align_corners=False)[0].argmax(dim=0)
        small = walk_labels(model, x, fg, 8, 2, 1, out_size=(37, 45))
        assert small.shape == (37, 45) and len(torch.unique(want)) == 3
        np.testing.assert_array_equal(small, want)


def test_affinity_net_at_scale_two_trains_on_the_rescaled_image_and_walks_at_it(tmp_path, monkeypatch):
    """seam.aff.scale 2: the training items are crops of the image and its CRF labels at twice
    the size (a 40 px crop of a 20 px image is the whole image at 40 px, its labels the CRF
    scores pooled by 4 instead of 8); the checkpoint records the scale (an old one without it
    reads as 1) and the walk runs on the image at 2x and writes masks at the image's size."""
    from test_ir_label import CRF, tiny_dataset

    import conta_core.steps.seam as seam
    from conta_core.data.transforms import normalize, pil_resize_image
    from conta_core.infra.checkpoint import save_model
    from conta_core.infra.fileio import load_image, load_label_png
    from conta_core.models.affinity import load_affinity
    from conta_core.steps.seam import AffinityDataset, load_crf_label, make_seam_crf_labels, train_affinity

    manifest, cams = tiny_dataset(tmp_path)
    ids = manifest.ids("train")
    make_seam_crf_labels(manifest, ids, cams, tmp_path / "crf", {"crf_alphas": [4, 24], "crf": CRF}, 1)
    files = {i: tmp_path / "crf" / f"{i}.npz" for i in ids}
    plain, twice = (AffinityDataset(manifest, ids, files, 40, 2, 3, None, s)[0] for s in (1.0, 2.0))
    assert plain["image"].shape == twice["image"].shape == (3, 40, 40)
    whole = normalize(pil_resize_image(load_image(manifest.image_file("img0")), (40, 40)))
    flipped = not np.array_equal(twice["image"], whole)
    np.testing.assert_array_equal(twice["image"], whole[:, :, ::-1] if flipped else whole)
    assert not np.array_equal(plain["image"][:, :20, :20], whole[:, :20, :20])  # 1x: the image and padding
    d = load_crf_label(files["img0"])
    la, ha = (d[k].astype(np.float32)[:, :, ::-1] if flipped else d[k].astype(np.float32) for k in ("la", "ha"))
    pooled = [m.reshape(len(m), 5, 4, 5, 4).mean(axis=(2, 4)) for m in (la, ha)]
    want = affinity_labels(affinity_label(*pooled), 2)
    for got, expected in zip((twice["bg"], twice["fg"], twice["neg"]), want):
        np.testing.assert_array_equal(got, expected)

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())["seam"]
    cfg["width"] = 0.0625
    cfg["aff"] |= {"backbone_init": "random", "radius": 2, "epochs": 1, "batch_size": 2, "crop_size": 40, "scale": 2.0}
    train_affinity(manifest, ids, files, cfg, "cpu", tmp_path / "aff.pth", seed=0)
    assert load_affinity(tmp_path / "aff.pth").scale == 2.0
    calls = []

    def spy(model, x, fg_cams, *args, out_size=None):
        calls.append((tuple(x.shape), tuple(fg_cams.shape[-2:]), out_size))
        return seam_walk(model, x, fg_cams, *args, out_size=out_size)

    seam_walk = seam.walk_labels
    monkeypatch.setattr(seam, "walk_labels", spy)
    walk = {"beta": 8, "logt": 2, "alpha": 6}
    seam.make_seam_pseudo_masks(manifest, ids, cams, tmp_path / "aff.pth", tmp_path / "pm", walk, "cpu")
    assert calls == [((1, 3, 40, 40), (20, 20), (20, 20))] * len(ids)
    assert all(load_label_png(tmp_path / "pm" / f"{i}.png").shape == (20, 20) for i in ids)

    old = AffinityNet(0.0625, 2)
    save_model(tmp_path / "old.pth", "affinity", old, {"affinity": {"width": 0.0625, "radius": 2}})
    assert load_affinity(tmp_path / "old.pth").scale == 1.0
    bad = {**cams, "img0": cams["img1"]}
    bad_cam = tmp_path / "cam_small.npz"
    from conta_core.infra.fileio import save_cam

    save_cam(bad_cam, np.array([0]), np.zeros((1, 3, 3), np.float32), np.zeros((1, 10, 10), np.float32))
    bad["img0"] = bad_cam
    with pytest.raises(ValueError, match="img0.*cam_small"):
        seam.make_seam_pseudo_masks(manifest, ids, bad, tmp_path / "aff.pth", tmp_path / "pm_bad", walk, "cpu")
