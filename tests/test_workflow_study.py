"""A study through the real workflow (rules/study.smk): the sheet's runs in one DAG, round 0
built once per seed, the paired analysis written, and nothing redone once the measures exist.

The study: the tiny test config (.test/config.yaml, one shard), CONTA vs placebo, two seeds,
one dataset replicate, round 1 (studies/example/ with the base made absolute).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from conta_core.infra.study import read_measures

STUDY = REPO / "studies/example"


def study_copy(workdir: Path, base_extra: dict | None = None) -> Path:
    """studies/example copied into workdir, its base the tiny config (plus base_extra)."""
    folder = workdir / "studies" / "example"
    shutil.copytree(STUDY, folder, ignore=shutil.ignore_patterns("measures", "analysis"))
    base = yaml.safe_load((REPO / ".test/config.yaml").read_text())
    base = {k: v for k, v in base.items() if k not in ("run", "results_dir")} | (base_extra or {})
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    study = yaml.safe_load((folder / "study.yaml").read_text())
    study["base"] = "base.yaml"
    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    return folder / "study.yaml"


def snakemake(
    workdir: Path, study: Path, *args: str, timeout: int = 1800, target: str = "study"
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    cmd += [target, "--config", f"study={study}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_slurm_profile_dry_run_plans_one_round0_per_seed(tmp_path):
    study = study_copy(tmp_path)
    (study.parent / "study.yaml").write_text(study.read_text() + "order: [placebo]\n")
    proc = snakemake(tmp_path, study, "-n", "--profile", str(REPO / "profiles/slurm"), timeout=600)
    out = proc.stdout + proc.stderr
    # `order`: unit (seed 0) before unit (seed 1), placebo before conta, then conta unit by unit
    # (Snakemake job priorities)
    prio = {}
    for block in out.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        prio[rule] = int(block.split("priority: ")[1].split()[0]) if "priority: " in block.split("\n\n")[0] else 0
    assert prio["base_r0_s0_train_cls"] == prio["placebo_s0_train_cls"] == 4 and prio["conta_s0_train_cls"] == 2
    assert prio["base_r0_s1_train_cls"] == prio["placebo_s1_train_cls"] == 3 and prio["conta_s1_train_cls"] == 1
    # the profile's per-rule resources reach the prefixed rules of every run
    assert "rule conta_s0_train_cls:" in out and "runtime=360" in out
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["base_r0_s0_train_cls"] == counts["base_r0_s1_train_cls"] == 1
    assert counts["conta_s0_train_cls"] == counts["placebo_s1_train_cls"] == 1
    assert "conta_s0_prepare_data" not in counts and counts["study_measures"] == 4


@pytest.mark.e2e
def test_study_runs_in_one_dag_and_is_not_redone(tmp_path):
    study = study_copy(tmp_path, {"shards": 1})
    snakemake(tmp_path, study, "--cores", "2")
    results = tmp_path / "results" / "example"
    round0_cls = sorted(p.parent.parent.parent.name for p in results.glob("*/benchmarks/train_cls/round0.tsv"))
    assert round0_cls == ["base_r0_s0", "base_r0_s1"]  # round 0 once per seed, shared by both conditions
    assert len(list(results.glob("*/benchmarks/train_cls/round1.tsv"))) == 4
    folder = study.parent
    measures = read_measures(sorted((folder / "measures").glob("*.csv")))
    assert sorted(measures["run"].unique()) == ["conta_s0", "conta_s1", "placebo_s0", "placebo_s1"]
    assert sorted(measures["round"].unique()) == [0, 1]
    assert list(measures.columns)[-2:] == ["commit", "machine"]  # provenance of every row
    assert measures["commit"].str.fullmatch(r"[0-9a-f]{12}(\+changes)?|unknown").all()
    assert measures["machine"].str.contains("torch").all()
    # round 0 is the same data for both conditions of a seed (common random numbers)
    r0 = measures[measures["round"] == 0].set_index(["seed", "condition"])["cam_miou"].unstack()
    assert (r0["conta"] == r0["placebo"]).all()
    pairs = pd.read_csv(folder / "analysis/pairs.csv")
    assert set(pairs["measure"]) == {"cam_miou", "pseudo_mask_miou", "cf_pseudo_mask_pair"}
    assert (pairs["n"] == 2).all()
    assert (folder / "analysis/pairs.md").stat().st_size > 0 and (folder / "analysis/differences.png").exists()
    conditions = pd.read_csv(folder / "analysis/conditions.csv")
    assert set(conditions["condition"]) == {"conta", "placebo"} and (conditions["n"] == 2).all()
    assert "| conta | 1 |" in (folder / "analysis/conditions.md").read_text()
    assert (
        "2 of 2 units with more than one finished condition have the same round-0 measures"
        in (folder / "analysis/conditions.md").read_text()
    )
    # a fresh machine: no results, only the committed measures and analysis -> nothing to do
    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(tmp_path / ".snakemake")
    proc = snakemake(tmp_path, study, "-n", timeout=600)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # the interim analysis of a study cut short: only the finished runs, pairs where both are
    (folder / "measures" / "placebo_s1.csv").unlink()
    snakemake(tmp_path, study, "--cores", "1", timeout=600, target="study_interim")
    interim = pd.read_csv(folder / "analysis/interim/pairs.csv")
    assert (interim["n"] == 1).all()
    counts = pd.read_csv(folder / "analysis/interim/conditions.csv").groupby("condition")["n"].max()
    assert counts.to_dict() == {"conta": 2, "placebo": 1}
    started = [p.name for p in (tmp_path / "results" / "example").iterdir()]
    assert started == ["logs"]  # only the analysis's log: nothing of the unfinished run was started
