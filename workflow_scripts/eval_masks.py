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

from __future__ import annotations

from pathlib import Path

from conta_core.data.manifest import Manifest
from conta_core.evaluate import evaluate_to_csv
from conta_core.runtime import base_parser, setup


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--pred-dir", type=Path, action="append", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    setup(args, needs_device=False)
    miou = evaluate_to_csv(Manifest.load(args.manifest), args.split, args.pred_dir, args.out, args.stage)
    print(f"{args.stage} {args.split} mIoU: {miou:.4f}")


if __name__ == "__main__":
    main()
