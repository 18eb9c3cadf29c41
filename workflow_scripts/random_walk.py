#!/usr/bin/env python
"""Pseudo-masks by the seed method's random walk for one shard of a split.

Usage:
    random_walk.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                   --cams-dir DIR [--cams-dir DIR ...] --model PATH --out-dir DIR
                   [--method irn|amn|seam] [--device auto] [--threads N]

--method     the seed method (config key `method`; default irn); its step function
             (conta_core.infra.methods): irn, amn: conta_core.steps.random_walk.make_pseudo_masks
             (IRNet's boundary-guided walk); seam: conta_core.steps.seam.make_seam_pseudo_masks
             (AffinityNet's walk, SEAM's infer_aff)
--cfg        irn, amn: the `random_walk` config section as JSON {"radius", "beta", "exp_times",
             "bg_threshold"} (amn: with cam_power); seam: the `seam.walk` section {"beta", "logt", "alpha"}
--manifest   dataset manifest JSON
--split      split whose images get pseudo-masks (default: train)
--shard K / --num-shards N   this job's shard (conta_core.infra.shards.shard_ids of the split's ids)
--cams-dir   a folder of <id>.npz maps; repeat for every shard folder of the round
--model      the round's walk network (also --irn): irn/model.pth (train_irn.py; irn, amn) or
             aff/model.pth (train_aff.py; seam)
--out-dir    output folder; writes <id>.png VOC-palette masks (0 bg, 1..C class)
--device     auto | cpu | cuda | cuda:K (default auto)
--threads    torch intra-op threads
Existing outputs are kept (resume).
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.infra.fileio import CAM_SUFFIX
from conta_core.script import (
    add_method_arg,
    add_shard_args,
    base_parser,
    script_doc,
    script_main,
    select_shard,
    setup,
    step_function,
)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p)
    p.add_argument("--cams-dir", type=Path, action="append", required=True)
    p.add_argument("--model", "--irn", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    add_method_arg(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    make_masks = step_function(args.method, "random_walk")
    manifest, ids = select_shard(args)
    make_masks(manifest, ids, index_artifacts(args.cams_dir, CAM_SUFFIX), args.model, args.out_dir, cfg, device)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
