#!/usr/bin/env python
"""Pseudo-masks by AffinityNet's random walk (SEAM's infer_aff) for one shard (method: seam).

CLI:
  seam_random_walk.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                      --cams-dir DIR [--cams-dir DIR ...] --aff AFF.pth --out-dir DIR
                      [--device auto] [--threads N]

--cfg: the `seam.walk` section {"beta", "logt", "alpha"}. Writes <id>.png (0 bg, 1..C); resumes.
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.infra.fileio import CAM_SUFFIX
from conta_core.script import add_shard_args, base_parser, script_doc, script_main, select_shard, setup
from conta_core.steps.seam import make_seam_pseudo_masks


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p)
    p.add_argument("--cams-dir", action="append", required=True)
    p.add_argument("--aff", required=True)
    p.add_argument("--out-dir", required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest, ids = select_shard(args)
    make_seam_pseudo_masks(
        manifest, ids, index_artifacts(args.cams_dir, CAM_SUFFIX), args.aff, args.out_dir, cfg, device
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
