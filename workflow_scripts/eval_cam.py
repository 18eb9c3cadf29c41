#!/usr/bin/env python
"""CAM mIoU over a background-threshold sweep (IRNet eval_cam + sweep) -> CSV.

CLI:
  eval_cam.py --cfg JSON --manifest PATH --split train_eval --cams-dir DIR [--cams-dir DIR ...]
              --out cam_eval.csv [--threads N]

--cfg: the `cam:` section (sweep [start, stop, step], eval_threshold).
Writes one row per threshold: threshold, miou, one IoU column per class, is_eval_threshold,
is_best; prints the eval-threshold and the best mIoU.
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.manifest import Manifest
from conta_core.evaluation.cam_eval import eval_cam_to_csv
from conta_core.script import base_parser, script_doc, script_main, setup


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train_eval")
    p.add_argument("--cams-dir", action="append", required=True, help="CAM shard folder (repeatable)")
    p.add_argument("--out", required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    df = eval_cam_to_csv(Manifest.load(args.manifest), args.split, args.cams_dir, cfg, args.out)
    ev = df[df["is_eval_threshold"]].iloc[0]
    best = df[df["is_best"]].iloc[0]
    print(f"CAM mIoU at eval threshold {ev['threshold']:.2f}: {ev['miou']:.4f}")
    print(f"best CAM mIoU {best['miou']:.4f} at threshold {best['threshold']:.2f}")


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
