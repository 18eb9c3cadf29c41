#!/usr/bin/env python
"""Report plots and tables of a run (conta_core.plots); one subcommand per figure.

    plots.py --cfg '<report section JSON>' miou --summary round2/summary.csv --out miou.png
    plots.py --cfg ... cam-sweep --curve "round 0=round0/cam_eval.csv" [--curve ...] --out cam_sweep.png
    plots.py --cfg ... confounder --confounder round1/confounder.h5 --out confounder.png
    plots.py --cfg ... losses --log cls:0=round0/cls/train_log.csv [--log STAGE:ROUND=CSV ...] --out loss.png
    plots.py --cfg ... iou-table --eval 0:cam=round0/cam_eval.csv --eval 0:pseudo_mask=round0/pseudo_mask_eval.csv
             [--eval ROUND:STAGE=CSV ...] --out per_class_iou.csv

--cfg: the `report` config section (uses `dpi`). Stage "cam" in iou-table reads a
cam_eval.csv (IoU at the eval threshold); other stages read *_eval.csv tables.
"""

import argparse
from pathlib import Path

import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this workflow's conta_core, also in a bare conda env

from conta_core import plots
from conta_core.runtime import base_parser, script_doc, script_main, setup


def _split(spec: str, sep: str, flag: str) -> tuple[str, str]:
    head, found, tail = spec.partition(sep)
    if not found or not head or not tail:
        raise SystemExit(f"{flag} {spec!r}: expected the form A{sep}B")
    return head, tail


def _round(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{flag}: round must be an integer, got {value!r}")


def parse_logs(specs: list[str]) -> dict[str, dict[int, Path]]:
    """["cls:0=path", ...] -> {"cls": {0: Path}}."""
    logs: dict[str, dict[int, Path]] = {}
    for spec in specs:
        key, path = _split(spec, "=", "--log")
        stage, t = _split(key, ":", "--log")
        logs.setdefault(stage, {})[_round(t, "--log")] = Path(path)
    return logs


def parse_evals(specs: list[str]) -> list[tuple[int, str, Path]]:
    """["0:cam=path", ...] -> [(0, "cam", Path)]."""
    out = []
    for spec in specs:
        key, path = _split(spec, "=", "--eval")
        t, stage = _split(key, ":", "--eval")
        out.append((_round(t, "--eval"), stage, Path(path)))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(script_doc(__file__))
    sub = p.add_subparsers(dest="figure", required=True)
    s = sub.add_parser("miou")
    s.add_argument("--summary", required=True, type=Path)
    s = sub.add_parser("cam-sweep")
    s.add_argument("--curve", required=True, action="append", help="LABEL=cam_eval.csv")
    s = sub.add_parser("confounder")
    s.add_argument("--confounder", required=True, type=Path)
    s = sub.add_parser("losses")
    s.add_argument("--log", dest="train_log", required=True, action="append", help="STAGE:ROUND=train_log.csv")
    s = sub.add_parser("iou-table")
    s.add_argument("--eval", required=True, action="append", help="ROUND:STAGE=eval.csv")
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
    elif args.figure == "cam-sweep":
        curves = dict(_split(c, "=", "--curve") for c in args.curve)
        plots.plot_cam_sweep({k: Path(v) for k, v in curves.items()}, args.out, dpi)
    elif args.figure == "confounder":
        plots.plot_confounder(args.confounder, args.out, dpi)
    elif args.figure == "losses":
        plots.plot_loss_curves(parse_logs(args.train_log), args.out, dpi)
    else:
        plots.write_per_class_iou(parse_evals(args.eval), args.out)


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    script_main(build_parser, run, globals().get("snakemake"))
