#!/usr/bin/env python
"""Write a finished study run's measures file (conta_core.infra.study.measures_table).

    study_measures.py --summary results/<study>/<run>/summary.csv --out studies/<name>/measures/<run>.csv
                      --run R --condition C --seed S --replicate K [--commit C]

One row per round: run, condition, seed, replicate, round, the run's summary columns, then
`commit` (--commit: the workflow's commit where the DAG was planned) and `machine` (this
machine's libraries and CPU, conta_core.report.run_digest.machine_label).
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

import pandas as pd

from conta_core.infra.fileio import write_csv
from conta_core.infra.study import measures_table
from conta_core.report.run_digest import machine_label
from conta_core.script import script_doc, script_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=script_doc(__file__))
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--run", required=True)
    p.add_argument("--condition", required=True)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--replicate", required=True, type=int)
    p.add_argument("--commit", default="unknown")
    return p


def run(args: argparse.Namespace) -> None:
    provenance = {"commit": args.commit, "machine": machine_label()}
    df = measures_table(pd.read_csv(args.summary), args.run, args.condition, args.seed, args.replicate, provenance)
    write_csv(args.out, df)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
