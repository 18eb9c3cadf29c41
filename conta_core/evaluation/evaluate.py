"""Evaluate label-map artifacts (CAM argmaxes, IR labels, pseudo-masks, segmentation
predictions) against the manifest's ground-truth masks with the VOC protocol
(conta_core.evaluation.metrics: one confusion over the split, mIoU incl. background, GT 255
ignored, predicted 255 counted as background).

Images are streamed: one prediction + one GT mask in memory at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.evaluation.metrics import ConfusionAccumulator, class_table, mean_iou
from conta_core.infra.fileio import load_label_png, write_csv
from conta_core.infra.progress import track

log = logging.getLogger("conta.evaluate")

MAX_IDS_IN_ERROR = 10
MEAN_ROW = "mean"
CSV_COLUMNS = ["stage", "class", "iou", "precision", "recall", "gt_pixels", "pred_pixels"]


def _format_ids(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:MAX_IDS_IN_ERROR])
    more = len(ids) - MAX_IDS_IN_ERROR
    return shown + (f" and {more} more" if more > 0 else "")


def _check_inputs(manifest: Manifest, ids: list[str], pred_files: dict[str, Path]) -> None:
    no_gt = [i for i in ids if manifest.mask_file(i) is None]
    if no_gt:
        raise ValueError(f"manifest {manifest.name}: {len(no_gt)} image(s) have no GT mask: {_format_ids(no_gt)}")
    no_pred = [i for i in ids if i not in pred_files]
    if no_pred:
        raise ValueError(f"{len(no_pred)} image(s) have no prediction: {_format_ids(no_pred)}")


def evaluate_label_maps(
    manifest: Manifest,
    ids: list[str],
    pred_files: dict[str, Path],
    num_classes: int | None = None,
) -> tuple[float, pd.DataFrame]:
    """mIoU and per-class table of label-map PNGs against the manifest's GT masks.

    ids: images to evaluate; each must have a GT mask and an entry in pred_files.
    pred_files: id -> prediction PNG uint8[H, W] (0 bg, 1..C, 255 = counted as bg).
    num_classes: confusion size n (default: manifest.num_classes = C + 1).
    Returns (mIoU, conta_core.evaluation.metrics.class_table over the first n class names).
    Raises ValueError naming ids lacking a prediction or GT, or with mismatched sizes.
    """
    n = manifest.num_classes if num_classes is None else int(num_classes)
    if not 1 <= n <= manifest.num_classes:
        raise ValueError(f"num_classes {n} outside 1..{manifest.num_classes} (manifest {manifest.name})")
    if not ids:
        raise ValueError(f"manifest {manifest.name}: no image ids to evaluate")
    _check_inputs(manifest, ids, pred_files)
    acc = ConfusionAccumulator(n)
    for image_id in track(ids, "evaluate"):
        gt_path, pred_path = manifest.mask_file(image_id), Path(pred_files[image_id])
        gt, pred = load_label_png(gt_path), load_label_png(pred_path)
        if gt.shape != pred.shape:
            raise ValueError(f"image {image_id!r}: prediction {pred_path} has size {pred.shape}, GT {gt.shape}")
        try:
            acc.add(pred, gt)
        except ValueError as e:
            raise ValueError(f"image {image_id!r} ({pred_path} vs {gt_path}): {e}") from e
    conf = acc.matrix
    return mean_iou(conf), class_table(conf, manifest.class_names[:n])


def _mean_row(table: pd.DataFrame, miou: float) -> dict:
    return {
        "class": MEAN_ROW,
        "iou": miou,
        "precision": float(np.nanmean(table["precision"])) if table["precision"].notna().any() else np.nan,
        "recall": float(np.nanmean(table["recall"])) if table["recall"].notna().any() else np.nan,
        "gt_pixels": int(table["gt_pixels"].sum()),
        "pred_pixels": int(table["pred_pixels"].sum()),
    }


def evaluate_to_csv(manifest: Manifest, split: str, pred_dirs: list[Path], out_csv: Path, stage: str) -> float:
    """Evaluate the PNGs in `pred_dirs` (<id>.png, e.g. all shard folders) on `split`.

    Only the split's ids that have a GT mask are evaluated (ValueError if none has one, or
    if one of them lacks a prediction). Writes `out_csv` atomically with columns
    stage, class, iou, precision, recall, gt_pixels, pred_pixels: one row per class plus a
    final row class="mean" (iou = mIoU, precision/recall = nanmean over classes, pixel
    counts = totals). Returns the mIoU.
    """
    split_ids = manifest.ids(split)
    ids = [i for i in split_ids if manifest.mask_file(i) is not None]
    if not ids:
        raise ValueError(f"manifest {manifest.name}: split {split!r} has no image with a GT mask")
    if len(ids) < len(split_ids):
        log.info("split %s: evaluating the %d of %d images that have GT masks", split, len(ids), len(split_ids))
    miou, table = evaluate_label_maps(manifest, ids, index_artifacts(list(pred_dirs), ".png"))
    table = pd.concat([table, pd.DataFrame([_mean_row(table, miou)])], ignore_index=True)
    table.insert(0, "stage", stage)
    write_csv(out_csv, table[CSV_COLUMNS])
    return miou
