#!/usr/bin/env python
"""Train the IRNet boundary network on one round's IR labels.

Usage:
    train_irn.py --cfg JSON --manifest PATH [--split train]
                 --ir-label-dir DIR [--ir-label-dir DIR ...] [--classifier PATH]
                 --out PATH --log CSV [--device auto] [--threads N] [--seed S] [--loader-workers W]

--cfg           the `irn` config section as JSON
--manifest      dataset manifest JSON
--split         split whose images train the network (default: train)
--ir-label-dir  a folder of <id>.png IR labels; repeat for every IR-label shard folder
--classifier    the round's CAM classifier checkpoint (cls/model.pth); required when
                irn.backbone_init is "classifier", ignored otherwise
--out           output checkpoint (irn/model.pth): {"state_dict", "config", ...}
--log           per-iteration training log CSV (epoch, iter, loss, lr, pos_bg, pos_fg, neg)
--device        auto | cpu | cuda | cuda:K (default auto)
--threads       torch intra-op threads
--seed          seed of initialisation, shuffling and augmentation (default 0)
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
from conta_core.steps.irn import load_classifier_state, train_irn


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--ir-label-dir", type=Path, action="append", required=True)
    p.add_argument("--classifier", type=Path, default=None)
    add_train_args(p, log_required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest = Manifest.load(args.manifest)
    init_state = None
    if cfg.get("backbone_init") == "classifier":
        if args.classifier is None:
            raise SystemExit("--classifier is required when irn.backbone_init is 'classifier'")
        init_state = load_classifier_state(args.classifier)
    train_irn(
        manifest,
        manifest.ids(args.split),
        index_artifacts(args.ir_label_dir, ".png"),
        cfg,
        device,
        args.out,
        init_state,
        args.seed,
        args.train_log,
        num_workers=args.loader_workers,
        checkpoint=args.checkpoint,
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
