#!/usr/bin/env python
"""Render per-image overview grids of a run (conta_core.report.visualize.render_samples).

    visualize.py --cfg '<report section JSON>' --run-dir results/<run> --rounds 0 1 2
                 --out-dir results/<run>/round2/figures/samples [--ids ID ...] [--seed S]
                 [--device cpu] [--threads N]

--cfg: the `report` config section: num_images (sampled from train_eval with --seed when no
ids are given), image_ids (list or null; --ids overrides), tile_px, dpi.
The grids read the run folder layout (round<t>/cam, ir_label, pseudo_mask, seg_pred,
cls/model.pth for M_t) directly; missing artifacts are drawn as grey tiles.
--shared-dir: the base run folder holding data/ and round 0 (a study's run, config shared_prefix).
Writes out-dir/<id>.png, one per image.
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.report.visualize import render_samples
from conta_core.script import base_parser, script_doc, script_main, setup


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__))
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--rounds", required=True, type=int, nargs="+")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--ids", nargs="+", default=None)
    p.add_argument("--shared-dir", type=Path, default=None)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, device = setup(args, needs_device=False)
    for key in ("num_images", "tile_px", "dpi"):
        if key not in cfg:
            raise SystemExit(f"--cfg: report.{key} is missing")
    ids = args.ids if args.ids is not None else cfg.get("image_ids")
    render_samples(
        args.run_dir,
        args.rounds,
        ids,
        int(cfg["num_images"]),
        args.seed,
        args.out_dir,
        tile_px=int(cfg["tile_px"]),
        dpi=int(cfg["dpi"]),
        device=device,
        shared_dir=args.shared_dir,
    )


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
