#!/usr/bin/env python
"""Time, memory and output size of every job of a finished run, per rule (the sizing tables
of docs/voc_cluster.md).

    python tools/job_resources.py results/<run> [--images N] [--markdown]

Reads Snakemake's benchmark records results/<run>/benchmarks/<rule>/<job>.tsv (wall seconds
`s`, peak resident memory `max_rss` in MB) and sums the size of each round's artifact
folders. Per rule: jobs, wall seconds (sum and largest job), largest peak RSS; per artifact
folder of round 0: MB on disk and MB per image (--images: the images of the split it holds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def rule_table(run: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted(run.glob("benchmarks/**/*.tsv")):
        df = pd.read_csv(tsv, sep="\t")
        rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        rows.append(
            {"rule": rule, "job": tsv.stem, "s": float(df["s"].iloc[-1]), "max_rss_mb": float(df["max_rss"].iloc[-1])}
        )
    jobs = pd.DataFrame(rows)
    if jobs.empty:
        raise SystemExit(f"{run}: no benchmarks/<rule>/*.tsv (is it a finished run?)")
    g = jobs.groupby("rule").agg(
        jobs=("job", "count"), s_sum=("s", "sum"), s_max=("s", "max"), rss_max_mb=("max_rss_mb", "max")
    )
    return g.sort_values("s_sum", ascending=False).round(1)


def disk_table(run: Path, images: int | None) -> pd.DataFrame:
    rows = []
    for folder in sorted(p for p in (run / "round0").iterdir() if p.is_dir()):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        rows.append(
            {
                "folder": f"round0/{folder.name}",
                "mb": round(size, 2),
                "mb_per_image": round(size / images, 3) if images else None,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--images", type=int, default=None, help="images per per-image folder (for MB per image)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    for table in (rule_table(args.run), disk_table(args.run, args.images)):
        print(table.to_markdown() if args.markdown else table.to_string())
        print()


if __name__ == "__main__":
    main()
