"""Atomic artifact I/O shared by every step.

Every artifact is written to a temporary file in the destination folder and then
renamed over the final name, so an interrupted job never leaves a half-written file
that a rerun could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    The temporary file keeps the final suffix so that libraries choosing a format
    from the extension (PIL, h5py, numpy) behave as for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get normal modes
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def write_csv(path: str | os.PathLike, df: "pandas.DataFrame") -> None:  # noqa: F821
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def voc_palette(n: int = 256) -> list[int]:
    """The PASCAL VOC colour map as a flat [r, g, b, ...] list of 3*n ints; 255 is white."""
    pal = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    pal[255 * 3 : 255 * 3 + 3] = [255, 255, 255]
    return pal


_PALETTE = voc_palette()


def save_label_png(path: str | os.PathLike, label: np.ndarray, palette: bool = True) -> None:
    """Save a label map `label: uint8[H, W]` (0 bg, 1..C classes, 255 ignore) as PNG.

    With `palette=True` the PNG is a VOC palette image (mode "P"), so viewers show colours
    while the pixel values stay the class indices.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D, got shape {label.shape}")
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"{path}: label values must lie in 0..255")
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Load a label PNG (palette or grayscale) as `uint8[H, W]` class indices."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"{path}: label PNG must be palette or grayscale, got mode {im.mode}")
            arr = np.array(im)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read label image ({e})") from e
    return arr.astype(np.uint8)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Load an RGB image as `uint8[H, W, 3]`, raising ValueError that names the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e


def save_cam(path: str | os.PathLike, keys: np.ndarray, cam: np.ndarray, high_res: np.ndarray) -> None:
    """Save a CAM artifact as a pickled dict .npy (IRNet format).

    keys: int64[K] 0-based foreground class indices present in the image label.
    cam: float32[K, ceil(H/4), ceil(W/4)] stride-4 maps in [0, 1].
    high_res: float32[K, H, W] full-resolution maps in [0, 1].
    """
    d = {
        "keys": np.asarray(keys, dtype=np.int64),
        "cam": np.asarray(cam, dtype=np.float32),
        "high_res": np.asarray(high_res, dtype=np.float32),
    }
    with atomic_path(path) as tmp:
        np.save(tmp, d, allow_pickle=True)


def load_cam(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a CAM .npy written by `save_cam`; returns dict with keys, cam, high_res."""
    try:
        return np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read CAM file ({e})") from e


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save atomically (checkpoints)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True (checkpoints hold tensors and plain containers only)."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raise with the file name
        raise ValueError(f"{path}: cannot load checkpoint ({e})") from e
