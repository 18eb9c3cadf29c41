"""Multi-scale CAM inference (IRNet make_cam) and CAM evaluation with a threshold sweep.

compute_cam follows reference §4.2 / irn_amn_reference §2.4: per scale, the rescaled image
and its horizontal flip run in one batch; ReLU CAMs of the flipped copy are flipped back and
added; each scale is resized bilinearly (align_corners=False) to the stride-4 size
ceil(H/4) x ceil(W/4) and to the full size, summed over scales; only the image's classes are
kept and each map is divided by its max + 1e-5.

[OURS] deviations from IRNet: the image is rescaled bilinearly (IRNet: PIL bicubic), and the
high-resolution map is resized straight to H x W (IRNet: to 16*ceil(H/16) x 16*ceil(W/16)
then cropped). For context models X_m is encoded once at the canonical context size (the
encoding resizes to context.size, so a per-scale resize would not change it) and flipped
together with the image (flip first, then encode).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from conta_core.data.artifacts import index_artifacts
from conta_core.data.manifest import Manifest
from conta_core.data.transforms import normalize, resize_image
from conta_core.io import load_cam, load_image, load_label_png, save_cam, write_csv
from conta_core.metrics import confusion_matrix, iou_per_class, mean_iou
from conta_core.models.classifier import load_classifier
from conta_core.runtime import progress_enabled

log = logging.getLogger("conta.cam")

NORM_EPS = 1e-5  # IRNet: cam / (max + 1e-5)
CAM_STRIDE = 4


# --------------------------------------------------------------------------- helpers


def sweep_thresholds(cfg_cam: dict) -> list[float]:
    """cam.sweep = [start, stop (inclusive), step], plus cam.eval_threshold, sorted, rounded."""
    for key in ("sweep", "eval_threshold"):
        if key not in cfg_cam:
            raise ValueError(f"cam.{key}: missing from the cam config")
    start, stop, step = (float(v) for v in cfg_cam["sweep"])
    if step <= 0 or stop < start:
        raise ValueError(f"cam.sweep: expected [start, stop >= start, step > 0], got {cfg_cam['sweep']}")
    n = int(math.floor((stop - start) / step + 1e-6)) + 1
    values = {round(start + i * step, 6) for i in range(n)}
    values.add(round(float(cfg_cam["eval_threshold"]), 6))
    return sorted(values)


# --------------------------------------------------------------------------- inference


def compute_cam(
    model: torch.nn.Module,
    img_u8: np.ndarray,
    keys: np.ndarray,
    scales: list[float],
    flip: bool,
    device: torch.device | str,
    xm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-scale (+flip) CAMs of one image, IRNet style (module docstring).

    model: in eval mode, with `cam_maps(x: float32[B, 3, h, w], xm: float32[B, h', w'] | None)
    -> float32[B, C, h/16, w/16]` (and `encode_xm` if xm is given).
    img_u8: uint8[H, W, 3]; keys: int[K] 0-based foreground classes to keep;
    xm: uint8[H, W] label map X_m for context models.
    Returns (cam float32[K, ceil(H/4), ceil(W/4)], high_res float32[K, H, W]), each map in [0, 1).
    """
    h, w = img_u8.shape[:2]
    if not img_u8.flags.writeable:  # PIL-backed arrays are read-only; torch.from_numpy warns on them
        img_u8 = img_u8.copy()
    keys_t = torch.as_tensor(np.asarray(keys, dtype=np.int64), device=device)
    strided_size = (math.ceil(h / CAM_STRIDE), math.ceil(w / CAM_STRIDE))
    xm_batch = _xm_batch(model, xm, (h, w), flip, device)
    strided = torch.zeros((len(keys_t), *strided_size), device=device)
    high_res = torch.zeros((len(keys_t), h, w), device=device)
    if len(keys_t) == 0:  # an image without foreground tags: nothing to localise
        return strided.cpu().numpy(), high_res.cpu().numpy()
    with torch.inference_mode():
        for s in scales:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = torch.from_numpy(normalize(resize_image(img_u8, size))).to(device)
            batch = torch.stack([x, x.flip(-1)]) if flip else x[None]
            maps = model.cam_maps(batch, xm_batch)[:, keys_t]
            fused = maps[0] + maps[1].flip(-1) if flip else maps[0]
            strided += F.interpolate(fused[None], strided_size, mode="bilinear", align_corners=False)[0]
            high_res += F.interpolate(fused[None], (h, w), mode="bilinear", align_corners=False)[0]
        strided = _max_normalise(strided)
        high_res = _max_normalise(high_res)
    return strided.cpu().numpy().astype(np.float32), high_res.cpu().numpy().astype(np.float32)


