#!/usr/bin/env python
"""Train the DeepLab-v2 segmentation model of one round on the pseudo-masks.

Usage:
  train_seg.py --cfg JSON --manifest MANIFEST.json [--split train]
               --label-dir DIR [--label-dir DIR ...] --out MODEL.pth --log LOG.csv
               [--device auto] [--threads 1] [--seed 0] [--loader-workers 0]

--cfg        the `segmentation` config section as a JSON object (an object of the form
             {"segmentation": {...}} is accepted too)
--manifest   dataset manifest (conta_core.data.manifest)
--split      manifest split whose ids are trained on (default: train)
--label-dir  a pseudo-mask shard folder holding <id>.png; repeat once per shard
--out        final checkpoint ({"state_dict", "config", "num_classes", "iteration"})
--log        training log CSV (iteration, loss, lr)
--loader-workers  DataLoader worker processes (config loader_workers; default 0 = main process)
--checkpoint  the `checkpoint` config section as JSON (resumable training; a rerun resumes from <out>.resume/)
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.script import add_train_args, base_parser, script_doc, script_main, setup
from conta_core.steps.segment import train_segmentation


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--label-dir", action="append", required=True, type=Path)
    add_train_args(p, log_required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    cfg_seg = cfg.get("segmentation", cfg)
    manifest = Manifest.load(args.manifest)
    label_files = index_artifacts(args.label_dir, ".png")
    train_segmentation(
        manifest,
        manifest.ids(args.split),
        label_files,
        cfg_seg,
        device,
        args.out,
        args.seed,
        args.train_log,
        num_workers=args.loader_workers,
        checkpoint=args.checkpoint,
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
