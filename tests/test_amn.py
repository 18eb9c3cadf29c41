"""Tests of AMN (conta_core.models.amn, conta_core.steps.amn): network, loss, training, AMN maps."""

import math
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from resume_helpers import assert_same_weights, stop_then_resume

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import load_cam, load_torch, save_label_png, save_torch
from conta_core.models.amn import AMNNet, build_amn, init_from_classifier, load_amn
from conta_core.models.classifier import build_classifier
from conta_core.report.summary import METHOD_COLUMNS, SUMMARY_COLUMNS, summarize
from conta_core.steps.amn import (
    amn_loss,
    compute_amn_cam,
    make_amn_cams,
    masked_minmax,
    resize_ir_labels,
    train_amn,
)
from conta_core.steps.confounder import save_confounder

torch.set_num_threads(1)

MODEL_CFG = {
    "backbone": "resnet18",
    "backbone_init": "random",
    "pretrained": None,
    "freeze_bn": False,
    "frozen_stages": 0,
    "aspp_rates": [2, 4],
    "dropout": 0.1,
}
TRAIN_CFG = {
    **MODEL_CFG,
    "label_smoothing": 0.1,
    "epochs": 4,
    "batch_size": 4,
    "lr": 1e-4,
    "lr_new_mult": 10,
    "weight_decay": 1e-4,
    "crop_size": 32,
    "scale_range": [0.9, 1.1],
}
CONTEXT = {"mode": "conta", "block": 5, "size": [4, 4], "xm_encoding": "foreground", "prior": "uniform"}
CLS_CFG = {"backbone": "resnet18", "pretrained": None, "freeze_bn": False, "frozen_stages": 0}
INFER_CFG = {"scales": [1.0, 0.5], "flip": True}


def _net(context=None, seed=0) -> AMNNet:
    torch.manual_seed(seed)
    return build_amn(MODEL_CFG, context, 2).eval()


