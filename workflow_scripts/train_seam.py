#!/usr/bin/env python
"""Train SEAM of one round (method: seam; CONTA context at block 5 for t > 0).

CLI:
  train_seam.py --cfg JSON --manifest PATH [--split train] --out MODEL.pth [--log LOG.csv]
                [--xm-dir DIR ...] [--confounder C.h5] [--device auto] [--threads N] [--seed S]
                [--loader-workers W] [--checkpoint JSON]

--cfg: {"seam": {...}, "context": {...}} (config sections).
--xm-dir (repeatable) / --confounder: X_m folders and confounder.h5 of the previous round, as
  for train_cls.py; with both and context.mode conta / placebo SEAM gets the context module.
Writes MODEL.pth (kind "seam": {"state_dict", "config": {"seam", "context", "num_fg"}, ...}) and
the per-iteration LOG.csv (epoch, iter, loss, lr, loss_cls, loss_er, loss_ecr).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.manifest import Manifest
from conta_core.script import (
    add_checkpoint_args,
    add_loader_args,
    add_xm_args,
    base_parser,
    script_doc,
    script_main,
    setup,
    xm_index,
)
from conta_core.steps.seam import train_seam


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="checkpoint path (model.pth)")
    p.add_argument("--log", dest="train_log", default=None, help="per-iteration CSV")
    add_xm_args(p, confounder=True)
    add_loader_args(p)
    add_checkpoint_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest = Manifest.load(args.manifest)
    train_seam(
        manifest,
        manifest.ids(args.split),
        cfg["seam"],
        cfg.get("context"),
        device,
        args.out,
        args.seed,
        log_csv=args.train_log,
        xm_files=xm_index(args),
        confounder_path=args.confounder,
        num_workers=args.loader_workers,
        checkpoint=args.checkpoint,
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
