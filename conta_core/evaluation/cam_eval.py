"""CAM evaluation (IRNet eval_cam): mIoU against GT for a sweep of background thresholds.

A CAM file (conta_core.infra.fileio.save_cam) becomes a label map by the argmax over
[threshold plane, high_res maps] (background wins ties); `eval_cam_to_csv` writes one row
per threshold of cam.sweep (+ cam.eval_threshold) with the flag columns is_eval_threshold
and is_best.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.evaluation.metrics import confusion_matrix, iou_per_class, mean_iou
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import CAM_SUFFIX, load_cam, load_label_png, write_csv
from conta_core.infra.progress import track


def sweep_thresholds(cfg_cam: dict) -> list[float]:
    """cam.sweep = [start, stop (inclusive), step], plus cam.eval_threshold, sorted, rounded."""
    require_keys(cfg_cam, ("sweep", "eval_threshold"), "cam")
    start, stop, step = (float(v) for v in cfg_cam["sweep"])
    if step <= 0 or stop < start:
        raise config_error("cam.sweep", f"expected [start, stop >= start, step > 0], got {cfg_cam['sweep']}")
    n = int(math.floor((stop - start) / step + 1e-6)) + 1
    values = {round(start + i * step, 6) for i in range(n)}
    values.add(round(float(cfg_cam["eval_threshold"]), 6))
    return sorted(values)


def cam_label(high_res: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """uint8[H, W] class ids: argmax over [threshold plane, high_res float32[K, H, W]].

    Background (0) wins ties, as with IRNet's argmax over the stacked planes.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if high_res.shape[0] == 0:
        return np.zeros(high_res.shape[1:], dtype=np.uint8)
    planes = np.concatenate([np.full((1, *high_res.shape[1:]), threshold, dtype=high_res.dtype), high_res])
    lut = np.concatenate([[0], keys + 1]).astype(np.uint8)
    return lut[planes.argmax(axis=0)]


def _labels_all_thresholds(high_res: np.ndarray, keys: np.ndarray, thresholds: list[float]):
    """Yield cam_label(high_res, keys, t) for every t, sharing the argmax over the maps."""
    if high_res.shape[0] == 0:
        zero = np.zeros(high_res.shape[1:], dtype=np.uint8)
        for _ in thresholds:
            yield zero
        return
    best = high_res.max(axis=0)
    fg = (np.asarray(keys, dtype=np.int64) + 1).astype(np.uint8)[high_res.argmax(axis=0)]
    for t in thresholds:
        yield np.where(best > best.dtype.type(t), fg, 0).astype(np.uint8)  # same dtype as cam_label's plane


def eval_cam_sweep(
    manifest: Manifest,
    ids: list[str],
    cam_files: dict[str, Path],
    thresholds: list[float],
    num_classes: int,
) -> pd.DataFrame:
    """CAM mIoU for every background threshold in one pass over the images.

    GT from manifest.mask_file(id) (255 ignored). Returns one row per threshold with
    columns threshold, miou and one IoU column per class name (class_names[:num_classes]).
    """
    confs = np.zeros((len(thresholds), num_classes, num_classes), dtype=np.int64)
    for image_id in track(ids, "eval_cam"):
        gt_path = manifest.mask_file(image_id)
        if gt_path is None:
            raise ValueError(f"eval_cam: image id {image_id!r} has no GT mask in the manifest")
        gt = load_label_png(gt_path)
        cam = load_cam(cam_files[image_id])
        if cam["high_res"].shape[1:] != gt.shape:
            raise ValueError(f"{cam_files[image_id]}: CAM size {cam['high_res'].shape[1:]} != GT size {gt.shape}")
        try:
            for j, pred in enumerate(_labels_all_thresholds(cam["high_res"], cam["keys"], thresholds)):
                confs[j] += confusion_matrix(pred, gt, num_classes)
        except ValueError as e:
            raise ValueError(f"eval_cam: image {image_id!r} ({gt_path}, {cam_files[image_id]}): {e}") from e
    names = list(manifest.class_names[:num_classes])
    rows = []
    for t, conf in zip(thresholds, confs):
        row = {"threshold": float(t), "miou": mean_iou(conf)}
        row.update(dict(zip(names, iou_per_class(conf).tolist())))
        rows.append(row)
    return pd.DataFrame(rows, columns=["threshold", "miou", *names])


def best_threshold(df: pd.DataFrame) -> float:
    """The threshold of the first row with the highest mIoU (lowest threshold on ties in a sorted sweep)."""
    if df.empty:
        raise ValueError("best_threshold: empty sweep table")
    return float(df.loc[df["miou"].idxmax(), "threshold"])


def eval_cam_to_csv(
    manifest: Manifest,
    split: str,
    cam_dirs: list[str | os.PathLike],
    cfg_cam: dict,
    out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """Sweep cam.sweep (+ cam.eval_threshold) on `split`, write out_csv with the flag columns
    is_eval_threshold and is_best; returns the table."""
    thresholds = sweep_thresholds(cfg_cam)
    cam_files = index_artifacts(cam_dirs, CAM_SUFFIX)
    df = eval_cam_sweep(manifest, manifest.ids(split), cam_files, thresholds, manifest.num_classes)
    df["is_eval_threshold"] = np.isclose(df["threshold"], float(cfg_cam["eval_threshold"]))
    df["is_best"] = np.isclose(df["threshold"], best_threshold(df))
    write_csv(out_csv, df)
    return df
