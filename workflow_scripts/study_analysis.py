#!/usr/bin/env python
"""Write a study's paired analysis (conta_core.evaluation.study_analysis) from its measures files.

    study_analysis.py --cfg '{"pairs": [...], "primary_pairs": [...], "decision": "...", "measures": [...], "power": {...}, "rounds": T}'
                      --measures studies/<name>/measures/<run>.csv ...
                      --out-csv pairs.csv --out-md pairs.md --out-png differences.png
                      --out-conditions-csv conditions.csv --out-conditions-md conditions.md

--cfg: the study's pairs, primary_pairs, decision, measures, power settings and rounds (study.yaml).
Writes one row per (pair, measure, round) as CSV and Markdown, the differences figure, and
per condition and round the mean and spread of every measure over the units (conditions.*),
with notes in conditions.md on whether round 0, shared by a unit's conditions, agrees, and
on the commits and machines that wrote the measures files.
Pairs whose runs are not all finished use the units where both are (rule study_interim).
"""

import argparse
import json
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.evaluation.study_analysis import (
    analyze,
    condition_markdown,
    condition_summary,
    markdown_table,
    provenance_markdown,
    shared_round_markdown,
)
from conta_core.infra.fileio import write_csv, write_text
from conta_core.infra.study import META_COLUMNS, PROVENANCE_COLUMNS, read_measures
from conta_core.report.plots import plot_study_differences
from conta_core.script import script_doc, script_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=script_doc(__file__))
    p.add_argument("--cfg", required=True)
    p.add_argument("--measures", required=True, type=Path, nargs="+")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)
    p.add_argument("--out-png", required=True, type=Path)
    p.add_argument("--out-conditions-csv", required=True, type=Path)
    p.add_argument("--out-conditions-md", required=True, type=Path)
    return p


def run(args: argparse.Namespace) -> None:
    cfg = json.loads(args.cfg)
    measures = read_measures(args.measures)
    df = analyze(
        measures,
        cfg["pairs"],
        cfg["measures"],
        cfg["rounds"],
        cfg["power"],
        primary_pairs=cfg.get("primary_pairs"),
        decision=cfg.get("decision", "improvement"),
    )
    columns = [m["column"] for m in cfg["measures"]]
    summary = condition_summary(measures, columns)
    measure_columns = [c for c in measures.columns if c not in META_COLUMNS + PROVENANCE_COLUMNS]
    shared = shared_round_markdown(measures, measure_columns) + provenance_markdown(measures)
    write_csv(args.out_csv, df)
    write_text(args.out_md, markdown_table(df))
    write_csv(args.out_conditions_csv, summary)
    write_text(args.out_conditions_md, condition_markdown(summary) + shared)
    plot_study_differences(df, args.out_png)
    print(df.to_string(index=False))
    print(shared)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
