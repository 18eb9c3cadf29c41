#!/usr/bin/env python
"""Multi-scale CAMs of one shard of a split from the round's cls model; resumes by skipping existing files.

CLI:
  make_cam.py --cfg JSON --manifest PATH [--split train] --shard K --num-shards N
              --model MODEL.pth --out-dir DIR [--xm-dir DIR ...] [--method irn|amn|seam]
              [--device auto] [--threads N] [--seed S]

--method: the seed method (config key `method`; default irn); its step function
  (conta_core.infra.methods): irn, amn: conta_core.steps.cam.make_cams (IRNet make_cam);
  seam: conta_core.steps.seam.make_seam_cams (SEAM's PCM output cam_rv).
--cfg: the `cam:` section (scales, flip, ...); seam: {"cam_scales", "cam_flip"} (the seam section's).
--out-dir: round<t>/cam/<K>; writes <id>.npz (keys, cam, high_res) per image of shard K
  (conta_core.infra.fileio.save_cam, the same format for every method).
--xm-dir (repeatable): X_m label PNG folders, required for context models (t > 0).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.script import (
    add_method_arg,
    add_shard_args,
    add_xm_args,
    base_parser,
    script_doc,
    script_main,
    select_shard,
    setup,
    step_function,
    xm_index,
)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p, shard_defaults=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out-dir", required=True)
    add_xm_args(p)
    add_method_arg(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    make_cams = step_function(args.method, "make_cam")
    manifest, ids = select_shard(args)
    make_cams(manifest, ids, args.model, args.out_dir, cfg, device, xm_files=xm_index(args))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