def _toy(tmp_path, n=8, size=32):
    """n images: class 1 = red square (top left), class 2 = blue square (bottom right).

    Returns (manifest, seed label files = the GT masks written as IR labels).
    """
    rng = np.random.default_rng(0)
    labels_cycle = [[1], [2], [1, 2]]
    images, masks, labels, seeds = {}, {}, {}, {}
    for i in range(n):
        image_id = f"im{i}"
        img = rng.integers(90, 130, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for k in labels_cycle[i % 3]:
            sl = (slice(2, 14), slice(2, 14)) if k == 1 else (slice(17, 30), slice(17, 30))
            img[sl] = (230, 20, 20) if k == 1 else (20, 20, 230)
            mask[sl] = k
        Image.fromarray(img).save(tmp_path / f"{image_id}.png")
        save_label_png(tmp_path / f"{image_id}_gt.png", mask)
        seed = mask.copy()
        seed[0, :] = 255  # a band of uncertain pixels
        save_label_png(tmp_path / "seeds" / f"{image_id}.png", seed)
        images[image_id], masks[image_id] = f"{image_id}.png", f"{image_id}_gt.png"
        labels[image_id], seeds[image_id] = labels_cycle[i % 3], tmp_path / "seeds" / f"{image_id}.png"
    ids = sorted(images)
    manifest = Manifest(
        "toy", tmp_path, ["background", "red", "blue"], {"train": ids, "train_eval": ids}, labels, images, masks
    )
    return manifest, seeds


# ----------------------------------------------------------------------------- network


def test_shapes_background_channel_and_context_blocks():
    x, y = torch.randn(2, 3, 48, 40), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert _net()(x, y).shape == (2, 3, 3, 3)  # C + 1 channels at output stride 16
    for block in (5, 3):
        net = _net({**CONTEXT, "block": block})
        assert net.uses_context and net(x, y, torch.zeros(2, 4, 4)).shape == (2, 3, 3, 3)
        with pytest.raises(ValueError, match="xm"):
            net(x, y)
    with pytest.raises(ValueError, match="label vectors"):
        _net()(x, torch.ones(2, 3))
    with pytest.raises(TypeError):
        _net().cam_maps(x)


def test_label_conditioning_gates_the_features():
    net, x = _net(), torch.randn(2, 3, 32, 32)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        out = net(x, y)
        y2 = y.clone()
        y2[1] = torch.tensor([1.0, 1.0])
        out2 = net(x, y2)
        assert torch.equal(out[0], out2[0]) and not torch.allclose(out[1], out2[1])  # per-image labels
        net.label_enc.weight.zero_()
        net.label_enc.bias.zero_()
        gated = net(x, y)  # zero gate: no feature reaches the head, only the ASPP biases remain
        bias = sum(b.bias for b in net.head.branches)
        assert torch.allclose(gated, bias[None, :, None, None].expand_as(gated))


def test_inference_dropout_switch():
    net, x, y = _net(), torch.randn(1, 3, 32, 32), torch.ones(1, 2)
    with torch.no_grad():
        assert torch.equal(net(x, y), net(x, y))
        net.set_inference_dropout(True)
        assert not torch.equal(net(x, y), net(x, y))
        net.set_inference_dropout(False)
        assert not net.dropout.training


def test_init_from_classifier_copies_backbone_and_context():
    torch.manual_seed(1)
    cls = build_classifier(CLS_CFG, CONTEXT, 2)
    net = _net(CONTEXT)
    copied = init_from_classifier(net, cls.state_dict())
    assert "classifier.weight" not in copied and "confounder" not in copied
    assert any(k.startswith("context.") for k in copied)
    for k, v in cls.state_dict().items():
        if k.startswith(("backbone.", "context.")):
            assert torch.equal(net.state_dict()[k], v), k
    bigger = build_classifier({**CLS_CFG, "backbone": "resnet34"}, None, 2).state_dict()
    with pytest.raises(ValueError, match="amn.backbone"):
        init_from_classifier(_net(), bigger)


# ----------------------------------------------------------------------------- loss


def test_loss_zero_logits_is_log_num_classes():
    logits = torch.zeros(1, 4, 2, 2)
    loss, parts = amn_loss(logits, torch.tensor([[[0, 1], [255, 2]]]), eps=0.4)
    assert math.isclose(float(loss), math.log(4), rel_tol=1e-6)
    assert math.isclose(parts["loss_bg"], math.log(4), rel_tol=1e-6)


def test_loss_hand_computed_balanced_and_smoothed():
    # 2 classes, eps 0.2: target 0.8 on the seed class, 0.2 on the other.
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 1] = math.log(3.0)  # pixel 1: p = (1/4, 3/4)
    seeds = torch.tensor([[[0, 1, 1]]])
    ce_bg = math.log(2)  # uniform pixel: -(0.8 + 0.2) log 1/2
    ce_fg1 = -(0.8 * math.log(0.75) + 0.2 * math.log(0.25))
    ce_fg2 = math.log(2)
    expected = 0.5 * ce_bg + 0.5 * (ce_fg1 + ce_fg2) / 2  # bg and fg means weighted 1/2 each
    loss, parts = amn_loss(logits, seeds, eps=0.2)
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    only_fg, parts = amn_loss(logits, torch.tensor([[[255, 1, 1]]]), eps=0.2)
    assert math.isclose(float(only_fg), (ce_fg1 + ce_fg2) / 2, rel_tol=1e-6) and math.isnan(parts["loss_bg"])
    none, _ = amn_loss(logits.requires_grad_(), torch.full((1, 1, 3), 255), eps=0.2)
    none.backward()
    assert float(none.detach()) == 0.0
    with pytest.raises(ValueError, match="IR labels must lie in"):
        amn_loss(torch.zeros(1, 2, 1, 1), torch.tensor([[[5]]]), eps=0.2)


def test_resize_ir_labels_nearest_centres():
    seeds = torch.arange(16).reshape(1, 4, 4)
    assert resize_ir_labels(seeds, (2, 2)).tolist() == [[[5, 7], [13, 15]]]


# ----------------------------------------------------------------------------- training


