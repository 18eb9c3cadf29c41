"""Placebo control, the context knobs and the context diagnostics (issue: CONTA's context is inert)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_cls import CLS_CFG, CONTEXT, _disk_set

from conta_core.data.xm import PlaceboFiles, load_xm, placebo_partners, placebo_xm_files
from conta_core.evaluation.context_diagnostics import context_diagnostics, inert_reasons
from conta_core.infra.fileio import load_torch, save_label_png
from conta_core.models.classifier import load_classifier
from conta_core.models.context import ContextModule
from conta_core.steps.train_cls import GRAD_COLUMNS, make_optimizer, train_classifier

torch.set_num_threads(1)


def test_placebo_partners_is_a_fixed_derangement() -> None:
    ids = [f"im{i:03d}" for i in range(50)]
    p = placebo_partners(ids)
    assert sorted(p) == ids and sorted(p.values()) == ids  # a permutation
    assert all(k != v for k, v in p.items())  # nobody keeps its own X_m
    assert placebo_partners(list(reversed(ids))) == p  # depends on the set only
    assert placebo_partners(["a", "b"]) == {"a": "b", "b": "a"}
    with pytest.raises(ValueError, match="at least 2"):
        placebo_partners(["a"])


def test_load_xm_resizes_placebo_files_only(tmp_path) -> None:
    save_label_png(tmp_path / "a.png", np.ones((4, 6), np.uint8))
    save_label_png(tmp_path / "b.png", np.full((8, 8), 2, np.uint8))
    files = {"a": tmp_path / "a.png", "b": tmp_path / "b.png"}
    with pytest.raises(ValueError, match="b.png.*has shape"):
        load_xm(files, "b", (4, 6))
    with pytest.raises(ValueError, match="'c'"):
        load_xm(files, "c", (4, 6))
    plac = placebo_xm_files(files)
    assert isinstance(plac, PlaceboFiles) and plac["a"] == files["b"]
    np.testing.assert_array_equal(load_xm(plac, "a", (4, 6)), np.full((4, 6), 2))


def test_init_std_and_lr_mult() -> None:
    torch.manual_seed(0)
    assert abs(float(ContextModule(8, (16, 16), init_std=0.5).w1.weight.detach().std()) - 0.5) < 0.02
    from conta_core.models.classifier import build_classifier

    cfg = {**CLS_CFG, "lr": 0.01, "lr_new_mult": 10}
    model = build_classifier(cfg, {**CONTEXT, "lr_mult": 5}, 2)
    lrs = [g["lr"] for g in make_optimizer(model, cfg).param_groups]
    assert lrs == pytest.approx([0.01, 0.1, 0.5])
    assert len(make_optimizer(build_classifier(cfg, None, 2), cfg).param_groups) == 2


def test_placebo_trains_on_partner_xm_and_diagnostics_flag_it(tmp_path) -> None:
    """A placebo classifier has the same architecture and RNG use as CONTA; only X_m differs.
    The diagnostics of the default (paper) setting report an inert context."""
    m, xm_files, conf = _disk_set(tmp_path, n=6)
    cfg = {**CLS_CFG, "epochs": 1, "batch_size": 2, "crop_size": 16}
    out = {}
    for mode in ("conta", "placebo"):
        out[mode] = tmp_path / f"{mode}.pth"
        train_classifier(
            m,
            m.ids("train"),
            cfg,
            {**CONTEXT, "mode": mode},
            "cpu",
            out[mode],
            seed=0,
            xm_files=xm_files,
            confounder_path=conf,
            log_csv=tmp_path / f"{mode}.csv",
        )
        log = pd.read_csv(tmp_path / f"{mode}.csv")
        assert set(GRAD_COLUMNS) <= set(log.columns) and (log["grad_w1"] >= 0).all()
    a, b = load_torch(out["conta"])["state_dict"], load_torch(out["placebo"])["state_dict"]
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another X_m, so other weights
    assert load_classifier(out["placebo"], "cpu").context_cfg["mode"] == "placebo"
    d = context_diagnostics(out["conta"], m, m.ids("train"), xm_files, "cpu", tmp_path / "conta.csv")
    assert d["num_images"] == 6 and d["mode"] == "conta"
    assert 0.99 < d["alpha_entropy_mean"] <= 1.0 + 1e-6  # N(0, 0.02) W_1, W_2: uniform attention
    assert d["inert"] and any("uniform" in r for r in d["inert_reasons"])
    for key in ("m_cv", "cam_change", "m_weight_share", "m_logit_share", "grad_w1_last_epoch"):
        assert d[key] is not None and np.isfinite(d[key])


def test_diagnostics_see_signal_when_the_context_matters(tmp_path) -> None:
    """With a large init, a scaled-up M and a classifier that weighs it, alpha varies over
    images and the CAMs change when another image's M is swapped in."""
    m, xm_files, conf = _disk_set(tmp_path, n=6)
    cfg = {**CLS_CFG, "epochs": 1, "batch_size": 2, "crop_size": 16, "freeze_bn": True}  # O(1) features
    path = tmp_path / "loud.pth"
    ctx = {**CONTEXT, "init_std": 1.0, "m_scale": 50.0}
    train_classifier(m, m.ids("train"), cfg, ctx, "cpu", path, seed=0, xm_files=xm_files, confounder_path=conf)
    ckpt = load_torch(path)
    ckpt["state_dict"]["classifier.weight"][:, -1] = 5.0  # the classifier leans on M
    torch.save(ckpt, path)
    d = context_diagnostics(path, m, m.ids("train"), xm_files, "cpu")
    assert d["alpha_entropy_mean"] < 0.99 and d["m_cv"] > 0.01 and d["cam_change"] > 0.001
    assert not d["inert"] and inert_reasons(d) == [] and d["inject"] == "m"


