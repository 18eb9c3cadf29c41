#!/usr/bin/env python
"""IR labels (CAM + dense CRF) of one shard of a split: the training labels of the walk's network.

Usage:
    make_ir_label.py --cfg JSON --manifest PATH --shard K --num-shards N [--split train]
                     --cams-dir DIR [--cams-dir DIR ...] --out-dir DIR [--method irn|amn|seam]
                     [--threads N]

--method     the seed method (config key `method`; default irn); its step function
             (conta_core.infra.methods): irn, amn: conta_core.steps.ir_label.make_ir_labels
             (fg/bg confidence thresholds); seam: conta_core.steps.seam.make_seam_crf_labels
             (low / high-alpha CRF scores for AffinityNet)
--cfg        irn, amn: the `ir_label` config section as JSON {"fg_threshold", "bg_threshold",
             "crf": {...}}; seam: {"crf_alphas", "crf"} (the seam section's)
--manifest   dataset manifest JSON
--shard K / --num-shards N   this job's shard (conta_core.infra.shards.shard_ids of the split's ids)
--split      split whose images get IR labels (default: train)
--cams-dir   a folder of <id>.npz CAMs; repeat for every CAM shard folder of the round
--out-dir    output folder; writes <id>.png (uint8: 0 bg, 1..C class, 255 uncertain); seam
             also <id>.npz {"keys", "la", "ha"}
--threads    CRF worker processes (default 1)
Runs on the CPU; existing outputs are kept (resume).
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
    p.add_argument("--out-dir", type=Path, required=True)
    add_method_arg(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    make_labels = step_function(args.method, "make_ir_label")
    manifest, ids = select_shard(args)
    make_labels(manifest, ids, index_artifacts(args.cams_dir, CAM_SUFFIX), args.out_dir, cfg, args.threads)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
