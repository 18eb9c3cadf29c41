"""Shared fixtures: a tiny configuration and a Snakemake runner for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# Tiny but complete: every stage runs, each on a few 48 px images, in seconds. The settings
# are the workflow's test config (.test/config.yaml) without its run name and results folder.
TINY_OVERRIDES: dict = {
    k: v for k, v in yaml.safe_load((REPO / ".test/config.yaml").read_text()).items() if k not in ("run", "results_dir")
}


def git(repo: Path, *args: str) -> str:
    """`git -C repo args` with a throwaway identity and no user or system config; its stdout."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env).stdout


def write_config(path: Path, results_dir: Path, run: str = "tiny", extra: dict | None = None) -> Path:
    """Write a tiny overlay config (merged over config/config.yaml by Snakemake)."""
    from conta_core.infra.config import deep_merge

    cfg = deep_merge(TINY_OVERRIDES, {"results_dir": str(results_dir), "run": run})
    if extra:
        cfg = deep_merge(cfg, extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True, timeout: int = 1200):
    """Run the real workflow in `workdir` with `configfile`; returns the CompletedProcess."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def dry_run_jobs(stdout: str) -> list[dict[str, str]]:
    """The jobs of a `snakemake -n` listing: [{"rule", "input", "output", "wildcards"}, ...]."""
    import re

    jobs = []
    for block in re.split(r"^(?:local)?rule ", stdout, flags=re.M)[1:]:
        head, _, body = block.partition(":\n")
        job = {"rule": head.strip()}
        for key in ("input", "output", "wildcards"):
            m = re.search(rf"^\s+{key}: (.*)$", body, flags=re.M)
            job[key] = m.group(1) if m else ""
        jobs.append(job)
    return jobs


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


WORKFLOW_MODULES = ("test_workflow", "test_resume", "test_slurm")  # modules that run the real workflow


def pytest_collection_modifyitems(config, items):
    """Fast unit tests first, then the end-to-end workflow tests (marked e2e / slurm or in a
    WORKFLOW_MODULES file), so a broken unit shows up in minutes; order within each kept."""

    def slow(item) -> bool:
        name = Path(str(item.fspath)).stem
        return bool(item.get_closest_marker("e2e") or item.get_closest_marker("slurm")) or name.startswith(
            WORKFLOW_MODULES
        )

    items[:] = [i for i in items if not slow(i)] + [i for i in items if slow(i)]
