"""Prepare the configured dataset: dispatch on `dataset.kind`, validate, write manifest.json.

`dataset` config keys: kind (synthetic | voc12 | coco14 | folder), root (real datasets),
synthetic (the generator section), sbd_root (voc12, optional), csv, masks_dir and
class_names (folder), check_images (validate every image header and mask).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from conta_core.data.manifest import Manifest
from conta_core.io import load_label_png
from conta_core.runtime import progress_enabled

log = logging.getLogger("conta.data.prepare")
KINDS = ("synthetic", "voc12", "coco14", "folder")
IGNORE = 255
CHECK_CHUNK = 64


def _path_key(dataset_cfg: dict, key: str, required: bool) -> Path | None:
    """dataset_cfg[key] as an existing Path; ValueError naming dataset.<key> otherwise."""
    value = dataset_cfg.get(key)
    if value in (None, ""):
        if required:
            raise ValueError(f"config key dataset.{key}: required for dataset.kind={dataset_cfg.get('kind')}")
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"config key dataset.{key}: path {path} does not exist")
    return path


def load_source(dataset_cfg: dict, out_dir: Path, workers: int = 1) -> Manifest:
    """Build (not validate) the manifest of the configured source; generated data -> out_dir."""
    kind = dataset_cfg.get("kind")
    if kind not in KINDS:
        raise ValueError(f"config key dataset.kind: {kind!r} is not one of {KINDS}")
    if kind == "synthetic":
        from conta_core.data.synthetic import generate_synthetic

        if not isinstance(dataset_cfg.get("synthetic"), dict):
            raise ValueError("config key dataset.synthetic: required for dataset.kind=synthetic")
        return generate_synthetic(out_dir / "synthetic", dataset_cfg["synthetic"])
    root = _path_key(dataset_cfg, "root", required=True)
    if kind == "voc12":
        from conta_core.data.voc import prepare_voc12

        return prepare_voc12(root, _path_key(dataset_cfg, "sbd_root", required=False), out_dir)
    if kind == "coco14":
        from conta_core.data.coco import prepare_coco14

        return prepare_coco14(root, out_dir, workers=workers)
    from conta_core.data.folder import prepare_folder

    return prepare_folder(
        root,
        _path_key(dataset_cfg, "csv", required=True),
        out_dir,
        _path_key(dataset_cfg, "masks_dir", required=False),
        dataset_cfg.get("class_names"),
    )


def check_image(path: Path, image_id: str) -> tuple[int, int]:
    """(width, height) from the image header; ValueError naming the file and id."""
    if not path.is_file():
        raise ValueError(f"image id {image_id!r}: image file {path} not found")
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"image id {image_id!r}: cannot read image {path} ({e})") from e


def check_mask(path: Path, image_id: str, num_fg: int, size: tuple[int, int]) -> None:
    """Mask exists, decodes, has the image size (w, h) and values in {0..num_fg, 255}."""
    if not path.is_file():
        raise ValueError(f"image id {image_id!r}: mask file {path} not found")
    mask = load_label_png(path)
    if mask.shape != (size[1], size[0]):
        raise ValueError(f"image id {image_id!r}: mask {path} has shape {mask.shape}, image is {size[1]}x{size[0]}")
    values = np.unique(mask)
    bad = [int(v) for v in values if v > num_fg and v != IGNORE]
    if bad:
        raise ValueError(f"image id {image_id!r}: mask {path} has value(s) {bad} outside 0..{num_fg} and {IGNORE}")


def _check_ids(manifest: Manifest, ids: list[str]) -> None:
    for i in ids:
        size = check_image(manifest.image_file(i), i)
        mask = manifest.mask_file(i)
        if mask is not None:
            check_mask(mask, i, manifest.num_fg, size)


def check_files(manifest: Manifest, workers: int = 1) -> None:
    """Check every image of the manifest (header) and every mask (fully); threads = workers."""
    ids = sorted(set().union(*manifest.splits.values()))
    chunks = [ids[i : i + CHECK_CHUNK] for i in range(0, len(ids), CHECK_CHUNK)]
    with tqdm(total=len(ids), desc="check images", disable=not progress_enabled()) as bar:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for chunk, _ in zip(chunks, pool.map(lambda c: _check_ids(manifest, c), chunks)):
                bar.update(len(chunk))


def _relative_root(manifest: Manifest, out_dir: Path) -> Manifest:
    """A copy whose root is relative to out_dir when it lies inside it (movable results)."""
    root = Path(manifest.root).resolve()
    if root.is_relative_to(out_dir):
        return dataclasses.replace(manifest, root=root.relative_to(out_dir))
    return manifest


def prepare_dataset(dataset_cfg: dict, out_dir: Path, check_images: bool = True, workers: int = 1) -> Manifest:
    """Build, validate and save the dataset manifest as out_dir/manifest.json.

    dataset_cfg: the `dataset` config section. check_images: verify every image header and
    every mask (values, size). workers: threads for the checks / processes for COCO masks.
    Returns the manifest (absolute root). Raises ValueError naming the key / file / id.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_source(dataset_cfg, out_dir, workers)
    manifest.validate()
    if check_images:
        check_files(manifest, workers)
    _relative_root(manifest, out_dir).save(out_dir / "manifest.json")
    log.info(
        "dataset %s: %s images, splits %s",
        manifest.name,
        len(manifest.images),
        {k: len(v) for k, v in manifest.splits.items()},
    )
    return manifest
