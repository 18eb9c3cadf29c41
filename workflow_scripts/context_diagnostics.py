#!/usr/bin/env python
"""Context diagnostics of one round's context classifier (conta_core.evaluation.context_diagnostics).

CLI:
  context_diagnostics.py --cfg JSON --manifest PATH --split train_eval --model MODEL.pth
                         --xm-dir DIR [--xm-dir DIR ...] --train-log LOG.csv --out JSON
                         [--device auto] [--threads N]

--cfg: {"diagnostics_images": N} (context.diagnostics_images).
--xm-dir (repeatable): the X_m folders the round's classifier was trained with.
--out: round<t>/context_diagnostics.json; an inert context is logged as a warning.
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.manifest import Manifest
from conta_core.evaluation.context_diagnostics import write_context_diagnostics
from conta_core.script import add_xm_args, base_parser, script_doc, script_main, setup, xm_index


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train_eval")
    p.add_argument("--model", required=True)
    p.add_argument("--train-log", default=None)
    p.add_argument("--out", required=True)
    add_xm_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args)
    if not args.xm_dir:
        raise SystemExit("context_diagnostics.py: --xm-dir is required (the X_m folders of the round)")
    manifest = Manifest.load(args.manifest)
    write_context_diagnostics(
        args.out,
        model_path=args.model,
        manifest=manifest,
        ids=manifest.ids(args.split),
        xm_files=xm_index(args),
        device=device,
        train_log=args.train_log,
        max_images=int(cfg["diagnostics_images"]),
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
