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

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.prepare import prepare_dataset
from conta_core.script import base_parser, script_doc, script_main, setup


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--out-dir", required=True, type=Path, help="folder for manifest.json and generated data")
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    prepare_dataset(cfg, args.out_dir, check_images=bool(cfg.get("check_images", True)), workers=args.threads)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
