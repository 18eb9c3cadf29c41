#!/usr/bin/env python
"""Evaluate label-map PNGs (IR labels, pseudo-masks, segmentation predictions) against GT.

Usage:
    eval_masks.py --cfg '{}' --manifest PATH --split NAME --pred-dir DIR [--pred-dir DIR ...]
                  --stage NAME --out CSV

--cfg        required by the shared parser; unused here (pass '{}')
--manifest   dataset manifest JSON
--split      split to evaluate; only its ids with a GT mask are scored
--pred-dir   a folder of <id>.png predictions; repeat for every shard folder
--stage      value of the CSV's `stage` column (e.g. pseudo_mask, seg, ir_label)
--out        output CSV: stage, class, iou, precision, recall, gt_pixels, pred_pixels;
             one row per class plus a final class="mean" row holding the mIoU
Prints the mIoU. Runs on the CPU.
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.manifest import Manifest
from conta_core.evaluation.evaluate import evaluate_to_csv
from conta_core.script import base_parser, script_doc, script_main, setup


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--pred-dir", type=Path, action="append", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--out", type=Path, required=True)
    return p


def run(args: argparse.Namespace) -> None:
    setup(args, needs_device=False)
    miou = evaluate_to_csv(Manifest.load(args.manifest), args.split, args.pred_dir, args.out, args.stage)
    print(f"{args.stage} {args.split} mIoU: {miou:.4f}")


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