def test_training_loss_decreases_checkpoint_and_determinism(tmp_path):
    manifest, seeds = _toy(tmp_path)
    ids = manifest.ids("train")
    paths = []
    for run in ("a", "b"):
        out, log_csv = tmp_path / run / "model.pth", tmp_path / run / "log.csv"
        train_amn(manifest, ids, seeds, TRAIN_CFG, CONTEXT, "cpu", out, seed=3, log_csv=log_csv)
        paths.append(out)
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log.columns) == ["epoch", "iter", "loss", "lr", "loss_bg", "loss_fg"] and len(log) == 8
    per_epoch = log.groupby("epoch")["loss"].mean()
    assert per_epoch.iloc[-1] < per_epoch.iloc[0]
    a, b = load_torch(paths[0]), load_torch(paths[1])
    assert a["config"]["context"] is None  # no confounder given: round-0 AMN
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    model = load_amn(paths[0])
    assert isinstance(model, AMNNet) and not model.training and not model.uses_context


def test_train_with_context_and_classifier_init(tmp_path):
    manifest, seeds = _toy(tmp_path, n=4)
    ids = manifest.ids("train")
    torch.manual_seed(0)
    cls = build_classifier(CLS_CFG, CONTEXT, 2)
    save_torch(tmp_path / "cls.pth", {"state_dict": cls.state_dict(), "config": {}})
    conf = tmp_path / "confounder.h5"
    save_confounder(
        conf, np.random.default_rng(0).random((2, 4, 4)).astype(np.float32), np.array([2, 2]), ["red", "blue"], 0, "seg"
    )
    cfg = {**TRAIN_CFG, "epochs": 1, "backbone_init": "classifier"}
    out = tmp_path / "amn.pth"
    train_amn(
        manifest,
        ids,
        seeds,
        cfg,
        CONTEXT,
        "cpu",
        out,
        seed=0,
        classifier_path=tmp_path / "cls.pth",
        xm_files=seeds,
        confounder_path=conf,
    )
    model = load_amn(out)
    assert model.uses_context and torch.count_nonzero(model.confounder) > 0
    with pytest.raises(ValueError, match="no classifier checkpoint"):
        train_amn(manifest, ids, seeds, cfg, None, "cpu", tmp_path / "x.pth", seed=0)
    with pytest.raises(ValueError, match="without X_m"):
        train_amn(manifest, ids, seeds, TRAIN_CFG, CONTEXT, "cpu", tmp_path / "x.pth", seed=0, confounder_path=conf)
    with pytest.raises(ValueError, match="amn.label_smoothing"):
        train_amn(
            manifest,
            ids,
            seeds,
            {k: v for k, v in TRAIN_CFG.items() if k != "label_smoothing"},
            None,
            "cpu",
            tmp_path / "x.pth",
            seed=0,
        )
    with pytest.raises(ValueError, match="no IR label"):
        train_amn(manifest, ids, {}, TRAIN_CFG, None, "cpu", tmp_path / "x.pth", seed=0)
    xm_dir = tmp_path / "amn_cam"
    make_amn_cams(manifest, ids[:1], out, xm_dir, INFER_CFG, "cpu", seeds, xm_files=seeds)
    assert (xm_dir / f"{ids[0]}.npz").exists()
    with pytest.raises(ValueError, match="X_m"):
        make_amn_cams(manifest, ids[1:2], out, xm_dir, INFER_CFG, "cpu", seeds)


def test_loader_workers_deterministic_and_equal_to_main_process(tmp_path):
    """Two runs with 2 DataLoader workers and one seed give identical weights, equal to 0 workers
    (items draw their augmentation from their own (seed, epoch, index) generator)."""
    manifest, seeds = _toy(tmp_path, n=4)
    cfg = {**TRAIN_CFG, "epochs": 2, "batch_size": 2}
    states = {}
    for name, workers in (("w2a", 2), ("w2b", 2), ("w0", 0)):
        out = tmp_path / f"{name}.pth"
        train_amn(manifest, manifest.ids("train"), seeds, cfg, None, "cpu", out, seed=4, num_workers=workers)
        states[name] = load_torch(out)["state_dict"]
    for other in ("w2b", "w0"):
        for k, v in states["w2a"].items():
            assert torch.equal(v, states[other][k]), (other, k)


