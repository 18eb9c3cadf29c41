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

from conftest import REPO, run_snakemake, write_config

pytestmark = pytest.mark.e2e
ROUND0 = Path("results/tiny/round0")


def _start(work: Path, cfg: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(cfg), "--cores", "2", "round0"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "workflow ended before the kill point"
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.2)


def _finished_files(run: Path) -> dict[Path, float]:
    """Artifacts finished before the kill: the classifier and the CAM shards."""
    files = [run / "cls/model.pth"] + sorted((run / "cam").glob("*/*.npy"))
    return {f: f.stat().st_mtime_ns for f in files}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_kill_mid_round_then_rerun_same_command(sig, tiny_run, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    cfg = write_config(work / "tiny.yaml", Path("results"))
    proc = _start(work, cfg)
    # kill once the IR-label step is under way: classifier and CAMs are finished by then
    _wait_for(work / "results/tiny/logs/make_ir_label", proc)
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
