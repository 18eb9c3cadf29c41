"""Semantic-segmentation metrics with the VOC / chainercv protocol.

One confusion matrix is accumulated over all pixels of a split (rows = ground truth,
columns = prediction); per-class IoU = TP / (TP + FP + FN) and mIoU = nanmean over all
classes *including background*, as in IRNet's `eval_cam` / `eval_sem_seg`
(chainercv `calc_semantic_segmentation_confusion` + `calc_semantic_segmentation_iou`).

Label conventions (see conta_core.data.manifest): 0 background, 1..C foreground,
255 ignore.
- Ground-truth pixels equal to 255 are ignored (chainercv maps them to -1 and skips them).
- Predicted pixels equal to 255 are counted as background (0), as IRNet's
  `eval_sem_seg` does (`preds[preds == 255] = 0`) before building the confusion.
Any other value outside 0..n-1, in either map, raises ValueError.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from conta_core.infra.fileio import IGNORE_LABEL

PRED_IGNORE_AS = 0  # predicted "uncertain" pixels count as background (IRNet eval_sem_seg)


def _check_range(arr: np.ndarray, num_classes: int, what: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = np.unique(arr[(arr < 0) | (arr >= num_classes)])
        raise ValueError(
            f"{what} contains values {bad[:10].tolist()} outside 0..{num_classes - 1} (and not {IGNORE_LABEL})"
        )


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix of one label map.

    pred: int[H, W] predicted classes 0..n-1; 255 is counted as background (0).
    gt: int[H, W] ground-truth classes 0..n-1; 255 pixels are ignored.
    Returns int64[n, n] with n = num_classes: entry [g, p] counts pixels of GT class g
    predicted as class p.
    Raises ValueError on a shape mismatch or values outside 0..n-1 (other than 255).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    gt = gt.astype(np.int64, copy=False).ravel()
    pred = pred.astype(np.int64, copy=False).ravel()
    valid = gt != IGNORE_LABEL
    gt = gt[valid]
    pred = np.where(pred[valid] == IGNORE_LABEL, PRED_IGNORE_AS, pred[valid])
    _check_range(gt, num_classes, "ground truth")
    _check_range(pred, num_classes, "prediction")
    counts = np.bincount(num_classes * gt + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


class ConfusionAccumulator:
    """Sum of `confusion_matrix` over many images (streaming; one image in memory at a time)."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self._matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_images = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: pred, gt int[H, W] (see `confusion_matrix`)."""
        self._matrix += confusion_matrix(pred, gt, self.num_classes)
        self.num_images += 1

    @property
    def matrix(self) -> np.ndarray:
        """int64[n, n] accumulated confusion (a copy)."""
        return self._matrix.copy()


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den == 0."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _check_square(conf: np.ndarray) -> np.ndarray:
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square [n, n], got shape {conf.shape}")
    return conf


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """float64[n] IoU = TP / (TP + FP + FN) from conf int[n, n] (rows GT, cols pred).

    NaN for a class that appears in neither the ground truth nor the prediction.
    """
    conf = _check_square(conf)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    return _safe_ratio(tp, union)


def mean_iou(conf: np.ndarray) -> float:
    """nanmean of `iou_per_class` over all classes including background (NaN if all NaN)."""
    iou = iou_per_class(conf)
    if np.all(np.isnan(iou)):
        return float("nan")
    return float(np.nanmean(iou))


def precision_recall(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision float64[n], recall float64[n]) from conf int[n, n] (rows GT, cols pred).

    precision = TP / predicted pixels (NaN if never predicted);
    recall = TP / GT pixels (NaN if absent from GT).
    """
    conf = _check_square(conf)
    tp = np.diag(conf)
    return _safe_ratio(tp, conf.sum(axis=0)), _safe_ratio(tp, conf.sum(axis=1))


def class_table(conf: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Per-class table: columns class, iou, precision, recall, gt_pixels, pred_pixels (n rows)."""
    conf = _check_square(conf)
    if len(class_names) != conf.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {conf.shape[0]}-class confusion matrix")
    precision, recall = precision_recall(conf)
    return pd.DataFrame(
        {
            "class": list(class_names),
            "iou": iou_per_class(conf),
            "precision": precision,
            "recall": recall,
            "gt_pixels": conf.sum(axis=1).astype(np.int64),
            "pred_pixels": conf.sum(axis=0).astype(np.int64),
        }
    )