def test_inject_xm_is_judged_without_the_unused_attention(tmp_path) -> None:
    """context.inject xm: alpha is the prior (entropy 1), which is no sign of an inert context;
    the CAMs change when another image's X_m is swapped in."""
    m, xm_files, conf = _disk_set(tmp_path, n=6)
    cfg = {**CLS_CFG, "epochs": 1, "batch_size": 2, "crop_size": 16, "freeze_bn": True}
    path = tmp_path / "xm.pth"
    ctx = {**CONTEXT, "m_scale": 50.0, "inject": "xm"}
    train_classifier(m, m.ids("train"), cfg, ctx, "cpu", path, seed=0, xm_files=xm_files, confounder_path=conf)
    ckpt = load_torch(path)
    ckpt["state_dict"]["classifier.weight"][:, -1] = 5.0
    torch.save(ckpt, path)
    d = context_diagnostics(path, m, m.ids("train"), xm_files, "cpu")
    assert d["inject"] == "xm" and d["alpha_entropy_mean"] == pytest.approx(1.0)
    assert d["cam_change"] > 0.001 and d["m_cv"] > 0.01
    assert not any("uniform" in r for r in d["inert_reasons"]) and not d["inert"]


def test_inspect_flags_and_summary_reports_an_inert_context(tmp_path) -> None:
    from conta_core.infra.fileio import write_json
    from conta_core.report.inspection import INERT, format_inspection, inspect_run
    from conta_core.report.summary import summarize

    run = tmp_path / "run"
    for t in (0, 1):
        (run / f"round{t}").mkdir(parents=True)
    d = {"mode": "conta", "alpha_entropy_mean": 1.0, "m_cv": 2.7e-4, "cam_change": 3e-9}
    d["inert_reasons"] = inert_reasons(d)
    d["inert"] = True
    write_json(run / "round1" / "context_diagnostics.json", d)
    table = inspect_run(run, num_shards=1)
    row = table[table["artifact"] == "context_diagnostics.json"].iloc[0]
    assert row["round"] == 1 and row["status"] == INERT and "uniform" in row["detail"]
    assert "inert: 1" in format_inspection(run, table, num_shards=1)
    s = summarize(run, [0, 1]).set_index("round")
    assert bool(s.loc[1, "ctx_inert"]) and s.loc[1, "ctx_m_cv"] == pytest.approx(2.7e-4)
    assert pd.isna(s.loc[0, "ctx_inert"])


def test_m_scale_auto_calibrates_on_the_first_batch_and_is_saved(tmp_path) -> None:
    from conta_core.models.classifier import build_classifier

    m, xm_files, conf = _disk_set(tmp_path)
    cfg = {**CLS_CFG, "epochs": 1, "batch_size": 2, "crop_size": 16, "freeze_bn": True}
    model = build_classifier(cfg, {**CONTEXT, "m_scale": "auto"}, 2).eval()
    with pytest.raises(ValueError, match="never trained"):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 4, 4))
    out = tmp_path / "auto.pth"
    train_classifier(
        m,
        m.ids("train"),
        cfg,
        {**CONTEXT, "m_scale": "auto"},
        "cpu",
        out,
        seed=0,
        xm_files=xm_files,
        confounder_path=conf,
    )
    loaded = load_classifier(out, "cpu")
    assert float(loaded.m_gain) > 1.0  # M (<= 1/n) is scaled up to the feature RMS
    assert float(load_torch(out)["state_dict"]["m_gain"]) == float(loaded.m_gain)
    old = load_torch(out)
    del old["state_dict"]["m_gain"]  # a checkpoint from before m_gain: the configured scale
    old["config"]["context"]["m_scale"] = 1
    torch.save(old, tmp_path / "old.pth")
    assert float(load_classifier(tmp_path / "old.pth", "cpu").m_gain) == 1.0
    with pytest.raises(ValueError, match="m_scale"):
        build_classifier(cfg, {**CONTEXT, "m_scale": -1}, 2)


def test_cam_change_leaves_out_an_image_whose_cams_are_zero() -> None:
    """An all-zero CAM whose swap is not zero has no relative change (a SEAM run's mean was 2e11
    with the old clamp(1e-12) denominator); the diagnostics leave it out and count it."""
    from conta_core.evaluation.context_diagnostics import relative_change

    cam = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    assert relative_change(cam, cam * 1.5) == pytest.approx(0.5)
    assert relative_change(torch.zeros(2, 2), torch.ones(2, 2)) is None
    assert relative_change(torch.zeros(2, 2), torch.zeros(2, 2)) == 0.0  # zero with either M: no change


def test_cam_change_undefined_everywhere_is_null_and_inert() -> None:
    d = {"mode": "conta", "num_images": 4, "alpha_entropy_mean": 0.5, "m_cv": 0.3, "cam_change": None}
    assert inert_reasons(d) == ["CAM change undefined for all 4 images (their CAMs are zero, the swap's are not)"]
