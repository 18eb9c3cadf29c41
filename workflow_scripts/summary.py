#!/usr/bin/env python
"""Write the per-round summary table (CAM / pseudo-mask / segmentation mIoU, in %).

    summary.py --run-dir results/<run> --rounds 0 1 2 --out results/<run>/round2/summary.csv [--no-ground-truth]
               [--shared-dir results/<base run>]

--no-ground-truth: the dataset has no GT masks; the table lists what each round produced.
--shared-dir: the base run folder that holds round 0 (a study's run, config `shared_prefix`).
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.report.summary import write_summary
from conta_core.script import script_doc, script_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=script_doc(__file__))
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--rounds", required=True, type=int, nargs="+")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-ground-truth", action="store_true")
    p.add_argument("--shared-dir", type=Path, default=None)
    return p


def run(args: argparse.Namespace) -> None:
    df = write_summary(
        args.run_dir, args.rounds, args.out, ground_truth=not args.no_ground_truth, shared_dir=args.shared_dir
    )
    print(df.to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
