#!/usr/bin/env python
"""Train the round's cls model: the seed method's classifier (CONTA context for rounds t > 0).

CLI:
  train_cls.py --cfg JSON --manifest PATH [--split train] --out MODEL.pth [--log LOG.csv]
               [--xm-dir DIR ...] [--confounder C.h5] [--method irn|amn|seam]
               [--device auto] [--threads N] [--seed S] [--loader-workers W] [--checkpoint JSON]

--method: the seed method (config key `method`; default irn); its step function
  (conta_core.infra.methods): irn, amn: conta_core.steps.train_cls.train_classifier (the IRNet
  CAM net); seam: conta_core.steps.seam.train_seam (SEAM, checkpoint kind "seam", LOG.csv with
  loss_cls, loss_er, loss_ecr).
--cfg: {<section>: {...}, "context": {...}}: the method's cls section (classifier; seam: the
  seam training keys, conta_core.infra.rule_configs) and the context section.
--xm-dir (repeatable): folders of X_m label PNGs <id>.png of the previous round (seg_pred
  shards, or pseudo_mask shards when context.confounder_source = pseudo).
--confounder: the previous round's confounder.h5. With both given and context.mode conta /
  placebo the context model is trained; without them, the plain round-0 model.
--log: per-iteration CSV (epoch, iter, loss, lr, ...).
--loader-workers: DataLoader worker processes (config loader_workers; default 0 = main process).
--checkpoint: the `checkpoint` config section as JSON (resumable training; a rerun resumes from <out>.resume/).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.manifest import Manifest
from conta_core.infra.methods import method
from conta_core.script import (
    add_method_arg,
    add_train_args,
    add_xm_args,
    base_parser,
    script_doc,
    script_main,
    setup,
    step_function,
    xm_index,
)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_train_args(p)
    add_xm_args(p, confounder=True)
    add_method_arg(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    train = step_function(args.method, "train_cls")
    manifest = Manifest.load(args.manifest)
    train(
        manifest,
        manifest.ids(args.split),
        cfg[method(args.method).cls_section],
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
