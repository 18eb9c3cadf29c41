"""The per-round summary table (CONTA paper Table 1 layout: CAM, pseudo-mask, seg mIoU).

Reads the evaluation CSVs of each round:
- `round<t>/cam_eval.csv`: threshold sweep (threshold, miou, per-class IoU,
  is_eval_threshold, is_best), written by conta_core.cam.eval_cam_to_csv;
- `round<t>/pseudo_mask_eval.csv`, `round<t>/seg_eval_{val,train}.csv`: per-class rows plus
  a final row class == "mean", written by conta_core.evaluate.evaluate_to_csv;
- method amn: `round<t>/amn_cam_eval.csv`, the AMN map sweep (same layout as cam_eval.csv),
  reported in the extra columns AMN_COLUMNS, which appear only when a round has that file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conta_core.io import write_csv

SUMMARY_COLUMNS = [
    "round",
    "cam_miou",
    "cam_best_miou",
    "cam_best_threshold",
    "pseudo_mask_miou",
    "seg_train_miou",
    "seg_val_miou",
]
AMN_COLUMNS = ["amn_cam_miou", "amn_cam_best_miou", "amn_cam_best_threshold"]


def _mean_row(path: Path) -> float:
    df = pd.read_csv(path)
    rows = df[df["class"] == "mean"]
    if rows.empty:
        raise ValueError(f"{path}: no 'mean' row")
    return float(rows["iou"].iloc[0])


def cam_scores(path: Path) -> tuple[float, float, float]:
    """(mIoU at the configured eval threshold, best mIoU, best threshold) from a CAM sweep CSV."""
    df = pd.read_csv(path)
    at_eval = df[df["is_eval_threshold"].astype(bool)]
    best = df[df["is_best"].astype(bool)]
    if at_eval.empty or best.empty:
        raise ValueError(f"{path}: sweep lacks the eval-threshold or best row")
    return float(at_eval["miou"].iloc[0]), float(best["miou"].iloc[0]), float(best["threshold"].iloc[0])


def round_row(round_dir: Path, t: int) -> dict:
    """One summary row from a round folder; missing evals become NaN."""
    row: dict = {"round": t}
    cam = round_dir / "cam_eval.csv"
    if cam.exists():
        row["cam_miou"], row["cam_best_miou"], row["cam_best_threshold"] = cam_scores(cam)
    amn = round_dir / "amn_cam_eval.csv"
    if amn.exists():
        row["amn_cam_miou"], row["amn_cam_best_miou"], row["amn_cam_best_threshold"] = cam_scores(amn)
    for key, name in (
        ("pseudo_mask_miou", "pseudo_mask_eval.csv"),
        ("seg_train_miou", "seg_eval_train.csv"),
        ("seg_val_miou", "seg_eval_val.csv"),
    ):
        p = round_dir / name
        if p.exists():
            row[key] = _mean_row(p)
    return row


def summarize(run_dir: Path, rounds: list[int]) -> pd.DataFrame:
    """Summary table for `rounds` of `run_dir` (mIoU as percentages, 2 decimals)."""
    rows = [round_row(run_dir / f"round{t}", t) for t in rounds]
    columns = SUMMARY_COLUMNS + (AMN_COLUMNS if any("amn_cam_miou" in r for r in rows) else [])
    df = pd.DataFrame(rows).reindex(columns=columns)
    for c in columns:
        if c.endswith("miou"):
            df[c] = (df[c] * 100).round(2)
    return df


def write_summary(run_dir: Path, rounds: list[int], out_csv: Path) -> pd.DataFrame:
    df = summarize(run_dir, rounds)
    write_csv(out_csv, df)
    return df
