#!/usr/bin/env python
"""Prepare the configured dataset and write its manifest (rule prepare_data, CPU only).

Usage:
  prepare_data.py --cfg JSON --out-dir DIR [--threads N] [--seed S] [--device D]

--cfg      the `dataset` config section as a JSON object (kind, root, synthetic, sbd_root,
           csv, masks_dir, class_names, check_images)
--out-dir  output folder: DIR/manifest.json; generated data under DIR/synthetic/ (synthetic),
           converted masks under DIR/SegmentationClassAug/ (voc12 + SBD) or
           DIR/coco14_masks/ (coco14)
--threads  threads for the image/mask checks, processes for the COCO mask conversion
"""

from pathlib import Path

from conta_core.data.prepare import prepare_dataset
from conta_core.runtime import base_parser, setup


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True, type=Path, help="folder for manifest.json and generated data")
    args = p.parse_args()
    cfg, _ = setup(args, needs_device=False)
    prepare_dataset(cfg, args.out_dir, check_images=bool(cfg.get("check_images", True)), workers=args.threads)


if __name__ == "__main__":
    main()
