"""The confounder set C of CONTA: class-average masks, stored as HDF5.

c_i = mean, over the images whose image-level labels contain class i, of the binary map
[mask == i] resized to h x w (the author, issues #12/#13: "class-specific average
segmentation mask"; the CONTA author, https://github.com/dongzhang89/CONTA issues).

[OURS] choices:
- Averaging set: images whose *image-level* labels (manifest tags) contain class i, not the
  images whose predicted mask contains it, so a class missed by the segmentation model still
  pulls its entry towards "absent" instead of dropping out.
- Resize: "area" (default) = area average of the binary map, i.e. the fraction of each
  h x w cell covered by class i (keeps small objects); "nearest" = nearest-neighbour sample.
- n = C foreground classes only (no background entry; the inherited dictionary's row 0 was
  an all-zero background row that CONTA dropped).
- Ignore pixels (255) count as "not class i".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from conta_core.data.transforms import resize_label
from conta_core.infra.config import config_error
from conta_core.infra.fileio import atomic_path, load_label_png
from conta_core.infra.progress import track

log = logging.getLogger("conta.confounder")

RESIZE_MODES = ("area", "nearest")
SOURCES = ("seg", "pseudo")


def class_map(mask: np.ndarray, cls: int, size: tuple[int, int], resize: str = "area") -> np.ndarray:
    """float32[h, w]: the binary map [mask == cls] resized to `size` (see module docstring)."""
    binary = (np.asarray(mask) == cls).astype(np.float32)
    if resize == "nearest":
        return resize_label(binary, size).astype(np.float32)
    if resize != "area":
        raise config_error("context.confounder_resize", f"expected one of {RESIZE_MODES}, got {resize!r}")
    t = torch.from_numpy(binary)[None, None]
    return F.interpolate(t, size=tuple(size), mode="area")[0, 0].numpy()


def class_maps(mask: np.ndarray, classes: list[int], size: tuple[int, int], resize: str = "area") -> np.ndarray:
    """float32[len(classes), h, w]: class_map of every class in `classes`, resized in one call.

    Equal to stacking class_map(mask, k, size, resize) (area pooling is per channel).
    """
    if resize not in RESIZE_MODES:
        raise config_error("context.confounder_resize", f"expected one of {RESIZE_MODES}, got {resize!r}")
    mask = np.asarray(mask)
    binary = (mask[None] == np.asarray(classes, dtype=np.int64).reshape(-1, 1, 1)).astype(np.float32)
    size = (int(size[0]), int(size[1]))
    if len(classes) == 0:
        return np.zeros((0, *size), dtype=np.float32)
    if resize == "nearest":
        return np.stack([resize_label(b, size) for b in binary]).astype(np.float32)
    return F.interpolate(torch.from_numpy(binary)[None], size=size, mode="area")[0].numpy()


def build_confounder(
    mask_files: dict[str, Path],
    labels: dict[str, list[int]],
    num_fg: int,
    size: tuple[int, int],
    resize: str = "area",
) -> tuple[np.ndarray, np.ndarray]:
    """Class-average masks over the images of `labels`, streamed one mask at a time.

    mask_files: image id -> label PNG (uint8[H, W], 0 bg, 1..C, 255 ignore); every id of
    `labels` must have one. labels: image id -> foreground classes (1..C) of the image.
    Returns (C: float32[n, h, w] with n = num_fg, counts: int64[n] images averaged per class).
    A class without images gets a zero map and a warning.
    """
    size = (int(size[0]), int(size[1]))
    sums = np.zeros((num_fg, *size), dtype=np.float64)
    counts = np.zeros(num_fg, dtype=np.int64)
    for image_id in track(sorted(labels), "confounder"):
        classes = labels[image_id]
        if not classes:
            continue
        if image_id not in mask_files:
            raise ValueError(f"confounder: no mask file for image id {image_id!r}")
        bad = [k for k in classes if not 1 <= k <= num_fg]
        if bad:
            raise ValueError(f"confounder: image {image_id!r} has class {bad[0]} outside 1..{num_fg}")
        mask = load_label_png(mask_files[image_id])
        for k, m in zip(classes, class_maps(mask, classes, size, resize)):
            sums[k - 1] += m
            counts[k - 1] += 1
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        log.warning("confounder: no image for foreground classes %s (0-based); their maps are zero", empty.tolist())
    c = sums / np.maximum(counts, 1)[:, None, None]
    return c.astype(np.float32), counts


def save_confounder(
    path: str | os.PathLike,
    C: np.ndarray,
    counts: np.ndarray,
    class_names: list[str],
    round: int,  # noqa: A002 - the artifact attribute is called "round"
    source: str,
) -> None:
    """Write C as HDF5 atomically: dataset "C" float32[n, h, w] and attrs
    classes (fg names, n), round, source ("seg" | "pseudo"), image_counts int64[n]."""
    C = np.asarray(C, dtype=np.float32)
    counts = np.asarray(counts, dtype=np.int64)
    if C.ndim != 3:
        raise ValueError(f"{path}: confounder must be float32[n, h, w], got shape {C.shape}")
    if len(class_names) != C.shape[0] or counts.shape != (C.shape[0],):
        raise ValueError(
            f"{path}: {C.shape[0]} confounder maps but {len(class_names)} class names and {counts.shape} counts"
        )
    if source not in SOURCES:
        raise ValueError(f"{path}: source must be one of {SOURCES}, got {source!r}")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("C", data=C)
            f.attrs["classes"] = np.array(list(class_names), dtype=h5py.string_dtype())
            f.attrs["round"] = int(round)
            f.attrs["source"] = source
            f.attrs["image_counts"] = counts


def load_confounder(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a confounder file -> (C float32[n, h, w], attrs: classes list[str], round int,
    source str, image_counts int64[n])."""
    try:
        with h5py.File(path, "r") as f:
            if "C" not in f:
                raise ValueError(f"{path}: no dataset 'C' in the confounder file")
            C = np.asarray(f["C"][()], dtype=np.float32)
            raw = dict(f.attrs)
    except OSError as e:
        raise ValueError(f"{path}: cannot read confounder file ({e})") from e
    attrs = {
        "classes": [c.decode() if isinstance(c, bytes) else str(c) for c in raw.get("classes", [])],
        "round": int(raw["round"]) if "round" in raw else None,
        "source": raw.get("source").decode() if isinstance(raw.get("source"), bytes) else raw.get("source"),
        "image_counts": np.asarray(raw.get("image_counts", []), dtype=np.int64),
    }
    return C, attrs
