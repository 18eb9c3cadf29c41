#!/usr/bin/env python
"""Write the per-round summary table (CAM / pseudo-mask / segmentation mIoU, in %).

    summary.py --run-dir results/<run> --rounds 0 1 2 --out results/<run>/round2/summary.csv
"""

import argparse
from pathlib import Path

from conta_core.summary import write_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--rounds", required=True, type=int, nargs="+")
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()
    df = write_summary(a.run_dir, a.rounds, a.out)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
