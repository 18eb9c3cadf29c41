#!/usr/bin/env python
"""The answer table of a study, stage by stage, from its analysis (for README and docs).

    python tools/study_answer.py studies/em3 [--round 3] [--pair conta,placebo --pair conta,none]
    python tools/study_answer.py studies/em3 --summary [--conditions none,placebo,conta]

Reads studies/<name>/analysis/pairs.csv (rule study_analysis; `--interim` reads
analysis/interim/) and prints one Markdown table per compared pair, with one row per stage
measure at `--round` (default: the last round in the table): the reference condition's mean,
the mean paired difference with its 95 % t interval (confounding measures as % of the
reference mean), the mean difference per dataset replicate (in the same unit: confounding
measures as % of the pooled reference mean), the effect the n units detect with the study's
target power (`power.power`, 80 % by default) at the measured sd (`detectable`), n, and the
verdict of the study's decision rule (primary rows only; see
conta_core.evaluation.study_analysis). Stages: CAMs, pseudo-masks, segmentation (val, then
train). Pairs default to those with primary rows (the study's primary_pairs).

--summary: one table instead (README's): a row per measure at `--round`, the measures with a
primary row first, then the others marked "(secondary)"; a column with each condition's mean
over its units (`--conditions` sets their order; default: as they appear in the pairs,
references first), then a column per pair with its difference and interval as above.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

STAGES = [
    ("CAM", ["cam_miou", "cam_best_miou", "cf_cam_pair", "cf_cam_bg"]),
    ("pseudo-mask", ["pseudo_mask_miou", "cf_pseudo_mask_pair", "cf_pseudo_mask_bg"]),
    ("segmentation", ["seg_val_miou", "cf_seg_val_pair", "cf_seg_val_bg", "seg_train_miou"]),
]
LABELS = {
    "cam_miou": "mIoU @ eval threshold",
    "cam_best_miou": "mIoU @ best threshold",
    "pseudo_mask_miou": "mIoU",
    "seg_val_miou": "val mIoU",
    "seg_train_miou": "train mIoU",
}


def _label(measure: str) -> str:
    if measure in LABELS:
        return LABELS[measure]
    kind = "pair confusion" if measure.endswith("_pair") else "background leak"
    return kind + (" (val)" if "seg_val" in measure else "")


def _cell(row: pd.Series) -> str:
    if pd.isna(row["rel_diff"]):
        return f"{row['diff']:+.2f} [{row['ci_lo']:+.2f}, {row['ci_hi']:+.2f}]"
    return f"{100 * row['rel_diff']:+.1f} % [{100 * row['rel_ci_lo']:+.1f} %, {100 * row['rel_ci_hi']:+.1f} %]"


def _by_replicate(row: pd.Series) -> str:
    """diff_by_replicate ("101: 0.52; 102: -0.1") in the cell's unit."""
    text = row.get("diff_by_replicate")
    if not isinstance(text, str) or not text:
        return ""
    relative = not pd.isna(row["rel_diff"])
    parts = []
    for item in text.split("; "):
        rep, value = item.split(": ")
        v = float(value)
        parts.append(f"{rep}: {100 * v / abs(row['mean_reference']):+.1f} %" if relative else f"{rep}: {v:+.2f}")
    return ", ".join(parts)


def _detectable(row: pd.Series) -> str:
    v = row.get("detectable")
    if pd.isna(v):
        return ""
    return f"{100 * v / abs(row['mean_reference']):.1f} %" if not pd.isna(row["rel_diff"]) else f"{v:.2f}"