# ----------------------------------------------------------------------------- AMN maps


def test_masked_minmax_hand_case():
    probs = torch.tensor([[[0.2, 0.4], [0.6, 1.0]]])
    ir_bg = torch.tensor([[True, False], [False, False]])
    out = masked_minmax(probs, ir_bg)
    expected = torch.tensor([[[0.2, 0.2 / (0.8 + 1e-5)], [0.4 / (0.8 + 1e-5), 0.8 / (0.8 + 1e-5)]]])
    assert torch.allclose(out, expected)


def test_compute_amn_cam_channels_follow_the_image_labels():
    net = _net()
    img = np.random.default_rng(0).integers(0, 256, (30, 22, 3), dtype=np.uint8)
    seed = np.zeros((30, 22), np.uint8)
    seed[8:20, 4:16] = 1
    cam, high = compute_amn_cam(net, img, np.array([1]), seed, [1.0, 0.5], True, "cpu")
    assert cam.shape == (1, 8, 6) and high.shape == (1, 30, 22)
    assert high.min() >= 0 and high.max() <= 1
    _, all_fg = compute_amn_cam(net, img, np.array([1]), np.ones_like(seed), [1.0, 0.5], True, "cpu")
    assert all_fg.max() > 0.99 and all_fg.min() < 1e-6  # min-max normalised where the seed is not background
    np.testing.assert_allclose(all_fg[0][seed != 0], high[0][seed != 0], atol=1e-6)
    both, both_high = compute_amn_cam(net, img, np.array([0, 1]), seed, [1.0, 0.5], True, "cpu")
    assert both.shape == (2, 8, 6) and both_high.shape == (2, 30, 22)
    # raw softmax probabilities outside the seed: the conditioning on [0, 1] vs [1] changes them
    assert not np.allclose(both_high[1][seed == 0], high[0][seed == 0])
    empty, empty_high = compute_amn_cam(net, img, np.array([], np.int64), seed, [1.0], True, "cpu")
    assert empty.shape == (0, 8, 6) and empty_high.shape == (0, 30, 22)
    with pytest.raises(ValueError, match="IR label .* != image size"):
        compute_amn_cam(net, img, np.array([1]), seed[:10], [1.0], True, "cpu")


def test_make_amn_cams_standard_format_and_resume(tmp_path):
    manifest, seeds = _toy(tmp_path, n=3)
    ids = manifest.ids("train")
    torch.manual_seed(0)
    model = build_amn(MODEL_CFG, None, 2)
    ckpt = tmp_path / "amn.pth"
    save_torch(ckpt, {"state_dict": model.state_dict(), "config": {"amn": MODEL_CFG, "context": None, "num_fg": 2}})
    out = tmp_path / "amn_cam" / "0"
    make_amn_cams(manifest, ids, ckpt, out, INFER_CFG, "cpu", seeds)
    for image_id in ids:
        d = load_cam(out / f"{image_id}.npz")
        keys = np.asarray(manifest.labels[image_id]) - 1
        assert d["keys"].dtype == np.int64 and d["keys"].tolist() == keys.tolist()
        assert d["cam"].dtype == np.float32 and d["cam"].shape == (len(keys), 8, 8)
        assert d["high_res"].dtype == np.float32 and d["high_res"].shape == (len(keys), 32, 32)
        assert d["high_res"].min() >= 0 and d["high_res"].max() <= 1
    mtime = (out / f"{ids[0]}.npz").stat().st_mtime_ns
    make_amn_cams(manifest, ids, ckpt, out, INFER_CFG, "cpu", seeds)
    assert (out / f"{ids[0]}.npz").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="no IR label"):
        make_amn_cams(manifest, ids, ckpt, tmp_path / "other", INFER_CFG, "cpu", {})
    with pytest.raises(ValueError, match="cam.scales"):
        make_amn_cams(manifest, ids, ckpt, tmp_path / "other", {"flip": True}, "cpu", seeds)


