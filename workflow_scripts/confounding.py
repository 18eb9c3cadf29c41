#!/usr/bin/env python
"""Measures of the confounding (pair confusion, background and texture leak, part misses,
boundary F) of one stage of a round -> JSON.

Usage:
    confounding.py --cfg JSON --manifest PATH --split NAME --stage cam|pseudo_mask|seg_train|seg_val
                   --pred-dir DIR [--pred-dir DIR ...] --out JSON

--cfg        {"band": px, "cam_threshold": the background score of CAM argmaxes (cam.eval_threshold)}
--pred-dir   a shard folder of the stage: CAM .npz files (stage cam) or <id>.png label maps
--stage      cam: CAM argmax at cam_threshold (as the headline CAM mIoU); else the label maps
Writes conta_core.evaluation.confounding.ConfoundingAccumulator.result() plus stage and split; prints
the summary scalars. Runs on the CPU.
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.manifest import Manifest
from conta_core.evaluation.confounding import stage_measures
from conta_core.script import base_parser, script_doc, script_main, setup


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", type=_Path, required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--pred-dir", type=_Path, action="append", required=True)
    p.add_argument("--out", type=_Path, required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    out = stage_measures(Manifest.load(args.manifest), args.split, args.stage, args.pred_dir, cfg, args.out)
    keys = ("pair_confusion_mean", "bg_leak_context", "texture_leak_mean", "part_miss_mean", "boundary_f")
    print(", ".join(f"{k} {out[k]:.4f}" if out[k] is not None else f"{k} n/a" for k in keys))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
