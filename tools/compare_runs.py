#!/usr/bin/env python
"""Compare one round of two settings run in pairs, e.g. CONTA vs `context.mode: none` per seed.

Usage:
    python tools/compare_runs.py --round 1 --labels conta none \\
        --pair 0 results_seed0/default results_seed0_none/default \\
        --pair 1 results_seed1/default results_seed1_none/default [--classes car horse]

Each --pair is KEY RUN_DIR_A RUN_DIR_B (run dirs = results/<run>); the round's evaluation
CSVs are read as written by the workflow (cam_eval.csv, pseudo_mask_eval.csv,
seg_eval_*.csv). Prints one row per run (mIoU in %, per-class pseudo-mask IoU for
--classes) and, per metric, the mean and std of each setting and the paired difference
A - B (mean, min, max over the pairs that have it). Writes nothing.

--round-b T reads round T for B instead (round 1 vs round 0 of the same run:
--round 1 --round-b 0 --pair 0 RUN RUN ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from conta_core.report.summary import paired_comparison


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--round-b", type=int, default=None, help="round read for B (default: --round)")
    p.add_argument("--pair", nargs=3, action="append", required=True, metavar=("KEY", "RUN_A", "RUN_B"))
    p.add_argument("--labels", nargs=2, default=["a", "b"], metavar=("A", "B"))
    p.add_argument("--classes", nargs="*", default=[], help="class names for per-class pseudo-mask IoU columns")
    a = p.parse_args()
    pairs = {key: (Path(x), Path(y)) for key, x, y in a.pair}
    if len(pairs) != len(a.pair):
        raise SystemExit("--pair: keys must be unique")
    runs, summary = paired_comparison(pairs, a.round, a.classes, tuple(a.labels), a.round_b)
    print(runs.to_string(index=False))
    print()
    print(summary.to_string(index=False))


if __name__ == "__main__":
    main()
