#!/usr/bin/env python
"""Markdown tables of the CONTA confounding study (tools/conta_study.sh OUT ...).

    python tools/study_report.py OUT [--copy-csv docs/study]

Reads every OUT/<part>/<level>/study_runs.csv, recomputes the paired differences with
tools/context_study.pairs_table and prints, per part and level: the per-condition means of
the primary measures, the paired differences with their 95 % intervals (absolute and
relative to the reference condition), and the dose-response summary over the levels.
--copy-csv copies the raw study_runs.csv / study_pairs.csv files there as
<part>_<level>_{runs,pairs}.csv.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from context_study import pairs_table  # noqa: E402

PRIMARY = {"cam_pair": "CAM pair confusion", "cam_bg_leak": "CAM background leak (context classes)"}
SECONDARY = {
    "cam_miou": "CAM mIoU",
    "cam_texture_leak": "CAM texture leak",
    "cam_part_miss": "CAM part miss",
    "cam_interior_miss": "CAM interior miss",
    "pseudo_pair": "pseudo-mask pair confusion",
    "pseudo_bg_leak": "pseudo-mask background leak",
    "pseudo_boundary_f": "pseudo-mask boundary F",
    "pseudo_mask_miou": "pseudo-mask mIoU",
}
COMPARISONS = [("nwgm", "placebo"), ("exact", "placebo"), ("nwgm", "none"), ("exact", "nwgm"), ("placebo", "none")]
LEVELS = {
    "s0": "0 (control)",
    "s05": "0.5 x default",
    "s1": "1 (default)",
    "smax": "max (all 1.0)",
    "n640": "1, 640 images",
}


def fmt(x: float, digits: int = 3) -> str:
    return "n/a" if pd.isna(x) else f"{x:+.{digits}f}"


ORDER = ["exact", "nwgm", "placebo", "none"]  # pairs_table differences a - b follow this order


def ordered(runs: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(runs["condition"]))
    return [c for c in ORDER if c in present] + [c for c in present if c not in ORDER]


def pair_rows(runs: pd.DataFrame, metrics: dict[str, str]) -> list[str]:
    table = pairs_table(runs, ordered(runs))
    out = []
    for a, b in COMPARISONS:
        for key, label in metrics.items():
            for _, r in table[(table["difference"] == f"{a} - {b}") & (table["metric"] == key)].iterrows():
                digits = 2 if key.endswith("miou") else 4
                out.append(
                    f"| {int(r['round'])} | {a} − {b} | {label} | {int(r['n'])} | {r['ref_mean']:.{digits}f} | "
                    f"{fmt(r['mean'], digits)} [{fmt(r['ci95_low'], digits)}, {fmt(r['ci95_high'], digits)}] | "
                    f"{fmt(r['rel'])} [{fmt(r['rel_ci95_low'])}, {fmt(r['rel_ci95_high'])}] | "
                    f"{'' if pd.isna(r['seeds_needed']) else int(r['seeds_needed'])} |"
                )
    return out


def means(runs: pd.DataFrame, metrics: dict[str, str]) -> list[str]:
    cols = [k for k in metrics if k in runs and runs[k].notna().any()]
    g = runs.groupby(["round", "condition"], sort=False)[cols].mean()
    lines = [
        "| round | condition | " + " | ".join(metrics[c] for c in cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for (t, cond), row in g.iterrows():
        vals = [f"{row[c]:.2f}" if c.endswith("miou") else f"{row[c]:.4f}" for c in cols]
        lines.append(
            f"| {t} | {cond} (n={int((runs['condition'] == cond).sum() / runs['round'].nunique())}) | "
            + " | ".join(vals)
            + " |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--copy-csv", type=Path, default=None)
    args = p.parse_args()
    found = sorted(args.out.glob("*/*/study_runs.csv"))
    if not found:
        raise SystemExit(f"{args.out}: no <part>/<level>/study_runs.csv")
    for path in found:
        part, level = path.parent.parent.name, path.parent.name
        runs = pd.read_csv(path)
        print(f"\n#### {part}: strength {LEVELS.get(level, level)} ({path.parent})\n")
        print("\n".join(means(runs, {**PRIMARY, **SECONDARY})))
        print(
            "\n| round | difference | measure | n | reference mean | mean [95 % CI] | relative [95 % CI] | seeds needed |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(
            "\n".join(
                pair_rows(
                    runs,
                    {
                        **PRIMARY,
                        "cam_miou": "CAM mIoU",
                        "pseudo_mask_miou": "pseudo-mask mIoU",
                        "pseudo_pair": "pseudo-mask pair confusion",
                    },
                )
            )
        )
        if args.copy_csv:
            args.copy_csv.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, args.copy_csv / f"{part}_{level}_runs.csv")
            pairs_table(runs, ordered(runs)).to_csv(args.copy_csv / f"{part}_{level}_pairs.csv", index=False)


if __name__ == "__main__":
    main()
