#!/usr/bin/env python
"""Train the CAM classifier of one round (IRNet CAM net; CONTA context for rounds t > 0).

CLI:
  train_cls.py --cfg JSON --manifest PATH --split train --out MODEL.pth --log LOG.csv
               [--xm-dir DIR ...] [--confounder C.h5]
               [--device auto] [--threads N] [--seed S] [--loader-workers W]

--cfg: {"classifier": {...}, "context": {...}} (config sections).
--xm-dir (repeatable): folders of X_m label PNGs <id>.png of the previous round (seg_pred
  shards, or pseudo_mask shards when context.confounder_source = pseudo).
--confounder: the previous round's confounder.h5. With both given and context.mode = conta
  the context classifier is trained; without them, the plain round-0 classifier.
--loader-workers: DataLoader worker processes (config loader_workers; default 0 = main process).
--checkpoint  the `checkpoint` config section as JSON (resumable training; a rerun resumes from <out>.resume/)
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
from conta_core.steps.train_cls import train_classifier


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="checkpoint path (model.pth)")
    p.add_argument("--log", dest="train_log", default=None, help="per-iteration CSV (epoch, iter, loss, lr)")
    add_xm_args(p, confounder=True)
    add_loader_args(p)
    add_checkpoint_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest = Manifest.load(args.manifest)
    train_classifier(
        manifest,
        manifest.ids(args.split),
        cfg["classifier"],
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
