#!/usr/bin/env python
"""Multi-scale CAMs of one shard of a split (IRNet make_cam); resumes by skipping existing files.

CLI:
  make_cam.py --cfg JSON --manifest PATH --split train --shard K --num-shards N
              --model MODEL.pth --out-dir DIR [--xm-dir DIR ...]
              [--device auto] [--threads N] [--seed S]

--cfg: the `cam:` section (scales, flip, ...).
--out-dir: round<t>/cam/<K>; writes <id>.npz (keys, cam, high_res) per image of shard K.
--xm-dir (repeatable): X_m label PNG folders, required for context classifiers (t > 0).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.script import (
    add_shard_args,
    add_xm_args,
    base_parser,
    script_doc,
    script_main,
    select_shard,
    setup,
    xm_index,
)
from conta_core.steps.cam import make_cams


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p, shard_defaults=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out-dir", required=True)
    add_xm_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest, ids = select_shard(args)
    make_cams(manifest, ids, args.model, args.out_dir, cfg, device, xm_files=xm_index(args))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
