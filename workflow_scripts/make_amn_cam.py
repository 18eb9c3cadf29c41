#!/usr/bin/env python
"""Multi-scale + flip AMN maps of one shard of a split, in the CAM .npz format; resumes.

CLI:
  make_amn_cam.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                  --model AMN.pth --ir-label-dir DIR [--ir-label-dir DIR ...] --out-dir DIR
                  [--xm-dir DIR ...] [--device auto] [--threads N] [--seed S]

--cfg: {"scales", "flip"} (the cam section's) and "inference_dropout" (amn's).
--model: the round's amn/model.pth (train_amn.py).
--ir-label-dir (repeatable): shard folders of the round's first-stage IR labels (AMN's
  normalisation mask: maps are min-max normalised where the seed is not background).
--out-dir: round<t>/amn_cam/<K>; writes <id>.npz (keys, cam, high_res: the K foreground maps).
--xm-dir (repeatable): X_m label PNG folders, required for context models (t > 0).
--seed: seeds torch (only matters with inference_dropout).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
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
from conta_core.steps.amn import make_amn_cams


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p, shard_defaults=True)
    p.add_argument("--model", required=True)
    p.add_argument("--ir-label-dir", action="append", required=True, help="IR label shard folder (repeatable)")
    p.add_argument("--out-dir", required=True)
    add_xm_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest, ids = select_shard(args)
    ir_label_files = index_artifacts(args.ir_label_dir, ".png")
    make_amn_cams(manifest, ids, args.model, args.out_dir, cfg, device, ir_label_files, xm_files=xm_index(args))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
