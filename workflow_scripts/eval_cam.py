#!/usr/bin/env python
"""CAM mIoU over a background-threshold sweep (IRNet eval_cam + sweep) -> CSV.

CLI:
  eval_cam.py --cfg JSON --manifest PATH --split train_eval --cams-dir DIR [--cams-dir DIR ...]
              --out cam_eval.csv [--threads N]

--cfg: the `cam:` section (sweep [start, stop, step], eval_threshold).
Writes one row per threshold: threshold, miou, one IoU column per class, is_eval_threshold,
is_best; prints the eval-threshold and the best mIoU.
"""

from conta_core.cam import eval_cam_to_csv
from conta_core.data.manifest import Manifest
from conta_core.runtime import base_parser, setup


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train_eval")
    p.add_argument("--cams-dir", action="append", required=True, help="CAM shard folder (repeatable)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg, _ = setup(args, needs_device=False)
    df = eval_cam_to_csv(Manifest.load(args.manifest), args.split, args.cams_dir, cfg, args.out)
    ev = df[df["is_eval_threshold"]].iloc[0]
    best = df[df["is_best"]].iloc[0]
    print(f"CAM mIoU at eval threshold {ev['threshold']:.2f}: {ev['miou']:.4f}")
    print(f"best CAM mIoU {best['miou']:.4f} at threshold {best['threshold']:.2f}")


if __name__ == "__main__":
    main()
