#!/usr/bin/env python
"""Pseudo-masks by IRNet's boundary-guided random walk for one shard of a split.

Usage:
    random_walk.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                   --cams-dir DIR [--cams-dir DIR ...] --irn PATH --out-dir DIR
                   [--device auto] [--threads N]

--cfg        the `random_walk` config section as JSON: {"radius", "beta", "exp_times", "bg_threshold"}
--manifest   dataset manifest JSON
--split      split whose images get pseudo-masks (default: train)
--shard K / --num-shards N   this job's shard (conta_core.infra.shards.shard_ids of the split's ids)
--cams-dir   a folder of <id>.npz CAMs; repeat for every CAM shard folder of the round
--irn        the round's IRN checkpoint (irn/model.pth, from train_irn.py)
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
from conta_core.script import add_shard_args, base_parser, script_doc, script_main, select_shard, setup
from conta_core.steps.random_walk import make_pseudo_masks


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p)
    p.add_argument("--cams-dir", type=Path, action="append", required=True)
    p.add_argument("--irn", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest, ids = select_shard(args)
    make_pseudo_masks(manifest, ids, index_artifacts(args.cams_dir, CAM_SUFFIX), args.irn, args.out_dir, cfg, device)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
