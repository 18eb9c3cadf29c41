"""Shared fixtures: a tiny configuration and a Snakemake runner for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# Tiny but complete: every stage runs, each on a few 48 px images, in seconds.
TINY_OVERRIDES: dict = {
    "shards": 2,
    "threads": 1,
    "rounds": 2,
    "device": "cpu",
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"num_train": 16, "num_val": 6, "image_size": 48, "seed": 0},
    },
    "pretrain": {"num_images": 16, "image_size": 32, "epochs": 1, "batch_size": 8},
    "classifier": {"epochs": 1, "batch_size": 8, "crop_size": 48},
    "cam": {"scales": [1.0, 0.5]},
    "irn": {"epochs": 1, "batch_size": 8, "crop_size": 48},
    "random_walk": {"exp_times": 4},
    "segmentation": {"iterations": 4, "batch_size": 4, "crop_size": 48},
    "context": {"size": [8, 8]},
}


def write_config(path: Path, results_dir: Path, run: str = "tiny", extra: dict | None = None) -> Path:
    """Write a tiny overlay config (merged over config/config.yaml by Snakemake)."""
    from conta_core.config import deep_merge

    cfg = deep_merge(TINY_OVERRIDES, {"results_dir": str(results_dir), "run": run})
    if extra:
        cfg = deep_merge(cfg, extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True, timeout: int = 1200):
    """Run the real workflow in `workdir` with `configfile`; returns the CompletedProcess."""
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(configfile), "--cores", "2", *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", Path("results"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny `round2` run (workdir with results/tiny and .snakemake), built once.

    Tests that modify a run copy it first (`copy_run`).
    """
    work = tmp_path_factory.mktemp("tiny_run")
    cfg = write_config(work / "tiny.yaml", Path("results"))
    run_snakemake(work, cfg, "round2")
    return work


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a workdir with its Snakemake metadata, keeping modification times."""
    import shutil

    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst
