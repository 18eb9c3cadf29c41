#!/usr/bin/env python
"""Train AffinityNet of one round on SEAM's CRF labels (method: seam).

CLI:
  train_aff.py --cfg JSON --manifest PATH [--split train] --label-dir DIR [--label-dir DIR ...]
               --out MODEL.pth [--log LOG.csv] [--seam SEAM.pth] [--device auto] [--threads N]
               [--seed S] [--loader-workers W] [--checkpoint JSON]

--cfg: the `seam` section (with its `aff` subsection). --label-dir: shard folders of
make_ir_label.py with method seam (<id>.npz, conta_core.steps.seam.make_seam_crf_labels).
--seam: the round's SEAM checkpoint (seam.aff.backbone_init seam). Writes MODEL.pth (kind
"affinity") and LOG.csv (epoch, iter, loss, lr, loss_bg, loss_fg, loss_neg).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.script import add_train_args, base_parser, script_doc, script_main, setup
from conta_core.steps.seam import LABEL_SUFFIX, train_affinity


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_train_args(p)
    p.add_argument("--label-dir", action="append", required=True, help="CRF label shard folder (repeatable)")
    p.add_argument("--seam", default=None, help="this round's SEAM checkpoint (cls/model.pth)")
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    manifest = Manifest.load(args.manifest)
    train_affinity(
        manifest,
        manifest.ids(args.split),
        index_artifacts(args.label_dir, LABEL_SUFFIX),
        cfg,
        device,
        args.out,
        args.seed,
        log_csv=args.train_log,
        seam_path=args.seam,
        num_workers=args.loader_workers,
        checkpoint=args.checkpoint,
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
