#!/usr/bin/env python
"""Predict segmentation label maps (palette PNGs) for one shard of a split.

Usage:
  infer_seg.py --cfg JSON --manifest MANIFEST.json --split {train,val}
               --shard K --num-shards N --model MODEL.pth --out-dir DIR
               [--device auto] [--threads 1]

--cfg         the `segmentation` config section as a JSON object ({"segmentation": {...}}
              accepted too); infer.scales / infer.flip / infer.crf and crf are used, the
              architecture comes from the checkpoint
--manifest    dataset manifest (conta_core.data.manifest)
--split       manifest split to predict (train: X_m for CONTA; val: scoring)
--shard       0-based shard index; --num-shards: number of shards (conta_core.infra.shards)
--model       checkpoint written by train_seg.py
--out-dir     writes <out-dir>/<id>.png (0 bg, 1..C); existing files are kept (resume)
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.script import add_shard_args, base_parser, script_doc, script_main, select_shard, setup
from conta_core.steps.segment import infer_segmentation


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    add_shard_args(p, split_default=None)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    cfg_seg = cfg.get("segmentation", cfg)
    manifest, ids = select_shard(args)
    infer_segmentation(manifest, ids, args.model, args.out_dir, cfg_seg, device)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
