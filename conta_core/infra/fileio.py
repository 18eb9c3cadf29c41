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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported by the modules that write tables
    import pandas
from PIL import Image

from conta_core.infra.layout import CAM_SUFFIX  # CAM artifacts: <id>.npz of named arrays, read without pickle

IGNORE_LABEL = 255  # label maps: 0 background, 1..C classes, 255 ignored (void, uncertain, padding)


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


def write_csv(path: str | os.PathLike, df: pandas.DataFrame) -> None:
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


def load_map_for(files: dict, image_id: str, shape: tuple[int, int], what: str) -> np.ndarray:
    """uint8[H, W] label-like map (label PNG) of `image_id` from `files` (id -> path);
    ValueError naming the id when it has none and the file when its size differs from the
    image's `shape`."""
    if image_id not in files:
        raise ValueError(f"no {what} file for image id {image_id!r}")
    m = load_label_png(files[image_id])
    if m.shape != tuple(shape):
        raise ValueError(
            f"{files[image_id]}: {what} of image {image_id!r} has shape {m.shape}, image has {tuple(shape)}"
        )
    return m


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Load an RGB image as `uint8[H, W, 3]`, raising ValueError that names the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e


CAM_ARRAYS = ("keys", "cam", "high_res")


def save_cam(path: str | os.PathLike, keys: np.ndarray, cam: np.ndarray, high_res: np.ndarray) -> None:
    """Save a CAM artifact as an uncompressed .npz of three named arrays (no pickle).

    keys: int64[K] 0-based foreground class indices present in the image label.
    cam: float32[K, ceil(H/4), ceil(W/4)] stride-4 maps in [0, 1].
    high_res: float32[K, H, W] full-resolution maps in [0, 1].
    The content is IRNet's CAM dict (make_cam.py); `read_irnet_cam` reads IRNet's own files.
    """
    path = Path(path)
    if path.suffix != CAM_SUFFIX:
        raise ValueError(f"{path}: CAM files end in {CAM_SUFFIX}")
    with atomic_path(path) as tmp:
        np.savez(
            tmp,
            keys=np.asarray(keys, dtype=np.int64),
            cam=np.asarray(cam, dtype=np.float32),
            high_res=np.asarray(high_res, dtype=np.float32),
        )


def load_cam(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a CAM .npz written by `save_cam` (allow_pickle=False); dict with keys, cam, high_res.

    A pickled file (IRNet's .npy dict) is refused with a message naming the converter.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError(f"not an .npz archive (a bare {z.dtype} array)")
            missing = [k for k in CAM_ARRAYS if k not in z.files]
            if missing:
                raise ValueError(f"missing arrays {missing} (has {z.files})")
            return {k: z[k] for k in CAM_ARRAYS}
    except (OSError, ValueError, EOFError) as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                f"{path}: a pickled CAM file (IRNet's .npy dict format); pickles are not loaded "
                f"(they can run code). Convert trusted ones with `conta import-cams`"
            ) from None
        raise ValueError(f"{path}: cannot read CAM file ({e})") from e


class _CamUnpickler:
    """A restricted unpickler for IRNet's CAM .npy dicts: numpy arrays, torch tensors (their
    storages loaded with torch.load(weights_only=True)) and plain containers; any other
    global (os.system, ...) is refused."""

    NUMPY = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }
    TORCH = {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("collections", "OrderedDict"),
    }

    @classmethod
    def load(cls, f) -> Any:
        import pickle

        class Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str):
                if (module, name) == ("torch.storage", "_load_from_bytes"):
                    return _storage_from_bytes
                if (module, name) in cls.NUMPY | cls.TORCH:
                    return super().find_class(module, name)
                raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")

        return Restricted(f).load()


def _storage_from_bytes(b: bytes):
    import io as _io

    import torch

    return torch.load(_io.BytesIO(b), weights_only=True)


def read_irnet_cam(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CAM file of IRNet / AMN (`np.save(<id>.npy, {"keys", "cam", "high_res"})`, a
    pickled dict whose values may be torch tensors) with a restricted unpickler; returns the
    arrays of `save_cam` (keys int64[K], cam and high_res float32[K, ...])."""
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as f:
            major, _ = npformat.read_magic(f)
            header = npformat.read_array_header_1_0 if major == 1 else npformat.read_array_header_2_0
            shape, _, dtype = header(f)
            if dtype != np.dtype(object) or shape != ():
                raise ValueError(f"expected a pickled dict, got a {dtype} array of shape {shape}")
            d = _CamUnpickler.load(f)  # np.save pickles the 0-d object array holding the dict
            d = d.item() if isinstance(d, np.ndarray) and d.shape == () else d
    except Exception as e:  # noqa: BLE001 - re-raise with the file name
        raise ValueError(f"{path}: not an IRNet CAM file ({e})") from e
    if not isinstance(d, dict) or any(k not in d for k in CAM_ARRAYS):
        raise ValueError(f"{path}: not an IRNet CAM dict (needs {', '.join(CAM_ARRAYS)})")
    out = {k: np.asarray(d[k].numpy() if hasattr(d[k], "numpy") else d[k]) for k in CAM_ARRAYS}
    return {
        "keys": out["keys"].astype(np.int64),
        "cam": out["cam"].astype(np.float32),
        "high_res": out["high_res"].astype(np.float32),
    }


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
