#!/usr/bin/env python
"""SEAM's multi-scale CAMs (from the PCM output cam_rv) for one shard of a split (method: seam).

CLI:
  make_seam_cam.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
                   --model SEAM.pth --out-dir DIR [--xm-dir DIR ...] [--device auto] [--threads N]

--cfg: {"cam_scales", "cam_flip"} (the seam section's). Writes <id>.npz in the standard CAM
format (conta_core.infra.fileio.save_cam); existing files are kept.
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
from conta_core.steps.seam import make_seam_cams


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
    make_seam_cams(manifest, ids, args.model, args.out_dir, cfg, device, xm_files=xm_index(args))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
