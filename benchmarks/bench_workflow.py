#!/usr/bin/env python
"""Benchmark: the workflow's own cost at the sizes users run (issue: VOC has 10,582 + 1,464 +
1,449 images; the DAG does not depend on the image count, only on rounds x shards).

Measures, for each --shards value: the job count of `snakemake -n round3`, the wall time of
that dry run (DAG build from nothing), and the wall time of a no-op run of the same target
once every output exists (outputs created by `--touch` after a `--dry-run`-planned tree of
empty files, so nothing is trained); and the fixed cost of one job: a workflow script's
start-up (interpreter + torch + conta_core imports, `--help`), and Snakemake's own start-up
(`snakemake --version`), which every dry run and no-op pays.

Snakemake's start-up includes `scontrol show config`, which the SLURM executor plugin runs when
Snakemake imports it (every run, whatever the executor). Where the SLURM client is configured
but its controller does not answer (a slurm.conf left on a workstation, a login node cut off
from slurmctld), that command retries for about 9 s; without scontrol, or with a live
controller, it returns at once. The benchmark therefore also reports the wall time of that
command (`scontrol_s`, null without scontrol on PATH).

The other fixed cost of a CNN job is its model load: `model_load_s` times `load_classifier`
(ResNet-50 CAM net) and `load_deeplab` (DeepLab-v2 ResNet-101 MSC) of the VOC config
(config/voc12.yaml on config/config.yaml, random weights) in a fresh process each, after the
imports; the checkpoint file was just written, so it is read from the page cache (a cold
cluster file system adds its read time, size in `model_mib`).

CLI: python benchmarks/bench_workflow.py [--shards 2 16 64] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(work: Path, cfg: Path, *args: str) -> tuple[float, str]:
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
        *args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def materialise(work: Path, plan: str) -> int:
    """Create every output of the planned jobs as an empty file or folder (no training)."""
    n = 0
    for line in re.findall(r"^\s+output: (.*)$", plan, flags=re.M):
        for path in line.split(", "):
            p = work / path.strip()
            if p.suffix:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.touch()
            else:
                p.mkdir(parents=True, exist_ok=True)
            n += 1
    return n


def measure(shards: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cfg = yaml.safe_load((REPO / ".test/config.yaml").read_text())
        cfg.update({"shards": shards, "rounds": rounds})
        (work / "c.yaml").write_text(yaml.safe_dump(cfg))
        dry_s, plan = snakemake(work, work / "c.yaml", "-n", f"round{rounds}")
        jobs = int(re.search(r"^total\s+(\d+)$", plan, flags=re.M).group(1))
        outputs = materialise(work, plan)
        touch_s, _ = snakemake(work, work / "c.yaml", "--touch", f"round{rounds}")
        noop_s, out = snakemake(work, work / "c.yaml", f"round{rounds}")
        assert "Nothing to be done" in out, out[-2000:]
    return {
        "shards": shards,
        "rounds": rounds,
        "jobs": jobs,
        "outputs": outputs,
        "dry_run_s": round(dry_s, 2),
        "touch_s": round(touch_s, 2),
        "noop_s": round(noop_s, 2),
    }


def wall_s(cmd: list[str], check: bool = True) -> float:
    """Wall time of one command, its output captured."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=check, capture_output=True)
    return time.perf_counter() - t0


def snakemake_startup_s() -> float:
    """Wall time of `snakemake --version`: Snakemake's own start-up, which every dry run and
    no-op rerun pays before reading the Snakefile."""
    return round(wall_s([sys.executable, "-m", "snakemake", "--version"]), 2)


def scontrol_s() -> float | None:
    """Wall time of `scontrol show config` (what the SLURM plugin runs at import), None without scontrol."""
    if shutil.which("scontrol") is None:
        return None
    return round(wall_s(["scontrol", "show", "config"], check=False), 2)


_WRITE_MODELS = """
import sys
from pathlib import Path
from conta_core.infra.checkpoint import save_model
from conta_core.infra.config import DEFAULT_CONFIG, deep_merge, load_yaml
from conta_core.models.classifier import build_classifier
from conta_core.models.deeplab import build_deeplab, checkpoint_dict
from conta_core.infra.fileio import save_torch
out = Path(sys.argv[1])
cfg = deep_merge(load_yaml(DEFAULT_CONFIG), load_yaml(DEFAULT_CONFIG.parent / "voc12.yaml"))
cls_cfg = {**cfg["classifier"], "pretrained": None}
save_model(out / "cls.pth", "classifier", build_classifier(cls_cfg, None, 20),
           {"classifier": cls_cfg, "context": None, "num_fg": 20})
seg_cfg = {**cfg["segmentation"], "pretrained": None}
save_torch(out / "seg.pth", checkpoint_dict(build_deeplab(seg_cfg, 21, load_pretrained=False), seg_cfg, 21))
"""
_LOAD_MODEL = """
import sys, time
from conta_core.models.classifier import load_classifier
from conta_core.models.deeplab import load_deeplab
kind, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
(load_classifier if kind == "cls" else load_deeplab)(path, "cpu")
print(time.perf_counter() - t0)
"""


def model_load_s() -> dict:
    """Seconds to load the VOC config's CAM net and DeepLab (fresh process each, after imports)."""
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", _WRITE_MODELS, d], check=True, capture_output=True, env=env)
        out = {}
        for kind, name in (("cls", "classifier_r50"), ("seg", "deeplab_r101")):
            proc = subprocess.run(
                [sys.executable, "-c", _LOAD_MODEL, kind, str(Path(d) / f"{kind}.pth")],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            out[f"{name}_s"] = round(float(proc.stdout.strip().splitlines()[-1]), 2)
            out[f"{name}_model_mib"] = round((Path(d) / f"{kind}.pth").stat().st_size / 2**20, 1)
        return out


def job_startup_s(repeat: int = 3) -> float:
    """Median wall time of `python workflow_scripts/make_cam.py --help` (imports torch and conta_core)."""
    times = [wall_s([sys.executable, str(REPO / "workflow_scripts/make_cam.py"), "--help"]) for _ in range(repeat)]
    return round(sorted(times)[len(times) // 2], 2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, nargs="+", default=[2, 16, 64])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    rows = [measure(s, a.rounds) for s in a.shards]
    startup, smk, sctl, loads = job_startup_s(), snakemake_startup_s(), scontrol_s(), model_load_s()
    print("| shards | rounds | jobs | dry run s | no-op rerun s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shards']} | {r['rounds']} | {r['jobs']} | {r['dry_run_s']} | {r['noop_s']} |")
    print(f"\njob start-up (interpreter + torch + conta_core, --help): {startup} s")
    print(
        f"model load (VOC config, after imports): CAM net R50 {loads['classifier_r50_s']} s "
        f"({loads['classifier_r50_model_mib']} MiB), DeepLab-v2 R101 {loads['deeplab_r101_s']} s "
        f"({loads['deeplab_r101_model_mib']} MiB)"
    )
    print(f"snakemake --version (Snakemake's own start-up, in every row above): {smk} s")
    print(
        "scontrol show config (run by the SLURM plugin at import): "
        + ("no scontrol on PATH" if sctl is None else f"{sctl} s")
    )
    if sctl is not None and sctl > 2:
        print("  (the SLURM client's controller does not answer: every snakemake call waits for it)")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "job_startup_s": startup,
                    "snakemake_startup_s": smk,
                    "scontrol_s": sctl,
                    "model_load_s": loads,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
