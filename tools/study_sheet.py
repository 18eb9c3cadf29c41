#!/usr/bin/env python
"""Write a study's runs sheet with its number of units taken from a pilot's analysis.

Usage (study 2, docs/study_em3.md, "Number of seeds"):

    python tools/study_sheet.py --pilot studies/em3_pilot/analysis/pairs.csv \\
        --pair conta,placebo --round 3 --measure pseudo_mask_miou=2.0 --measure seg_val_miou=2.3 \\
        --minimum 6 --cap 12 --replicates 101,102 --first-seed 1001 --seed-step 100 \\
        --conditions conta,placebo,none --out studies/em3/runs.tsv

The pilot's sd of the paired differences (pair, round) of each measure gives the units each
needs for 80 % power against its effect by t quantiles
(conta_core.evaluation.study_analysis.units_from_pilot); n is the largest of them and
`--minimum`, rounded up to a multiple of the number of replicates, at most `--cap` (then the
effect detectable with `--cap` units at the pilot's sd is printed instead). The units are
n / replicates training seeds (`--first-seed`, + `--seed-step`, ...; round t of a unit trains
with seed + t, so a step larger than the number of rounds keeps two units of a replicate from
sharing a round's training seed) in every replicate: one sheet row per
unit and condition (`<condition>_r<replicate>_s<seed>`, overlay `{context: {mode: <condition>}}`).
Units are listed seed by seed, the replicates alternating ((101, 1001), (102, 1001), (101, 1101),
...): with the study's `order` they run in sheet order, so a study cut short by its budget has
as many units of each replicate as possible.
The reasoning is printed as markdown (for the study's text) and the sheet written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conta_core.evaluation.study_analysis import detectable_effect, units_from_pilot  # noqa: E402
from conta_core.infra.fileio import write_text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pilot", required=True, type=Path, help="the pilot's analysis/pairs.csv")
    ap.add_argument("--pair", required=True, help="treatment,reference of the pilot")
    ap.add_argument("--round", required=True, type=int)
    ap.add_argument("--measure", action="append", required=True, help="COLUMN=EFFECT (repeatable)")
    ap.add_argument("--minimum", type=int, default=4)
    ap.add_argument("--cap", type=int, default=12)
    ap.add_argument("--replicates", required=True, help="generator seeds, comma-separated")
    ap.add_argument("--first-seed", type=int, required=True)
    ap.add_argument("--seed-step", type=int, default=100, help="between a unit's seed and the next (> --rounds)")
    ap.add_argument("--rounds", type=int, default=3, help="the study's rounds (round t trains with seed + t)")
    ap.add_argument("--conditions", required=True, help="conditions, comma-separated (sheet order)")
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args(argv)
    if a.seed_step <= a.rounds:
        ap.error(
            f"--seed-step {a.seed_step}: round t trains with seed + t, so units {a.seed_step} apart would share "
            f"a training seed within rounds 0-{a.rounds}; use a step above {a.rounds}"
        )

    pairs = pd.read_csv(a.pilot)
    treatment, reference = a.pair.split(",")
    sds_effects = {}
    for spec in a.measure:
        column, effect = spec.split("=")
        row = pairs[
            (pairs["treatment"] == treatment)
            & (pairs["reference"] == reference)
            & (pairs["measure"] == column)
            & (pairs["round"] == a.round)
        ]
        if len(row) != 1:
            sys.exit(
                f"study_sheet: {a.pilot} has {len(row)} rows for {treatment} - {reference}, {column}, round {a.round}"
            )
        sds_effects[column] = (float(row["sd"].iloc[0]), float(effect))
    replicates = [int(r) for r in a.replicates.split(",")]
    n, needed, capped = units_from_pilot(sds_effects, a.minimum, len(replicates), a.cap)

    print(f"| measure (round {a.round}, {treatment} - {reference}) | pilot sd | effect | units needed |")
    print("| --- | --- | --- | --- |")
    for column, (sd, effect) in sds_effects.items():
        print(f"| {column} | {sd:.3f} | {effect} | {needed[column]:.0f} |")
    print(
        f"\nunits: {n} ({n // len(replicates)} seeds x {len(replicates)} replicates)" + (" - the cap" if capped else "")
    )
    if capped:
        for column, (sd, _) in sds_effects.items():
            print(f"  detectable with {n} units at 80 % power: {column} {detectable_effect(n, sd):.2f}")

    seeds = range(a.first_seed, a.first_seed + a.seed_step * (n // len(replicates)), a.seed_step)
    rows = ["run\tcondition\tseed\treplicate\toverlay"]
    for s in seeds:
        for r in replicates:
            for c in a.conditions.split(","):
                rows.append(f"{c}_r{r}_s{s}\t{c}\t{s}\t{r}\t{{context: {{mode: {c}}}}}")
    write_text(a.out, "\n".join(rows) + "\n")
    print(f"wrote {a.out} ({len(rows) - 1} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
