"""`snakemake --lint` reports nothing for the workflow (irn and amn rule sets); snakefmt leaves it unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

LINT_TIMEOUT_S = 300  # parsing the workflow only; generous for a loaded 2-core machine


def run_lint(workdir: Path, *config: str) -> subprocess.CompletedProcess:
    """Run `snakemake --lint` on the repository's Snakefile with `workdir` as working directory."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--lint"]
    if config:
        cmd += ["--config", *config]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=LINT_TIMEOUT_S)


@pytest.mark.parametrize("config", [(), ("method=amn",)], ids=["irn", "amn"])
def test_lint_is_clean(tmp_path: Path, config: tuple[str, ...]):
    proc = run_lint(tmp_path, *config)
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out
    assert proc.returncode == 0, out


def test_snakefmt_leaves_the_workflow_unchanged():
    """The Snakefile and rules/ are snakefmt-formatted (the catalog's convention); fix with
    `snakefmt Snakefile rules/`."""
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff", "Snakefile", "rules/"], cwd=REPO,
                          capture_output=True, text=True, timeout=LINT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