def _compare(pairs: pd.DataFrame, compare: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The pairs to show: `compare`, each checked to be in the analysis, or those with primary rows."""
    if pairs.empty:
        raise ValueError("the analysis has no pairs (a descriptive study: read conditions.md)")
    if compare is None:
        primary = pairs[pairs["role"] == "primary"]
        return list(dict.fromkeys(zip(primary["treatment"], primary["reference"])))
    for a, b in compare:
        if pairs[(pairs["treatment"] == a) & (pairs["reference"] == b)].empty:
            raise ValueError(f"no pair {a} - {b} in the analysis")
    return compare


def _row(part: pd.DataFrame, measure: str, round_: int) -> pd.Series | None:
    """A pair's row for `measure` at `round_` (a measure listed twice, primary at round 3 and
    secondary at others, has one row per round; the primary one wins), or None."""
    rows = part[(part["measure"] == measure) & (part["round"] == round_)]
    return None if rows.empty else rows.sort_values("role").iloc[0]


def _value(measure: str, v: float) -> str:
    return "" if pd.isna(v) else format(v, ".2f" if measure.endswith("_miou") else ".3g")


def answer_tables(pairs: pd.DataFrame, round_: int | None = None, compare: list[tuple[str, str]] | None = None) -> str:
    """The Markdown tables (see the module docstring)."""
    out = []
    for a, b in _compare(pairs, compare):
        part = pairs[(pairs["treatment"] == a) & (pairs["reference"] == b)]
        t = int(part["round"].max()) if round_ is None else round_
        lines = [
            f"**{a} − {b}, round {t}** (95 % t intervals over n units; no multiplicity correction)",
            "",
            f"| stage | measure | {b} mean | {a} − {b} [95 % CI] | per replicate | detectable | n | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for stage, measures in STAGES:
            for m in measures:
                r = _row(part, m, t)
                if r is None:
                    continue
                verdict = "" if pd.isna(r["verdict"]) else r["verdict"]
                lines.append(
                    f"| {stage} | {_label(m)} | {_value(m, r['mean_reference'])} | {_cell(r)} | {_by_replicate(r)} | {_detectable(r)} "
                    f"| {int(r['n'])} | {verdict} |"
                )
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def summary_table(
    pairs: pd.DataFrame,
    round_: int | None = None,
    compare: list[tuple[str, str]] | None = None,
    conditions: list[str] | None = None,
) -> str:
    """The one-table summary (see the module docstring, --summary)."""
    compare = _compare(pairs, compare)
    t = int(pairs["round"].max()) if round_ is None else round_
    at = pairs[pairs["round"] == t]
    if conditions is None:
        conditions = list(dict.fromkeys([b for _, b in compare] + [a for a, _ in compare]))
    means: dict[tuple[str, str], float] = {}  # (condition, measure) -> mean over its units
    for _, r in at.iterrows():
        means.setdefault((r["treatment"], r["measure"]), r["mean_treatment"])
        means.setdefault((r["reference"], r["measure"]), r["mean_reference"])
    unknown = [c for c in conditions if not any(k[0] == c for k in means)]
    if unknown:
        raise ValueError(f"no condition {', '.join(unknown)} in the analysis at round {t}")
    ordered = [m for _, ms in STAGES for m in ms]
    stage_of = {m: stage for stage, ms in STAGES for m in ms}
    is_primary = {m: bool((at[(at["measure"] == m)]["role"] == "primary").any()) for m in ordered}
    rows = [m for m in ordered if is_primary[m]] + [m for m in ordered if not is_primary[m]]
    lines = [
        f"**Round {t}**: means over the units; differences with 95 % t intervals (no multiplicity correction)",
        "",
        "| stage | measure | " + " | ".join(conditions) + " | " + " | ".join(f"{a} − {b}" for a, b in compare) + " |",
        "| --- | --- | " + " | ".join("---" for _ in conditions + compare) + " |",
    ]
    for m in rows:
        if not (at["measure"] == m).any():
            continue
        cells = ["" if (c, m) not in means else _value(m, means[(c, m)]) for c in conditions]
        for a, b in compare:
            r = _row(at[(at["treatment"] == a) & (at["reference"] == b)], m, t)
            cells.append("" if r is None else _cell(r))
        stage = stage_of[m] + ("" if is_primary[m] else " (secondary)")
        lines.append(f"| {stage} | {_label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study_dir", type=Path, help="studies/<name>")
    ap.add_argument("--round", type=int, default=None)
    ap.add_argument("--pair", action="append", default=None, help="treatment,reference (repeatable)")
    ap.add_argument("--interim", action="store_true", help="read analysis/interim/ (a study not finished)")
    ap.add_argument("--summary", action="store_true", help="one table: condition means and every pair")
    ap.add_argument("--conditions", default=None, help="--summary's column order, e.g. none,placebo,conta")
    args = ap.parse_args(argv)
    path = args.study_dir / "analysis" / ("interim" if args.interim else "") / "pairs.csv"
    if not path.is_file():
        print(f"study_answer: no {path} (run the study's analysis first)", file=sys.stderr)
        return 2
    compare = [tuple(p.split(",", 1)) for p in args.pair] if args.pair else None
    try:
        pairs = pd.read_csv(path)
        if args.summary:
            conditions = args.conditions.split(",") if args.conditions else None
            print(summary_table(pairs, args.round, compare, conditions), end="")
        else:
            print(answer_tables(pairs, args.round, compare), end="")
    except ValueError as e:
        print(f"study_answer: {path}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