def test_make_amn_cams_is_deterministic(tmp_path):
    manifest, seeds = _toy(tmp_path, n=1)
    torch.manual_seed(0)
    ckpt = tmp_path / "amn.pth"
    save_torch(
        ckpt,
        {
            "state_dict": build_amn(MODEL_CFG, None, 2).state_dict(),
            "config": {"amn": MODEL_CFG, "context": None, "num_fg": 2},
        },
    )
    for run in ("a", "b"):
        make_amn_cams(manifest, ["im0"], ckpt, tmp_path / run, INFER_CFG, "cpu", seeds)
    a, b = load_cam(tmp_path / "a/im0.npz"), load_cam(tmp_path / "b/im0.npz")
    assert np.array_equal(a["high_res"], b["high_res"]) and np.array_equal(a["cam"], b["cam"])


# ----------------------------------------------------------------------------- summary


def test_summary_has_amn_columns_only_with_amn_evals(tmp_path):
    sweep = pd.DataFrame(
        {"threshold": [0.15, 0.25], "miou": [0.4, 0.5], "is_eval_threshold": [True, False], "is_best": [False, True]}
    )
    (tmp_path / "round0").mkdir()
    sweep.to_csv(tmp_path / "round0/cam_eval.csv", index=False)
    assert list(summarize(tmp_path, [0]).columns) == SUMMARY_COLUMNS
    sweep.assign(is_eval_threshold=[False, True]).to_csv(tmp_path / "round0/amn_cam_eval.csv", index=False)
    df = summarize(tmp_path, [0])
    assert list(df.columns) == SUMMARY_COLUMNS + METHOD_COLUMNS
    assert df.loc[0, "amn_cam_miou"] == 50.0 and df.loc[0, "amn_cam_best_threshold"] == 0.25


def test_stopped_by_signal_resumes_to_identical_weights(tmp_path, monkeypatch):
    """SIGTERM after step 3 (mid epoch 1; dropout draws from the global RNG): the rerun resumes
    and ends with the weights and log of an uninterrupted run."""
    manifest, seeds = _toy(tmp_path)

    def train(name):
        out = tmp_path / name / "model.pth"
        train_amn(
            manifest,
            manifest.ids("train"),
            seeds,
            TRAIN_CFG,
            None,
            "cpu",
            out,
            seed=3,
            log_csv=out.with_name("log.csv"),
        )
        return out

    ref = train("ref")
    out = tmp_path / "cut" / "model.pth"
    stop_then_resume(monkeypatch, lambda: train("cut"), out, 3, signal.SIGTERM)
    assert_same_weights(load_torch(ref)["state_dict"], load_torch(out)["state_dict"])
    pd.testing.assert_frame_equal(pd.read_csv(ref.with_name("log.csv")), pd.read_csv(out.with_name("log.csv")))


def test_rule_configs_split_training_from_post_training_keys():
    from conta_core.infra.config import load_config
    from conta_core.infra.rule_configs import POST_KEYS, rule_configs

    cfg = load_config(overrides={"method": "amn"})
    rc = rule_configs(cfg)
    assert not set(POST_KEYS) & set(rc["train_amn"]["amn"]) and rc["train_amn"]["context"] == cfg["context"]
    assert rc["eval_amn_cam"]["eval_threshold"] == cfg["amn"]["eval_threshold"]
    assert rc["make_amn_ir_label"]["fg_threshold"] == cfg["amn"]["ir_fg_threshold"]
    assert rc["make_amn_cam"]["scales"] == cfg["cam"]["scales"]
    assert rc["random_walk"]["cam_power"] == cfg["amn"]["rw_power"]
    assert rc["make_ir_label"] == cfg["ir_label"] and rc["train_cls"]["classifier"] == cfg["classifier"]
    assert "cam_power" not in rule_configs(load_config())["random_walk"]