def _max_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map of float32[K, h, w] by its spatial max + 1e-5."""
    return maps / (maps.flatten(1).amax(dim=1)[:, None, None] + NORM_EPS) if len(maps) else maps


def _xm_batch(
    model: torch.nn.Module, xm: np.ndarray | None, image_size: tuple[int, int], flip: bool, device
) -> torch.Tensor | None:
    """Encoded X_m for [image, flipped image]: float32[B, h', w'] or None."""
    uses_context = bool(getattr(model, "uses_context", False))
    if xm is None:
        if uses_context:
            raise ValueError("compute_cam: the context classifier needs the X_m map (xm)")
        return None
    if not uses_context:
        raise ValueError("compute_cam: xm given but the classifier has no context module")
    if xm.shape != image_size:
        raise ValueError(f"compute_cam: X_m shape {xm.shape} != image size {image_size}")
    maps = [model.encode_xm(xm)] + ([model.encode_xm(xm[:, ::-1])] if flip else [])
    return torch.from_numpy(np.stack(maps)).to(device)


def make_cams(
    manifest: Manifest,
    ids: list[str],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg_cam: dict,
    device: torch.device | str,
    xm_files: dict[str, Path] | None = None,
) -> None:
    """Write out_dir/<id>.npy (conta_core.io.save_cam) for `ids`; existing files are skipped.

    cfg_cam: the `cam:` section (scales, flip). xm_files: image id -> X_m label PNG,
    required for context classifiers.
    """
    for key in ("scales", "flip"):
        if key not in cfg_cam:
            raise ValueError(f"cam.{key}: missing from the cam config")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_classifier(model_path, device)
    if model.uses_context and xm_files is None:
        raise ValueError(f"{model_path}: context classifier but no X_m files (--xm-dir) given")
    todo = [i for i in ids if not (out_dir / f"{i}.npy").exists()]
    log.info("make_cams: %d of %d images to do -> %s", len(todo), len(ids), out_dir)
    for image_id in tqdm(todo, desc="cam", disable=not progress_enabled()):
        img = load_image(manifest.image_file(image_id))
        keys = np.asarray(manifest.labels[image_id], dtype=np.int64) - 1
        xm = load_label_png(xm_files[image_id]) if model.uses_context else None
        if xm is not None and xm.shape != img.shape[:2]:
            raise ValueError(f"image {image_id!r}: X_m {xm_files[image_id]} is {xm.shape}, image is {img.shape[:2]}")
        cam, high_res = compute_cam(model, img, keys, cfg_cam["scales"], bool(cfg_cam["flip"]), device, xm)
        save_cam(out_dir / f"{image_id}.npy", keys, cam, high_res)


# --------------------------------------------------------------------------- evaluation


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
    for image_id in tqdm(ids, desc="eval_cam", disable=not progress_enabled()):
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
    cam_files = index_artifacts(cam_dirs, ".npy")
    df = eval_cam_sweep(manifest, manifest.ids(split), cam_files, thresholds, manifest.num_classes)
    df["is_eval_threshold"] = np.isclose(df["threshold"], float(cfg_cam["eval_threshold"]))
    df["is_best"] = np.isclose(df["threshold"], best_threshold(df))
    write_csv(out_csv, df)
    return df
