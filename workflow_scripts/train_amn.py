#!/usr/bin/env python
"""Train AMN of one round on the round's first-stage seeds (method: amn; CONTA context for t > 0).

CLI:
  train_amn.py --cfg JSON --manifest PATH [--split train] --ir-label-dir DIR [--ir-label-dir DIR ...]
               --out MODEL.pth [--log LOG.csv] [--classifier CLS.pth]
               [--xm-dir DIR ...] [--confounder C.h5]
               [--device auto] [--threads N] [--seed S] [--loader-workers W]

--cfg: {"amn": {...}, "context": {...}} (config sections; amn without the post-processing
  keys eval_threshold, ir_fg_threshold, ir_bg_threshold, rw_power).
--ir-label-dir (repeatable): shard folders of the round's IR labels <id>.png (CAM + CRF seeds).
--classifier: the round's cls/model.pth, required with amn.backbone_init = classifier.
--xm-dir (repeatable) / --confounder: X_m folders and confounder.h5 of the previous round, as
  for train_cls.py; with both and context.mode = conta AMN gets the context module.
--loader-workers: DataLoader worker processes (config loader_workers; default 0 = main process).
Writes MODEL.pth {"state_dict", "config": {"amn", "context", "num_fg"}, ...} and the
per-iteration LOG.csv (epoch, iter, loss, lr, loss_bg, loss_fg).
--checkpoint  the `checkpoint` config section as JSON (resumable training; a rerun resumes from <out>.resume/)
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.script import (
    add_train_args,
    add_xm_args,
    base_parser,
    script_doc,
    script_main,
    setup,
    xm_index,
)
from conta_core.steps.amn import train_amn


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_train_args(p)
    p.add_argument("--ir-label-dir", action="append", required=True, help="IR label shard folder (repeatable)")
    p.add_argument("--classifier", default=None, help="this round's CAM classifier checkpoint")
    add_xm_args(p, confounder=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest = Manifest.load(args.manifest)
    train_amn(
        manifest,
        manifest.ids(args.split),
        index_artifacts(args.ir_label_dir, ".png"),
        cfg["amn"],
        cfg.get("context"),
        device,
        args.out,
        args.seed,
        log_csv=args.train_log,
        classifier_path=args.classifier,
        xm_files=xm_index(args),
        confounder_path=args.confounder,
        num_workers=args.loader_workers,
        checkpoint=args.checkpoint,
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
