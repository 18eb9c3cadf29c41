"""End-to-end: the real Snakemake workflow on a tiny generated dataset (marked e2e)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import copy_run, dry_run_jobs, run_snakemake, write_config

pytestmark = pytest.mark.e2e
RUN = Path("results/tiny")


def test_dry_run_round3_prints_plan(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", Path("results"), extra={"rounds": 3})
    out = run_snakemake(tmp_path, cfg, "-n", "round3").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["train_cls"] == "4" and counts["train_seg"] == "4"
    assert counts["make_cam"] == "8"  # 4 rounds x 2 shards
    assert counts["confounder"] == "3"  # rounds 0..2 feed rounds 1..3
    assert counts["pretrain"] == "1"  # one generated stand-in for ImageNet, shared by all rounds
    no_pre = write_config(tmp_path / "n.yaml", Path("results"), extra={"rounds": 3, "pretrain": {"enabled": False}})
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run_snakemake(tmp_path, no_pre, "-n", "round3").stdout, flags=re.M))
    assert "pretrain" not in counts and counts["train_cls"] == "4"


def test_per_shard_jobs_read_only_their_own_shard(tmp_path):
    """make_ir_label / random_walk shard k read cam/k (the same sorted train ids, sharded the
    same way); eval_cam and train_irn read every shard; make_cam reads all of round t-1's X_m
    (the placebo partner may sit in any shard)."""
    cfg = write_config(tmp_path / "c.yaml", Path("results"), extra={"rounds": 1, "shards": 3})
    plan = run_snakemake(tmp_path, cfg, "-n", "round1").stdout
    seen = set()
    for job in dry_run_jobs(plan):
        rule, ins, output = job["rule"], job["input"].split(", "), job["output"]
        if rule in ("make_ir_label", "random_walk"):
            shard = output.rsplit("/", 1)[1]
            t = re.search(r"round(\d+)/", output).group(1)
            assert [i for i in ins if "/cam/" in i] == [f"results/tiny/round{t}/cam/{shard}"], (rule, ins)
            seen.add(rule)
        if rule in ("eval_cam", "train_irn"):
            assert len([i for i in ins if re.search(r"/(cam|ir_label)/\d+$", i)]) == 3, (rule, ins)
            seen.add(rule)
        if rule == "make_cam" and "round1/" in output:
            assert len([i for i in ins if "round0/seg_pred/train/" in i]) == 3, ins
            seen.add(rule)
    assert seen == {"make_ir_label", "random_walk", "eval_cam", "train_irn", "make_cam"}


def test_training_jobs_log_their_command_with_the_round_seed(tiny_run):
    """Every script job's log starts with its equivalent command line (the `script:` adapter);
    training seeds are seed + t (seed_per_round, the default)."""
    for script in ("train_cls", "train_seg", "train_irn"):
        for t in range(3):
            first = (tiny_run / RUN / f"logs/{script}/round{t}.log").read_text().splitlines()[0]
            assert first.startswith(f"{script}.py ") and f"--seed {t} " in first + " ", first
            assert "--checkpoint " in first and "--loader-workers 0" in first


def test_round2_produces_every_artifact_and_summary(tiny_run):
    run = tiny_run / RUN
    from conta_core.data.manifest import Manifest

    m = Manifest.load(run / "data/manifest.json")
    n_train = len(m.ids("train"))
    for t in range(3):
        rd = run / f"round{t}"
        for what, ext in (("cam", "npz"), ("ir_label", "png"), ("pseudo_mask", "png")):
            files = [f for s in (0, 1) for f in (rd / what / str(s)).glob(f"*.{ext}")]
            assert len(files) == n_train, (t, what)
        assert len(list((rd / "seg_pred/val").glob("*/*.png"))) == len(m.ids("val"))
        for f in (
            "cls/model.pth",
            "irn/model.pth",
            "seg/model.pth",
            "cam_eval.csv",
            "pseudo_mask_eval.csv",
            "seg_eval_val.csv",
        ):
            assert (rd / f).exists(), (t, f)
    for t in (0, 1):  # confounders of rounds 0, 1 feed rounds 1, 2
        with h5py.File(run / f"round{t}/confounder.h5") as h:
            c = h["C"][:]
            assert c.shape == (m.num_fg, 8, 8)
            assert np.all((c >= 0) & (c <= 1))
    from conta_core.infra.fileio import load_torch

    weights = RUN / "pretrain/resnet18.pth"  # pretrain.enabled: classifier and DeepLab start from it
    assert load_torch(run / "round0/cls/model.pth")["config"]["classifier"]["pretrained"] == str(weights)
    assert load_torch(run / "round1/seg/model.pth")["config"]["pretrained"] == str(weights)
    assert not (run / "round0/summary.csv").exists()  # only the requested round's table
    summary = pd.read_csv(run / "round2/summary.csv")
    assert list(summary["round"]) == [0, 1, 2]
    for col in ("cam_miou", "pseudo_mask_miou", "seg_val_miou"):
        assert summary[col].between(0, 100).all(), col
    for t in (1, 2):  # every context round gets its diagnostics, and the summary shows them
        diag = json.loads((run / f"round{t}/context_diagnostics.json").read_text())
        assert diag["mode"] == "conta" and diag["num_images"] == 16 and 0 <= diag["alpha_entropy_mean"] <= 1 + 1e-6
    assert summary["ctx_inert"].isna().tolist() == [True, False, False]


def test_every_model_file_carries_its_kind(tiny_run):
    """The five trainers write one layout (conta_core.infra.checkpoint) with the kind of network."""
    from conta_core.infra.checkpoint import load_model

    run = tiny_run / RUN
    files = {"pretrain/resnet18.pth": "pretrain"}
    files.update(
        {
            f"round{t}/{d}/model.pth": k
            for t in range(3)
            for d, k in (("cls", "classifier"), ("irn", "irn"), ("seg", "segmentation"))
        }
    )
    for rel, kind in files.items():
        assert load_model(run / rel, kind, required=("config",))["kind"] == kind, rel


GOLDEN_DIGESTS = Path(__file__).parent / "golden" / "tiny_run_digests.json"


def test_tiny_run_matches_the_recorded_digests(tiny_run):
    """Results change only when meant to: every result file of the tiny round2 run has the
    content recorded in tests/golden/tiny_run_digests.json (conta_core.report.run_digest: pixels,
    arrays, tensors, tables). The set of files is checked everywhere; the content only on the
    machine fingerprint it was recorded on (other CPUs and library builds round floats
    differently). After a change meant to change results, re-record with
    tools/run_digests.py --write and say why in the commit."""
    from conta_core.report.run_digest import compare, machine_fingerprint, run_digests

    golden = json.loads(GOLDEN_DIGESTS.read_text())
    got = run_digests(tiny_run / RUN)
    diff = compare(got, golden["files"])
    assert not diff["only_a"] and not diff["only_b"], diff
    here = machine_fingerprint()
    if here != golden["machine"]:
        pytest.skip(f"digests recorded on {golden['machine']}, this machine is {here}: float rounding may differ")
    assert not diff["differ"], f"{len(diff['differ'])} of {len(got)} files changed content: {diff['differ'][:20]}"


def test_rerun_of_finished_target_is_a_quick_noop(tiny_run):
    t0 = time.monotonic()
    out = run_snakemake(tiny_run, tiny_run / "tiny.yaml", "round2")
    assert "Nothing to be done" in out.stdout + out.stderr
    assert time.monotonic() - t0 < 60


def test_forcerun_redoes_only_downstream(tiny_run, tmp_path):
    work = copy_run(tiny_run, tmp_path / "w")
    out = run_snakemake(work, work / "tiny.yaml", "-n", "round0", "--forcerun", "random_walk").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert "train_cls" not in counts and "make_cam" not in counts and "train_irn" not in counts
    assert counts["random_walk"] == "2" and counts["train_seg"] == "1"


def test_config_change_reruns_only_the_affected_steps(tiny_run, tmp_path):
    work = copy_run(tiny_run, tmp_path / "w")
    cfg = write_config(work / "tiny.yaml", Path("results"), extra={"random_walk": {"beta": 8}})
    out = run_snakemake(work, cfg, "-n", "round0").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert "train_cls" not in counts and "make_cam" not in counts and "make_ir_label" not in counts
    assert counts["random_walk"] == "2"


def test_report_zip_of_a_finished_run(tiny_run, tmp_path):
    """`snakemake --report report.zip round2` packs the figures of a finished run (catalog convention)."""
    import zipfile

    out = tmp_path / "report.zip"
    run_snakemake(tiny_run, tiny_run / "tiny.yaml", "--report", str(out), "round2")
    names = zipfile.ZipFile(out).namelist()
    assert any(n.endswith("report.html") for n in names) and any("miou.png" in n for n in names)


def test_second_run_reuses_the_cached_pretraining(tmp_path):
    """Two runs of one results folder with the same pretrain settings pre-train once
    (pretrain_cache); the second run's weights are the first run's, byte for byte."""
    for run in ("a", "b"):
        cfg = write_config(tmp_path / f"{run}.yaml", Path("results"), run=run)
        run_snakemake(tmp_path, cfg, f"results/{run}/pretrain/resnet18.pth")
    log_b = (tmp_path / "results/b/logs/pretrain/resnet18.log").read_text()
    assert "pretrain: reused results/pretrain_cache/resnet18-" in log_b
    assert "pretrain: reused" not in (tmp_path / "results/a/logs/pretrain/resnet18.log").read_text()
    w = [(tmp_path / f"results/{r}/pretrain/resnet18.pth").read_bytes() for r in ("a", "b")]
    assert w[0] == w[1]


def test_exact_adjustment_runs_in_the_workflow(tiny_run, tmp_path):
    """context.adjustment: exact on a finished run: round 1's classifier and what follows it
    run again, write CAMs, the measures and the diagnostics, and the checkpoint records the
    setting. `--rerun-triggers mtime` keeps round 0, whose params also hold the context
    section, and `--forcerun` on round 1's classifier redoes it and what reads it."""
    from conta_core.infra.checkpoint import load_model
    from conta_core.models.classifier import load_classifier

    work = copy_run(tiny_run, tmp_path / "w")
    cfg = write_config(work / "tiny.yaml", Path("results"), extra={"context": {"adjustment": "exact"}})
    targets = [str(RUN / "round1" / f) for f in ("cam_eval.csv", "confounding_cam.json", "context_diagnostics.json")]
    args = ("--rerun-triggers", "mtime", "--forcerun", str(RUN / "round1" / "cls" / "model.pth"), "--", *targets)
    dry = run_snakemake(work, cfg, "-n", *args).stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry, flags=re.M))
    assert counts["train_cls"] == "1" and counts["make_cam"] == "2" and "train_seg" not in counts  # round 1 only
    run_snakemake(work, cfg, *args)
    model = work / RUN / "round1" / "cls" / "model.pth"
    assert load_model(model, "classifier")["config"]["context"]["adjustment"] == "exact"
    assert load_classifier(model).exact
    measures = json.loads((work / RUN / "round1" / "confounding_cam.json").read_text())
    assert measures["stage"] == "cam" and set(measures["pair_confusion"]) == {
        "horse->person", "person->horse", "car->tyre", "tyre->car"
    }  # fmt: skip
