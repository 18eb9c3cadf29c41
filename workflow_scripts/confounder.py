#!/usr/bin/env python
"""Build the confounder set C (class-average masks) of a round -> HDF5.

CLI:
  confounder.py --cfg JSON --manifest PATH --split train --mask-dir DIR [--mask-dir DIR ...]
                --round T --source seg|pseudo --out confounder.h5 [--threads N]

--cfg: the `context:` section (size, confounder_resize).
--mask-dir (repeatable): label PNG folders, seg_pred/<split>/<shard> (source seg) or
  pseudo_mask/<shard> (source pseudo).
"""

import argparse
import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.script import base_parser, script_doc, script_main, setup
from conta_core.steps.confounder import build_confounder, save_confounder


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__).splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--mask-dir", action="append", required=True, help="mask folder (repeatable)")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--source", choices=["seg", "pseudo"], required=True)
    p.add_argument("--out", required=True)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    if "size" not in cfg:
        raise SystemExit("--cfg: context.size missing")
    manifest = Manifest.load(args.manifest)
    labels = {i: manifest.labels[i] for i in manifest.ids(args.split)}
    C, counts = build_confounder(
        index_artifacts(args.mask_dir, ".png"),
        labels,
        manifest.num_fg,
        tuple(cfg["size"]),
        resize=cfg.get("confounder_resize", "area"),
    )
    save_confounder(args.out, C, counts, manifest.class_names[1:], args.round, args.source)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
