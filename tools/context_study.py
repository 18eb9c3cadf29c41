#!/usr/bin/env python
"""Seeds x conditions study of round 1 with paired differences and 95 % confidence intervals.

The tool of the earlier study (docs/context.md "Results", docs/study/), kept to reproduce it;
a new study is a sheet run by the workflow itself: `snakemake --cores 2 study --config
study=studies/<name>/study.yaml` (rules/study.smk, docs/context.md "Running a study").

    python tools/context_study.py --base results/default --out study/confounded \\
        --seeds 0 1 2 3 4 --stage pseudo \\
        --condition conta '{}' --condition placebo '{"context": {"mode": "placebo"}}' \\
        --condition none '{"context": {"mode": "none"}}' \\
        [--overlay '{"context": {"init_std": 0.2}}'] [--configfile my.yaml] [--cores 2] \\
        [--rounds 3] [--base-overlay '{"dataset": {"synthetic": {"cooccurrence": 0.45}}}']

--base: a run folder whose round 0 is finished (data/, pretrain/, round0/ with the
  confounder and the segmentation predictions on train). Every (condition, seed) run gets a
  hard-linked copy of those three folders, so all runs share the data, the pre-training
  and round 0: only round 1 differs (common random numbers: the same seed for every
  condition; `seed_per_round: false`, so round 1 trains with `seed`).
--base-overlay JSON: build the base's round 0 first when it is missing (data, pre-training,
  round-0 CAMs, pseudo-masks and the confounder set; the segmentation too unless the overlay
  sets context.confounder_source: pseudo), with this overlay on --configfile; the base run is
  <results_dir>/<run> = --base.
--rounds N: rounds 1..N of every run (default 1); round t > 1 attends over round t-1's set.
--condition NAME JSON (repeatable): a config overlay per condition; --overlay: applied to all.
--configfile: the base run's own overlay files, if it was not the default config.
--stage: cam (train_cls, CAMs, context diagnostics), pseudo (+ IR labels, IRN, random walk,
  pseudo-mask eval) or seg (+ DeepLab and the segmentation evals).

Runs the real workflow (`snakemake --rerun-triggers mtime` per run, results under
OUT/results/<condition>_s<seed>/), then writes OUT/study_runs.csv (one row per run and round:
mIoU in %, the confounding measures of conta_core.evaluation.confounding as `<stage>_<measure>` and the
context diagnostics) and OUT/study_pairs.csv (per round, metric and pair of conditions: the
paired differences over seeds, mean, sample std, 95 % t interval, the difference relative to
the second condition's mean with its interval, the smallest effect that n seeds detect with
80 % power, and the seeds needed for a 2-point mIoU effect or a 20 % relative change of a
confounding measure), and prints both.
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

from conta_core.evaluation.study_analysis import seeds_needed  # noqa: E402
from conta_core.infra.fileio import read_json, write_csv  # noqa: E402
from conta_core.infra.layout import RunLayout
from conta_core.report.summary import round_row  # noqa: E402

SHARED = ("data", "pretrain", "round0")  # what every run takes from the base run
MIOU = ["cam_miou", "cam_best_miou", "pseudo_mask_miou", "seg_train_miou", "seg_val_miou"]
CF_STAGES = {"cam": "cam", "pseudo_mask": "pseudo"}  # confounding_<stage>.json -> column prefix
CF_KEYS = {
    "pair_confusion_mean": "pair",
    "bg_leak_context": "bg_leak",
    "texture_leak_mean": "texture_leak",
    "part_miss_mean": "part_miss",
    "interior_miss_mean": "interior_miss",
    "boundary_f": "boundary_f",
}
CF_METRICS = [f"{p}_{k}" for p in CF_STAGES.values() for k in CF_KEYS.values()]
METRICS = MIOU + CF_METRICS
DIAG = ["alpha_entropy_mean", "alpha_std_across_images", "m_cv", "cam_change", "m_logit_share", "inert"]
EFFECT = 2.0  # mIoU points the study should be able to detect
REL_EFFECT = 0.2  # ... and the relative change of a confounding measure


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def targets(run: Path, stage: str, mode: str, rounds: int = 1) -> list[str]:
    layout = RunLayout(run)
    files = []
    for t in range(1, rounds + 1):
        files += [layout.eval_csv(t, "cam"), layout.confounding(t, "cam")]
        if mode != "none":
            files.append(layout.diagnostics(t))
        if stage in ("pseudo", "seg"):
            files += [layout.eval_csv(t, "pseudo_mask"), layout.confounding(t, "pseudo_mask")]
        if stage == "seg":
            files += [
                layout.eval_csv(t, "seg_train"),
                layout.eval_csv(t, "seg_val"),
                layout.confounding(t, "seg_train"),
                layout.confounding(t, "seg_val"),
            ]
    return files


def snakemake(args, cfg_paths: list[Path], files: list[str], log: Path) -> None:
    cmd = [
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(args.out),
        "--cores",
        str(args.cores),
        "--rerun-triggers",
        "mtime",
        "--configfile",
        *map(str, args.configfile),
        *map(str, cfg_paths),
        "--",
        *files,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
            raise SystemExit(f"snakemake failed, see {log}")


def build_base(args) -> None:
    """Round 0 of the base run (what every run shares), with --base-overlay, if missing."""
    layout = RunLayout(args.base)
    cfg = deep_merge(
        args.base_overlay,
        {"run": args.base.name, "results_dir": str(args.base.parent), "seed_per_round": False, "rounds": 1},
    )
    cfg_path = args.out / "overlays" / "base.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg))
    files = [
        layout.confounder(0),
        layout.eval_csv(0, "cam"),
        layout.eval_csv(0, "pseudo_mask"),
        layout.confounding(0, "cam"),
        layout.confounding(0, "pseudo_mask"),
    ]
    print(f"== base {args.base}", flush=True)
    snakemake(args, [cfg_path], files, args.out / "logs" / "base.log")


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
    cfg = deep_merge(
        deep_merge(deep_merge(args.base_overlay, args.overlay), overlay),
        {
            "run": run_name,
            "results_dir": str(results),
            "seed": seed,
            "seed_per_round": False,
            "rounds": args.rounds,
        },
    )
    cfg_path = args.out / "overlays" / f"{run_name}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg))
    mode = cfg.get("context", {}).get("mode", "conta")
    files = targets(run, args.stage, mode, args.rounds)
    print(f"== {run_name}: {len(files)} targets", flush=True)
    snakemake(args, [cfg_path], files, args.out / "logs" / f"{run_name}.log")
    return run


def collect(runs: dict[tuple[str, int], Path], rounds: int = 1) -> pd.DataFrame:
    rows = []
    for (name, seed), run in runs.items():
        layout = RunLayout(run)
        for t in range(1, rounds + 1):
            row = {"condition": name, "seed": seed, **round_row(run / f"round{t}", t)}
            for stage, prefix in CF_STAGES.items():
                path = Path(layout.confounding(t, stage))
                if path.exists():
                    d = read_json(path)
                    row.update({f"{prefix}_{v}": d.get(k) for k, v in CF_KEYS.items()})
            diag = Path(layout.diagnostics(t))
            if diag.exists():
                d = read_json(diag)
                row.update({k: d.get(k) for k in DIAG})
            rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=["condition", "seed", "round"] + METRICS + DIAG)
    df[MIOU] = df[MIOU] * 100
    df[CF_METRICS] = df[CF_METRICS].astype(float)
    return df


def t_quantile(q: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, dof))


def pairs_table(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Paired differences a - b over seeds per round and metric (module docstring).

    rel = mean difference / mean of b; seeds_needed: seeds for 80 % power at a 2-point
    difference (mIoU) or a REL_EFFECT change of b's mean (confounding measures)."""
    rows = []
    if "round" not in df:
        df = df.assign(round=1)
    for t in sorted(df["round"].unique()):
        sub = df[df["round"] == t]
        for a, b in itertools.combinations(names, 2):
            for m in METRICS:
                wide = sub.pivot(index="seed", columns="condition", values=m)
                if a not in wide or b not in wide:
                    continue
                both = wide[[a, b]].dropna()
                d = both[a] - both[b]
                n = len(d)
                if n == 0:
                    continue
                mean, ref = float(d.mean()), float(both[b].mean())
                sd = float(d.std(ddof=1)) if n > 1 else float("nan")
                half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
                mde = (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * sd / math.sqrt(n) if n > 1 else float("nan")
                effect = EFFECT if m in MIOU else REL_EFFECT * abs(ref)
                need = int(seeds_needed(sd, effect)) if n > 1 and effect > 0 and sd == sd else None  # t quantiles
                digits = 2 if m in MIOU else 4
                rel = mean / ref if ref else float("nan")
                rows.append(
                    {
                        "round": int(t),
                        "difference": f"{a} - {b}",
                        "metric": m,
                        "n": n,
                        "mean": round(mean, digits),
                        "sd": round(sd, digits),
                        "ci95_low": round(mean - half, digits),
                        "ci95_high": round(mean + half, digits),
                        "ref_mean": round(ref, digits),
                        "rel": round(rel, 3),
                        "rel_ci95_low": round((mean - half) / ref, 3) if ref else float("nan"),
                        "rel_ci95_high": round((mean + half) / ref, 3) if ref else float("nan"),
                        "mde80": round(mde, digits),
                        "seeds_needed": need,
                    }
                )
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
    p.add_argument("--rounds", type=int, default=1, help="rounds 1..N of every run")
    p.add_argument(
        "--base-overlay",
        type=json.loads,
        default=None,
        help="JSON overlay of the base run; build its round 0 when missing",
    )
    args = p.parse_args()
    args.base, args.out = args.base.resolve(), args.out.resolve()
    args.configfile = [c.resolve() for c in args.configfile]  # config/config.yaml is the Snakefile's own
    names = [n for n, _ in args.condition]
    if len(set(names)) != len(names):
        raise SystemExit("--condition: names must be unique")
    conditions = {n: json.loads(j) for n, j in args.condition}
    if args.base_overlay is not None and not Path(RunLayout(args.base).confounder(0)).exists():
        build_base(args)
    args.base_overlay = args.base_overlay or {}
    runs = {(n, s): run_one(args, n, conditions[n], s) for s in args.seeds for n in names}
    df = collect(runs, args.rounds)
    pairs = pairs_table(df, names)
    write_csv(args.out / "study_runs.csv", df)
    write_csv(args.out / "study_pairs.csv", pairs)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.to_string(index=False))
        print()
        print(pairs.to_string(index=False))


if __name__ == "__main__":
    main()
