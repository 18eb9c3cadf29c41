"""A folder of images + a CSV of image-level tags (masks optional) -> Manifest.

CSV columns: ``image_id``, ``labels`` (class names separated by spaces) and optionally
``split`` (``train`` or ``val``; empty = train). Images are root/<id>.{jpg,jpeg,png} (any
case of the extension). With ``masks_dir`` every image needs masks_dir/<id>.png (values
0..C, 255 ignore, where class k = class_names[k]).

Splits: train = the train rows that have at least one label (rows without labels are
left out of train and recorded in meta), train_eval = train, val = the val rows; when the
CSV has no val rows, val = train (meta.val_is_train = true, so that the pipeline still runs;
segmentation scores are then training-set scores).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from conta_core.data.manifest import Manifest
from conta_core.infra.config import config_error

log = logging.getLogger("conta.data.folder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT_VALUES = ("train", "val")


def _read_csv(csv_path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{csv_path}: cannot read CSV ({e})") from e
    df.columns = [c.strip() for c in df.columns]
    for col in ("image_id", "labels"):
        if col not in df.columns:
            raise ValueError(f"{csv_path}: missing column {col!r} (has {list(df.columns)})")
    if "split" not in df.columns:
        df["split"] = "train"
    return df


def _class_list(df: pd.DataFrame, class_names: list[str] | None) -> list[str]:
    """["background", ...]: the given order, or the sorted names of the CSV."""
    if class_names is None:
        names = sorted({n for cell in df["labels"] for n in cell.split()} - {"background"})
        return ["background"] + names
    names = list(class_names)
    if not names or names[0] != "background":
        names = ["background"] + [n for n in names if n != "background"]
    if len(set(names)) != len(names):
        raise config_error("dataset.class_names", f"duplicate class names in {class_names}")
    return names


def _image_index(root: Path) -> dict[str, Path]:
    """stem -> image file for the image files directly in root (first extension wins)."""
    index: dict[str, Path] = {}
    with os.scandir(root) as it:
        for e in sorted(it, key=lambda e: e.name):
            stem, ext = os.path.splitext(e.name)
            if ext.lower() in IMAGE_EXTENSIONS and e.is_file():
                index.setdefault(stem, Path(e.path))
    return index


def _find_image(root: Path, image_id: str, index: dict[str, Path]) -> Path:
    if image_id in index:
        return index[image_id]
    for ext in IMAGE_EXTENSIONS:  # ids with sub-folders, e.g. "cats/001"
        for e in (ext, ext.upper()):
            p = root / f"{image_id}{e}"
            if p.is_file():
                return p
    raise ValueError(f"image id {image_id!r}: no image file {root}/{image_id}.{{jpg,jpeg,png}}")


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def prepare_folder(
    root: Path, csv_path: Path, out_dir: Path, masks_dir: Path | None, class_names: list[str] | None
) -> Manifest:
    """Build the manifest of an image folder + tag CSV (see module docstring).

    out_dir is unused (nothing is converted) and kept for a uniform loader signature.
    """
    root, csv_path = Path(root).resolve(), Path(csv_path)
    df = _read_csv(csv_path)
    names = _class_list(df, class_names)
    index_of = {n: k for k, n in enumerate(names)}
    files = _image_index(root)
    images, masks, labels = {}, {}, {}
    splits: dict[str, list[str]] = {"train": [], "val": []}
    unlabelled: list[str] = []
    for row_no, row in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        image_id, split = row.image_id.strip(), (row.split.strip() or "train")
        where = f"{csv_path}:{row_no} (image id {image_id!r})"
        if not image_id:
            raise ValueError(f"{csv_path}:{row_no}: empty image_id")
        if image_id in images:
            raise ValueError(f"{where}: duplicate image id")
        if split not in SPLIT_VALUES:
            raise ValueError(f"{where}: split {split!r} is not one of {SPLIT_VALUES}")
        ks = set()
        for n in row.labels.split():
            if n not in index_of or n == "background":
                raise ValueError(f"{where}: unknown class name {n!r} (classes: {names[1:]})")
            ks.add(index_of[n])
        images[image_id] = _rel(_find_image(root, image_id, files), root)
        labels[image_id] = sorted(ks)
        if masks_dir is not None:
            m = Path(masks_dir).resolve() / f"{image_id}.png"
            if not m.is_file():
                raise ValueError(f"{where}: mask file {m} not found")
            masks[image_id] = _rel(m, root)
        if split == "train" and not ks:
            unlabelled.append(image_id)
            continue
        splits[split].append(image_id)
    if unlabelled:
        log.warning(
            "folder: %d train images without labels left out of train (first: %s)", len(unlabelled), unlabelled[0]
        )
    val_is_train = not splits["val"]
    if val_is_train:
        log.warning("folder: %s has no val rows; val = train", csv_path)
    return Manifest(
        name="folder",
        root=root,
        class_names=names,
        splits={
            "train": splits["train"],
            "train_eval": list(splits["train"]),
            "val": list(splits["train"]) if val_is_train else splits["val"],
        },
        labels=labels,
        images=images,
        masks=masks,
        meta={
            "source": str(csv_path),
            "masks_dir": None if masks_dir is None else str(masks_dir),
            "unlabelled_train": len(unlabelled),
            "val_is_train": val_is_train,
        },
    )
