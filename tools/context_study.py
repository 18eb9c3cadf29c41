#!/usr/bin/env python
"""Seeds x conditions study of round 1 with paired differences and 95 % confidence intervals.

    python tools/context_study.py --base results/default --out study/confounded \\
        --seeds 0 1 2 3 4 --stage pseudo \\
        --condition conta '{}' --condition placebo '{"context": {"mode": "placebo"}}' \\
        --condition none '{"context": {"mode": "none"}}' \\
        [--overlay '{"context": {"init_std": 0.2}}'] [--configfile my.yaml] [--cores 2]

--base: a run folder whose round 0 is finished (data/, pretrain/, round0/ with the
  confounder and the segmentation predictions on train). Every (condition, seed) run gets a
  hard-linked copy of those three folders, so all runs share the data, the pre-training
  and round 0: only round 1 differs (common random numbers: the same seed for every
  condition; `seed_per_round: false`, so round 1 trains with `seed`).
--condition NAME JSON (repeatable): a config overlay per condition; --overlay: applied to all.
--configfile: the base run's own overlay files, if it was not the default config.
--stage: cam (train_cls, CAMs, context diagnostics), pseudo (+ IR labels, IRN, random walk,
  pseudo-mask eval) or seg (+ DeepLab and the segmentation evals).

Runs the real workflow (`snakemake --rerun-triggers mtime` per run, results under
OUT/results/<condition>_s<seed>/), then writes OUT/study_runs.csv (one row per run: mIoU in %
and the context diagnostics) and OUT/study_pairs.csv (per metric and pair of conditions: the
paired differences over seeds, mean, sample std, 95 % t interval, the smallest effect that
n seeds detect with 80 % power, and the seeds needed for a 2-point effect), and prints both.
Reruns reuse finished runs (Snakemake decides what is missing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conta_core.layout import RunLayout
from conta_core.fileio import read_json, write_csv  # noqa: E402
from conta_core.summary import round_row  # noqa: E402

SHARED = ("data", "pretrain", "round0")  # what every run takes from the base run
METRICS = ["cam_miou", "cam_best_miou", "pseudo_mask_miou", "seg_train_miou", "seg_val_miou"]
DIAG = ["alpha_entropy_mean", "alpha_std_across_images", "m_cv", "cam_change", "m_logit_share", "inert"]
EFFECT = 2.0  # mIoU points the study should be able to detect
POWER_Z = 0.8416  # z of 80 % power


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def targets(run: Path, stage: str, mode: str) -> list[str]:
    layout = RunLayout(run)
    files = [layout.eval_csv(1, "cam")]
    if mode != "none":
        files.append(layout.diagnostics(1))
    if stage in ("pseudo", "seg"):
        files.append(layout.eval_csv(1, "pseudo_mask"))
    if stage == "seg":
        files += [layout.eval_csv(1, "seg_train"), layout.eval_csv(1, "seg_val")]
    return files


def link_shared(base: Path, run: Path) -> None:
    """Hard-linked copies of the base run's data, pre-training and round 0 (mtimes kept)."""
    run.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        src, dst = base / name, run / name
        if not src.exists():
            raise SystemExit(f"--base {base}: no {name}/ (finish its round 0 first: snakemake round0)")
        if not dst.exists():
            shutil.copytree(src, dst, copy_function=os.link)


def run_one(args, name: str, overlay: dict, seed: int) -> Path:
    results = args.out / "results"
    run_name = f"{name}_s{seed}"
    run = results / run_name
    link_shared(args.base, run)
    cfg = deep_merge(deep_merge(args.overlay, overlay), {
        "run": run_name, "results_dir": str(results), "seed": seed, "seed_per_round": False, "rounds": 1,
    })
    cfg_path = args.out / "overlays" / f"{run_name}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg))
    mode = cfg.get("context", {}).get("mode", "conta")
    files = targets(run, args.stage, mode)
    cmd = ["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(args.out), "--cores", str(args.cores),
           "--rerun-triggers", "mtime", "--configfile", *map(str, args.configfile), str(cfg_path), "--", *files]
    log = args.out / "logs" / f"{run_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {run_name}: {' '.join(files)}", flush=True)
    with open(log, "w") as fh:
        if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"{run_name}: snakemake failed, see {log}")
    return run


def collect(runs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    rows = []
    for (name, seed), run in runs.items():
        row = {"condition": name, "seed": seed, **round_row(run / "round1", 1)}
        diag = Path(RunLayout(run).diagnostics(1))
        if diag.exists():
            d = read_json(diag)
            row.update({k: d.get(k) for k in DIAG})
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=["condition", "seed"] + METRICS + DIAG)
    df[METRICS] = df[METRICS] * 100
    return df


def t_quantile(q: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, dof))


def pairs_table(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    rows = []
    for a, b in itertools.combinations(names, 2):
        for m in METRICS:
            wide = df.pivot(index="seed", columns="condition", values=m)
            if a not in wide or b not in wide:
                continue
            d = (wide[a] - wide[b]).dropna()
            n = len(d)
            if n == 0:
                continue
            mean = float(d.mean())
            sd = float(d.std(ddof=1)) if n > 1 else float("nan")
            half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
            mde = (t_quantile(0.975, n - 1) + POWER_Z) * sd / math.sqrt(n) if n > 1 else float("nan")
            need = math.ceil(((1.96 + POWER_Z) * sd / EFFECT) ** 2) if n > 1 else None
            rows.append({"difference": f"{a} - {b}", "metric": m, "n": n, "mean": round(mean, 2),
                         "sd": round(sd, 2), "ci95_low": round(mean - half, 2), "ci95_high": round(mean + half, 2),
                         "mde80": round(mde, 2), f"seeds_for_{EFFECT:g}pt": need})
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, required=True, help="run folder with a finished round 0")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--condition", nargs=2, action="append", required=True, metavar=("NAME", "JSON"))
    p.add_argument("--overlay", type=json.loads, default={}, help="JSON overlay for every run")
    p.add_argument("--configfile", type=Path, nargs="*", default=[])
    p.add_argument("--stage", choices=["cam", "pseudo", "seg"], default="pseudo")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    args.base, args.out = args.base.resolve(), args.out.resolve()
    args.configfile = [c.resolve() for c in args.configfile]  # config/config.yaml is the Snakefile's own
    names = [n for n, _ in args.condition]
    if len(set(names)) != len(names):
        raise SystemExit("--condition: names must be unique")
    conditions = {n: json.loads(j) for n, j in args.condition}
    runs = {(n, s): run_one(args, n, conditions[n], s) for s in args.seeds for n in names}
    df = collect(runs)
    pairs = pairs_table(df, names)
    write_csv(args.out / "study_runs.csv", df)
    write_csv(args.out / "study_pairs.csv", pairs)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.to_string(index=False))
        print()
        print(pairs.to_string(index=False))


if __name__ == "__main__":
    main()
