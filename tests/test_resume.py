"""Resume after interruption: kill the workflow mid-round (SIGTERM, then kill -9 during
train_seg), rerun the same command; finished artifacts are reused, training resumes from its
checkpoint, and the results equal an uninterrupted run."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, run_snakemake, write_config

from conta_core.infra.fileio import load_torch

pytestmark = pytest.mark.e2e
ROUND0 = Path("results/tiny/round0")


def _start(work: Path, cfg: Path, log: Path | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(cfg),
        "--cores",
        "2",
        "round0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if log is None:
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
        )
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _wait_for(found, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        assert proc.poll() is None, f"workflow ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _finished_files(run: Path) -> dict[Path, float]:
    """Artifacts finished before the first kill: the classifier and the CAM shards."""
    files = [run / "cls/model.pth"] + sorted((run / "cam").glob("*/*.npz"))
    return {f: f.stat().st_mtime_ns for f in files}


def _assert_not_redone(log: str, before: dict[Path, float]) -> None:
    assert "rule train_cls" not in log and "rule make_cam" not in log, "finished steps were recomputed"
    for f, mtime in before.items():
        assert f.stat().st_mtime_ns == mtime, f"{f} was rewritten"


def test_sigterm_then_kill9_mid_round_rerun_resumes_to_the_uninterrupted_results(tiny_run, tmp_path):
    """One round 0, interrupted twice as a scheduler or a node failure would:
    1. SIGTERM to the whole process group once the IR-label step of every shard is under way
       (the classifier and every CAM shard are finished by then: make_ir_label of shard k
       waits only for make_cam of shard k); the same command again continues;
    2. kill -9 while train_seg runs (checkpoint.every 2): Snakemake's lock stays, so the same
       command is refused; the documented recovery is --unlock, then the same command with
       --rerun-incomplete (set in the profiles), which redoes the jobs that were running and
       resumes train_seg from its newest checkpoint.
    Finished artifacts are never recomputed or rewritten; the pseudo-masks and evaluations
    equal the uninterrupted tiny run's, and the resumed DeepLab weights equal those of the same
    job trained without interruption (forced rerun from scratch)."""
    work = tmp_path / "w"
    work.mkdir()
    # train_seg longer than the tiny run's 4 iterations, so that it can be killed mid-way; the
    # checkpoint section is read at run time (not a param), the steps before train_seg are
    # the tiny run's
    extra = {"segmentation": {"iterations": 40}, "checkpoint": {"every": 2, "minutes": 0}}
    cfg = write_config(work / "tiny.yaml", Path("results"), extra=extra)
    run = work / ROUND0
    seg, resume = run / "seg", run / "seg" / "model.pth.resume"

    proc = _start(work, cfg)
    logs = [work / f"results/tiny/logs/make_ir_label/round0_{shard}.log" for shard in (0, 1)]
    _wait_for(lambda: all(p.exists() for p in logs), proc, "the IR-label step of both shards")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    assert (run / "cls/model.pth").exists()
    before = _finished_files(run)
    assert len(before) > 1

    proc = _start(work, cfg, log=tmp_path / "second.log")  # the same command again
    _wait_for(lambda: any(resume.glob("step_*.pth")), proc, "a train_seg checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    _assert_not_redone((tmp_path / "second.log").read_text(), before)
    assert not (seg / "model.pth").exists(), "train_seg finished before the kill"
    killed_at = max(int(p.stem.split("_")[1]) for p in resume.glob("step_*.pth"))
    assert 2 <= killed_at < 40

    refused = run_snakemake(work, cfg, "round0", check=False)
    assert refused.returncode != 0 and "cannot be locked" in refused.stdout + refused.stderr
    run_snakemake(work, cfg, "--unlock")
    out = run_snakemake(work, cfg, "round0", "--rerun-incomplete")
    _assert_not_redone(out.stdout + out.stderr, before)
    log = (work / "results/tiny/logs/train_seg/round0.log").read_text()
    assert f"resuming at step {killed_at}/40" in log, log[-2000:]
    assert not resume.exists(), "finished job left its resume checkpoints"

    # the results equal the uninterrupted tiny run up to train_seg ...
    ref = tiny_run / ROUND0
    files = sorted(ref.glob("pseudo_mask/*/*.png"))
    assert files
    for f in files:
        assert filecmp.cmp(f, run / f.relative_to(ref), shallow=False), f
    for name in ("cam_eval.csv", "pseudo_mask_eval.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(ref / name), pd.read_csv(run / name))
    # ... and train_seg's weights those of the same job trained without interruption
    resumed = load_torch(seg / "model.pth")
    resumed_log = pd.read_csv(seg / "train_log.csv")
    run_snakemake(work, cfg, str(ROUND0 / "seg/model.pth"), "--forcerun", "train_seg")
    assert "resuming" not in (work / "results/tiny/logs/train_seg/round0.log").read_text()
    fresh = load_torch(seg / "model.pth")
    assert resumed["state_dict"].keys() == fresh["state_dict"].keys()
    for k, v in fresh["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    pd.testing.assert_frame_equal(resumed_log, pd.read_csv(seg / "train_log.csv"))
