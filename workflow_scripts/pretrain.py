#!/usr/bin/env python
"""Pre-train the backbone on generated isolated objects (the synthetic stand-in for ImageNet).

Usage:
    pretrain.py --cfg JSON --out PATH --log CSV [--device auto] [--threads N] [--seed S]

--cfg      the `pretrain` config section as JSON
--out      output weights (pretrain/<backbone>.pth): a torchvision ResNet state_dict without fc,
           for the `pretrained:` keys of classifier / segmentation / irn / amn
--log      per-iteration training log CSV (epoch, iter, loss, lr)
--device   auto | cpu | cuda | cuda:K (default auto)
--threads  torch intra-op threads
--seed     seed of the generated source images, initialisation and shuffling (default 0)
--pretrain-cache  reuse an identical earlier pre-training from <results_dir>/pretrain_cache/
           (config key pretrain_cache; conta_core.steps.pretrain.pretrain_cached)
--checkpoint  the `checkpoint` config section as JSON (resumable training; a rerun resumes from <out>.resume/)
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.infra.layout import PRETRAIN_CACHE, RunLayout
from conta_core.script import add_checkpoint_args, base_parser, script_doc, script_main, setup
from conta_core.steps.pretrain import pretrain_cached


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--log", dest="train_log", type=Path, required=True)
    p.add_argument("--pretrain-cache", action="store_true", help="reuse <results_dir>/pretrain_cache/ entries")
    add_checkpoint_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    cache = Path(RunLayout.run_of(args.out)).parent / PRETRAIN_CACHE if args.pretrain_cache else None
    pretrain_cached(cfg, args.seed, args.out, device, args.train_log, cache, checkpoint=args.checkpoint)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
