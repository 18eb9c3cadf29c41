#!/usr/bin/env python
"""Measure IR-label and random-walk thresholds on a finished round (how the defaults were set).

Usage:
    python tools/tune_thresholds.py --round-dir results/default/round0 [--num-images 80]
        [--ir 0.3,0.05 0.5,0.2 ...] [--rw 2,0.55 8,0.55 ...] [--config config/config.yaml]

For each --ir pair (fg, bg) it builds IR labels (with the config's CRF) for the first
`--num-images` train_eval images and prints the precision and pixel coverage of the
confident foreground and background against the GT. For each --rw pair (exp_times,
bg_threshold) it runs the random walk with the round's IRN on the same images and prints
the pseudo-mask mIoU. Nothing is written except temporary pseudo-masks (deleted).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.evaluation.evaluate import evaluate_label_maps
from conta_core.infra.config import load_config
from conta_core.infra.fileio import CAM_SUFFIX, IGNORE_LABEL, load_cam, load_image, load_label_png
from conta_core.steps.ir_label import cam_to_ir_label
from conta_core.steps.random_walk import make_pseudo_masks


def pair(text: str) -> tuple[float, float]:
    a, b = text.split(",")
    return float(a), float(b)


def ir_table(manifest: Manifest, ids: list[str], cams: dict, pairs: list, crf: dict) -> None:
    data = [(load_image(manifest.image_file(i)), load_cam(cams[i]), load_label_png(manifest.mask_file(i))) for i in ids]
    for fg_t, bg_t in pairs:
        fg_ok = fg_n = bg_ok = bg_n = total = 0
        for img, cam, gt in data:
            lab = cam_to_ir_label(img, cam["keys"], cam["high_res"], fg_t, bg_t, crf)
            valid = gt != 255
            total += valid.sum()
            fg = (lab > 0) & (lab != IGNORE_LABEL) & valid
            bg = (lab == 0) & valid
            fg_n, fg_ok = fg_n + fg.sum(), fg_ok + (lab[fg] == gt[fg]).sum()
            bg_n, bg_ok = bg_n + bg.sum(), bg_ok + (gt[bg] == 0).sum()
        print(
            f"ir fg {fg_t:.2f} bg {bg_t:.2f}: fg precision {fg_ok / max(fg_n, 1):.3f} coverage {fg_n / total:.3f}"
            f" | bg precision {bg_ok / max(bg_n, 1):.3f} coverage {bg_n / total:.3f}",
            flush=True,
        )


def rw_table(manifest: Manifest, ids: list[str], cams: dict, irn: Path, pairs: list, rw_cfg: dict) -> None:
    for exp_times, bg_t in pairs:
        cfg = {**rw_cfg, "exp_times": int(exp_times), "bg_threshold": bg_t}
        with tempfile.TemporaryDirectory() as tmp:
            make_pseudo_masks(manifest, ids, cams, irn, Path(tmp), cfg, torch.device("cpu"))
            miou, _ = evaluate_label_maps(manifest, ids, index_artifacts([Path(tmp)], ".png"))
        print(f"rw exp_times {int(exp_times)} bg {bg_t:.2f}: pseudo-mask mIoU {100 * miou:.1f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round-dir", type=Path, required=True)
    p.add_argument("--num-images", type=int, default=80)
    p.add_argument("--ir", type=pair, nargs="*", default=[(0.30, 0.05), (0.50, 0.20), (0.70, 0.30)])
    p.add_argument("--rw", type=pair, nargs="*", default=[(8, 0.55), (2, 0.55), (1, 0.55)])
    p.add_argument(
        "--config", type=Path, default=None, help="config for the CRF / walk settings (default: the default)"
    )
    args = p.parse_args()
    cfg = load_config(args.config) if args.config else load_config()
    manifest = Manifest.load(args.round_dir.parent / "data/manifest.json")
    ids = manifest.ids("train_eval")[: args.num_images]
    cams = index_artifacts(sorted(d for d in (args.round_dir / "cam").iterdir() if d.is_dir()), CAM_SUFFIX)
    torch.set_num_threads(cfg["threads"])
    ir_table(manifest, ids, cams, args.ir, cfg["ir_label"]["crf"])
    rw_table(manifest, ids, cams, args.round_dir / "irn/model.pth", args.rw, cfg["random_walk"])


if __name__ == "__main__":
    main()
