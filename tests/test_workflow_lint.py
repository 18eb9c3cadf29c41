"""`snakemake --lint` reports nothing for the workflow (irn, amn and seam rule sets); snakefmt leaves it unchanged."""

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


@pytest.mark.parametrize("config", [(), ("method=amn",), ("method=seam",)], ids=["irn", "amn", "seam"])
def test_lint_is_clean(tmp_path: Path, config: tuple[str, ...]):
    proc = run_lint(tmp_path, *config)
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out
    assert proc.returncode == 0, out


def test_snakefmt_leaves_the_workflow_unchanged():
    """The Snakefile and rules/ are snakefmt-formatted (the catalog's convention); fix with
    `snakefmt Snakefile rules/`."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "--diff", "Snakefile", "rules/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def _requirement_names(reqs: list[str]) -> dict[str, str]:
    import re

    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", r.strip())
        out[m.group(1).lower().replace("_", "-")] = m.group(2).replace(" ", "")
    return out


def test_conda_env_pins_exactly_the_project_dependencies():
    """envs/conta.yaml (the `conda:` env of every rule) installs what pyproject.toml requires,
    with the same pins, so the two deployments cannot drift apart."""
    import tomllib
    import yaml

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "conta.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _requirement_names(pip) == _requirement_names(deps)


def test_scripts_import_their_own_workflows_conta_core(tmp_path: Path):
    """What a `conda:` env without the project relies on: every workflow script puts the
    conta_core of ITS workflow folder first on sys.path. A copy of the workflow in another
    folder, run by an isolated interpreter (`-I`: no PYTHONPATH, no cwd on sys.path) from a
    third folder, imports the copy's conta_core, not the installed one."""
    import shutil

    copy = tmp_path / "workflow"
    for part in ("conta_core", "workflow_scripts", "config"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    scripts = sorted((copy / "workflow_scripts").glob("*.py"))
    probe = (
        "import runpy, sys\n"
        "clean = list(sys.path)\n"
        "for path in sys.argv[1:]:\n"
        "    sys.path[:] = clean  # each script on its own: no earlier bootstrap or import left\n"
        "    for name in [m for m in sys.modules if m == 'conta_core' or m.startswith('conta_core.')]:\n"
        "        del sys.modules[name]\n"
        "    runpy.run_path(path, run_name='probe')  # imports, no main()\n"
        "    print(sys.modules['conta_core'].__file__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", probe, *map(str, scripts)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = proc.stdout.split()
    assert len(files) == len(scripts) == 22
    assert all(Path(f).resolve() == (copy / "conta_core" / "__init__.py").resolve() for f in files), files
