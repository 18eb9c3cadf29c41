#!/usr/bin/env python
"""Report plots and tables of a run (conta_core.report.plots); one subcommand per figure.

    plots.py --cfg '<report section JSON>' miou --summary round2/summary.csv --out miou.png
    plots.py --cfg ... confounding --summary round2/summary.csv --out confounding.png
    plots.py --cfg ... cam-sweep --curve round0/cam_eval.csv [--curve ...] --out cam_sweep.png
    plots.py --cfg ... confounder --confounder round1/confounder.h5 --out confounder.png
    plots.py --cfg ... losses --log round0/cls/train_log.csv [--log ...] --out loss.png
    plots.py --cfg ... iou-table --eval round0/cam_eval.csv --eval round0/pseudo_mask_eval.csv [--eval ...]
             --out per_class_iou.csv

--cfg: the `report` config section (uses `dpi`). Each file's round and stage are read from
its path in the run layout (conta_core.infra.layout.RunLayout.describe). Stage "cam" in
iou-table reads a cam_eval.csv (IoU at the eval threshold); other stages read *_eval.csv.
"""

import argparse
import sys
from pathlib import Path
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core.infra.layout import RunLayout
from conta_core.report import plots
from conta_core.script import base_parser, script_doc, script_main, setup


def labelled(paths: list[Path]) -> list[tuple[int, str, Path]]:
    """[(round, name, path)] with round and name read from each path (RunLayout.describe)."""
    try:
        return [(*RunLayout.describe(p), Path(p)) for p in paths]
    except ValueError as e:
        raise SystemExit(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__))
    sub = p.add_subparsers(dest="figure", required=True)
    s = sub.add_parser("miou")
    s.add_argument("--summary", required=True, type=Path)
    s = sub.add_parser("confounding")
    s.add_argument("--summary", required=True, type=Path)
    s = sub.add_parser("cam-sweep")
    s.add_argument("--curve", required=True, action="append", type=Path, help="round<t>/cam_eval.csv")
    s = sub.add_parser("confounder")
    s.add_argument("--confounder", required=True, type=Path)
    s = sub.add_parser("losses")
    s.add_argument(
        "--log", dest="train_log", required=True, action="append", type=Path, help="round<t>/<model>/train_log.csv"
    )
    s = sub.add_parser("iou-table")
    s.add_argument("--eval", required=True, action="append", type=Path, help="round<t>/<eval>.csv")
    for s in sub.choices.values():
        s.add_argument("--out", required=True, type=Path)
    return p


def run(args: argparse.Namespace) -> None:
    cfg, _ = setup(args, needs_device=False)
    if "dpi" not in cfg:
        raise SystemExit("config key report.dpi: missing (--cfg)")
    dpi = int(cfg["dpi"])
    if args.figure == "miou":
        plots.plot_miou(args.summary, args.out, dpi)
    elif args.figure == "confounding":
        plots.plot_confounding(args.summary, args.out, dpi)
    elif args.figure == "cam-sweep":
        plots.plot_cam_sweep({f"round {t}": p for t, _, p in labelled(args.curve)}, args.out, dpi)
    elif args.figure == "confounder":
        plots.plot_confounder(args.confounder, args.out, dpi)
    elif args.figure == "losses":
        logs: dict[str, dict[int, Path]] = {}
        for t, stage, p in labelled(args.train_log):
            logs.setdefault(stage, {})[t] = p
        plots.plot_loss_curves(logs, args.out, dpi)
    else:
        plots.write_per_class_iou(labelled(args.eval), args.out)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
