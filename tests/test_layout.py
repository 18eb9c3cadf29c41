"""The run layout (conta_core.infra.layout): every artifact path of a run, from one place."""

from __future__ import annotations

import pytest

from conta_core.infra.layout import EVALS, MODELS, STAGES, RunLayout, for_method


def test_paths_of_a_run_and_wildcard_patterns():
    L = RunLayout("results/r")
    assert L.manifest == "results/r/data/manifest.json"
    assert L.pretrain("resnet18") == "results/r/pretrain/resnet18.pth"
    assert L.shard_dir(2, "cam", 1) == "results/r/round2/cam/1"
    assert L.shard_dirs(0, "seg_pred_val", [0, 1]) == [
        "results/r/round0/seg_pred/val/0",
        "results/r/round0/seg_pred/val/1",
    ]
    assert L.seg_pred_dir(0, "val", 1) == L.shard_dir(0, "seg_pred_val", 1)
    assert L.model("{t}", "cls") == "results/r/round{t}/cls/model.pth"  # a Snakemake output pattern
    assert L.train_log(1, "amn") == "results/r/round1/amn/train_log.csv"
    assert L.eval_csv(1, "seg_val") == L.seg_eval_csv(1, "val") == "results/r/round1/seg_eval_val.csv"
    assert L.confounder(0) == "results/r/round0/confounder.h5" and L.diagnostics(1).endswith(
        "round1/context_diagnostics.json"
    )
    assert L.summary() == "results/r/summary.csv" and L.summary(3) == "results/r/round3/summary.csv"
    assert L.log("prepare_data") == "results/r/logs/prepare_data.log"
    assert L.log("make_cam", "round0_1") == "results/r/logs/make_cam/round0_1.log"


@pytest.mark.parametrize(
    "path",
    [
        "results/r/round3/figures/samples",
        "results/r/round0/cls/model.pth",
        "results/r/data/manifest.json",
        "results/r/summary.csv",
        "results/r/pretrain/x.pth",
    ],
)
def test_run_of_finds_the_run_folder_of_any_artifact(path):
    assert RunLayout.run_of(path) == "results/r"


def test_run_of_rejects_a_path_outside_a_run():
    with pytest.raises(ValueError, match="not inside a run folder"):
        RunLayout.run_of("somewhere/else.txt")


def test_tables_per_method():
    assert [s.name for s in for_method(STAGES, "irn")] == [
        "cam",
        "ir_label",
        "pseudo_mask",
        "seg_pred_train",
        "seg_pred_val",
    ]
    assert {"amn_cam", "amn_ir_label"} <= {s.name for s in for_method(STAGES, "amn")}
    assert [m.name for m in for_method(MODELS, "irn")] == ["cls", "irn", "seg"]
    assert [e.file for e in for_method(EVALS, "amn")] == [
        "cam_eval.csv",
        "amn_cam_eval.csv",
        "pseudo_mask_eval.csv",
        "seg_eval_train.csv",
        "seg_eval_val.csv",
    ]
    assert [m.name for m in for_method(MODELS, "seam")] == ["cls", "aff", "seg"]
    assert "amn_cam" not in {s.name for s in for_method(STAGES, "seam")}
    with pytest.raises(ValueError, match="config key method"):
        for_method(STAGES, "sec")


def test_describe_reads_round_and_name_from_a_path():
    from conta_core.infra.layout import RunLayout

    L = RunLayout("/r/default")
    assert RunLayout.describe(L.eval_csv(2, "cam")) == (2, "cam")
    assert RunLayout.describe(L.eval_csv(0, "pseudo_mask")) == (0, "pseudo_mask")
    assert RunLayout.describe(L.seg_eval_csv(1, "val")) == (1, "seg_val")
    assert RunLayout.describe(L.train_log(3, "irn")) == (3, "irn")
    for bad in ("/r/default/round1/summary.csv", "/elsewhere/cam_eval.csv"):
        with pytest.raises(ValueError, match="not an evaluation table or training log"):
            RunLayout.describe(bad)


def test_shared_prefix_puts_data_pretrain_and_round0_under_the_base():
    L = RunLayout("results/s/conta_s0", shared="results/s/base_r0_s0")
    assert L.manifest == "results/s/base_r0_s0/data/manifest.json"
    assert L.pretrain("resnet18") == "results/s/base_r0_s0/pretrain/resnet18.pth"
    for t in (0, "0"):
        assert L.model(t, "cls") == "results/s/base_r0_s0/round0/cls/model.pth"
        assert L.shard_dir(t, "pseudo_mask", 1) == "results/s/base_r0_s0/round0/pseudo_mask/1"
        assert L.eval_csv(t, "cam") == "results/s/base_r0_s0/round0/cam_eval.csv"
    # patterns and later rounds stay in the run's folder, so the run's rules never make base files
    assert L.model("{t}", "cls") == "results/s/conta_s0/round{t}/cls/model.pth"
    assert L.model(1, "cls") == "results/s/conta_s0/round1/cls/model.pth"
    # the round-0 confounder set (it depends on context.confounder_source), summaries, figures, logs: own
    assert L.confounder(0) == "results/s/conta_s0/round0/confounder.h5"
    assert L.summary(0) == "results/s/conta_s0/round0/summary.csv"
    assert L.figure(0, "miou.png") == "results/s/conta_s0/round0/figures/miou.png"
    assert L.log("prepare_data") == "results/s/conta_s0/logs/prepare_data.log"
    assert RunLayout("results/x").model(0, "cls") == "results/x/round0/cls/model.pth"
