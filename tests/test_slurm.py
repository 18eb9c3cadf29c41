"""The tiny workflow through `--profile profiles/slurm` on a real (one-node) SLURM cluster.

Needs a running cluster (`.ci/local_slurm.sh install && .ci/local_slurm.sh up`, which
`.ci/run` does). Without one the test is skipped, unless CONTA_REQUIRE_SLURM=1 (CI), where
it fails. The profile is the repository's, with the cluster-specific values (partition,
memory, status command) adapted exactly as docs/running.md ("Running at scale") tells users to.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


def _cluster_partition() -> str | None:
    """The default partition of a responsive cluster with an idle node, else None."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    for line in out.stdout.splitlines():
        part, state = line.split()
        if state in ("idle", "mixed") and part.endswith("*"):
            return part.rstrip("*")
    return None


def _jobcomp_log() -> Path | None:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    m = re.search(r"^JobCompLoc\s*=\s*(\S+)", out, flags=re.M)
    return Path(m.group(1)) if m else None


@pytest.fixture(scope="module")
def partition() -> str:
    part = _cluster_partition()
    if part is None:
        if os.environ.get("CONTA_REQUIRE_SLURM") == "1":
            pytest.fail("CONTA_REQUIRE_SLURM=1 but no SLURM cluster answers (sinfo)")
        pytest.skip("no SLURM cluster (start one with .ci/local_slurm.sh up)")
    return part


def adapt_profile(dst: Path, partition: str, logdir: Path) -> Path:
    """profiles/slurm adapted to the local test cluster (one partition, no accounting)."""
    prof = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    prof["default-resources"].update({"slurm_partition": partition, "mem_mb": 1500, "runtime": 30, "cpus_per_task": 1})
    for res in prof.get("set-resources", {}).values():
        res.update({"slurm_partition": partition, "mem_mb": 1500})
    prof["set-threads"] = {rule: 1 for rule in prof.get("set-threads", {})}
    prof.update(
        {
            "jobs": 4,
            "latency-wait": 5,
            "retries": 0,
            "slurm-logdir": str(logdir),
            "slurm-keep-successful-logs": True,
            "slurm-no-account": True,  # no accounting database on the test cluster
            "slurm-status-command": "squeue",  # sacct needs accounting; MinJobAge keeps jobs visible
            "slurm-init-seconds-before-status-checks": 5,
        }
    )
    dst.mkdir(parents=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(prof))
    return dst


def test_round0_through_sbatch_equals_local_run(partition, tiny_run, tmp_path):
    work = tmp_path / "slurm_work"
    work.mkdir()
    cfg = write_config(work / "tiny.yaml", Path("results"), extra={"gpus_per_job": 0})
    profile = adapt_profile(tmp_path / "profile", partition, tmp_path / "slurm_logs")
    jobcomp = _jobcomp_log()
    before = jobcomp.read_text().count("JobState=COMPLETED") if jobcomp and jobcomp.exists() else 0

    proc = run_snakemake(work, cfg, "round0", "--profile", str(profile), timeout=1800)
    print(proc.stdout[-3000:], proc.stderr[-3000:])

    # every non-local job went through sbatch: SLURM logged it, per rule
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)
    assert len(submitted) >= 10, "expected the round-0 jobs to be submitted with sbatch"
    rule_logs = {p.name for p in (tmp_path / "slurm_logs").iterdir()}
    for rule in ("train_cls", "make_cam", "make_ir_label", "train_irn", "random_walk", "train_seg", "infer_seg"):
        assert rule in rule_logs or any(rule in n for n in rule_logs), (rule, rule_logs)
    if jobcomp and jobcomp.exists():
        completed = jobcomp.read_text().count("JobState=COMPLETED") - before
        assert completed >= len(submitted)

    # same results as the local run of the same config (CPU runs are deterministic)
    local, remote = tiny_run / "results/tiny/round0", work / "results/tiny/round0"
    for what in ("pseudo_mask", "seg_pred/val"):
        for f in sorted(local.glob(f"{what}/*/*.png")):
            g = remote / f.relative_to(local)
            assert filecmp.cmp(f, g, shallow=False), f"{g} differs from the local run"
    for name in ("cam_eval.csv", "pseudo_mask_eval.csv", "seg_eval_val.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(local / name), pd.read_csv(remote / name))
