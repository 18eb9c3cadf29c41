"""Resume after interruption: kill the workflow mid-round (SIGTERM, SIGKILL), rerun the
same command; finished artifacts are reused and the results equal an uninterrupted run."""

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


def _start(work: Path, cfg: Path) -> subprocess.Popen:
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
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "workflow ended before the kill point"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.2)


def _finished_files(run: Path) -> dict[Path, float]:
    """Artifacts finished before the kill: the classifier and the CAM shards."""
    files = [run / "cls/model.pth"] + sorted((run / "cam").glob("*/*.npz"))
    return {f: f.stat().st_mtime_ns for f in files}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_kill_mid_round_then_rerun_same_command(sig, tiny_run, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    cfg = write_config(work / "tiny.yaml", Path("results"))
    proc = _start(work, cfg)
    # kill once the IR-label step of every shard is under way: the classifier and every CAM
    # shard are finished by then (make_ir_label of shard k waits only for make_cam of shard k,
    # so one shard's IR labels can start while another shard's CAMs still run)
    for shard in (0, 1):
        _wait_for(work / f"results/tiny/logs/make_ir_label/round0_{shard}.log", proc)
    time.sleep(0.5)
    os.killpg(proc.pid, sig)  # the whole process group, as a scheduler or Ctrl-C would
    proc.wait(timeout=120)
    assert (work / ROUND0 / "cls/model.pth").exists()
    before = _finished_files(work / ROUND0)
    assert len(before) > 1

    if sig == signal.SIGKILL:
        # SIGKILL leaves Snakemake's directory lock (no handler can run): the documented
        # recovery is --unlock, then the same command with --rerun-incomplete (set in the
        # profiles), which redoes the jobs that were running instead of trusting them.
        refused = run_snakemake(work, cfg, "round0", check=False)
        assert refused.returncode != 0 and "cannot be locked" in refused.stdout + refused.stderr
        run_snakemake(work, cfg, "--unlock")
        out = run_snakemake(work, cfg, "round0", "--rerun-incomplete")
    else:
        out = run_snakemake(work, cfg, "round0")  # the same command again
    log = out.stdout + out.stderr
    assert "rule train_cls" not in log and "rule make_cam" not in log, "finished steps were recomputed"
    for f, mtime in before.items():
        assert f.stat().st_mtime_ns == mtime, f"{f} was rewritten"

    # results equal the uninterrupted run of the same config
    ref = tiny_run / ROUND0
    for what in ("pseudo_mask", "seg_pred/val"):
        files = sorted(ref.glob(f"{what}/*/*.png"))
        assert files
        for f in files:
            assert filecmp.cmp(f, work / ROUND0 / f.relative_to(ref), shallow=False), f
    for name in ("cam_eval.csv", "pseudo_mask_eval.csv", "seg_eval_val.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(ref / name), pd.read_csv(work / ROUND0 / name))


def test_kill9_mid_train_seg_then_rerun_resumes_to_identical_weights(tmp_path):
    """kill -9 the workflow while train_seg runs (checkpoint.every 2); the same command again
    resumes train_seg from its newest checkpoint, and the final weights equal those of the
    same job trained without interruption (forced rerun from scratch)."""
    work = tmp_path / "w"
    work.mkdir()
    extra = {"segmentation": {"iterations": 40}, "checkpoint": {"every": 2, "minutes": 0}}
    cfg = write_config(work / "tiny.yaml", Path("results"), extra=extra)
    seg = work / ROUND0 / "seg"
    resume = seg / "model.pth.resume"
    proc = _start(work, cfg)
    deadline = time.monotonic() + 600
    while not list(resume.glob("step_*.pth")):
        assert proc.poll() is None, "workflow ended before train_seg wrote a checkpoint"
        assert time.monotonic() < deadline, "timed out waiting for a train_seg checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    assert not (seg / "model.pth").exists(), "train_seg finished before the kill"
    killed_at = max(int(p.stem.split("_")[1]) for p in resume.glob("step_*.pth"))
    assert 2 <= killed_at < 40

    run_snakemake(work, cfg, "--unlock")
    run_snakemake(work, cfg, "round0", "--rerun-incomplete")
    log = (work / "results/tiny/logs/train_seg/round0.log").read_text()
    assert f"resuming at step {killed_at}/40" in log, log[-2000:]
    assert not resume.exists(), "finished job left its resume checkpoints"
    resumed = load_torch(seg / "model.pth")
    resumed_log = pd.read_csv(seg / "train_log.csv")

    run_snakemake(work, cfg, str(ROUND0 / "seg/model.pth"), "--forcerun", "train_seg")
    assert "resuming" not in (work / "results/tiny/logs/train_seg/round0.log").read_text()
    fresh = load_torch(seg / "model.pth")
    assert resumed["state_dict"].keys() == fresh["state_dict"].keys()
    for k, v in fresh["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    pd.testing.assert_frame_equal(resumed_log, pd.read_csv(seg / "train_log.csv"))
