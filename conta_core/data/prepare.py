"""Prepare the configured dataset: dispatch on `dataset.kind`, validate, write manifest.json.

`dataset` config keys: kind (synthetic | voc12 | coco14 | folder), root (real datasets),
synthetic (the generator section), sbd_root (voc12, optional), csv, masks_dir and
class_names (folder), check_images (decode every image and mask in full).
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.infra.config import config_error
from conta_core.infra.fileio import IGNORE_LABEL, load_label_png
from conta_core.infra.progress import Progress

log = logging.getLogger("conta.data.prepare")
KINDS = ("synthetic", "voc12", "coco14", "folder")
CHECK_CHUNK = 64


def _path_key(dataset_cfg: dict, key: str, required: bool) -> Path | None:
    """dataset_cfg[key] as an existing Path; ValueError naming dataset.<key> otherwise."""
    value = dataset_cfg.get(key)
    if value in (None, ""):
        if required:
            raise config_error(f"dataset.{key}", f"required for dataset.kind={dataset_cfg.get('kind')}")
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise config_error(f"dataset.{key}", f"path {path} does not exist")
    return path


def load_source(dataset_cfg: dict, out_dir: Path, workers: int = 1) -> Manifest:
    """Build (not validate) the manifest of the configured source; generated data -> out_dir."""
    kind = dataset_cfg.get("kind")
    if kind not in KINDS:
        raise config_error("dataset.kind", f"{kind!r} is not one of {KINDS}")
    if kind == "synthetic":
        from conta_core.data.synthetic import generate_synthetic

        if not isinstance(dataset_cfg.get("synthetic"), dict):
            raise config_error("dataset.synthetic", "required for dataset.kind=synthetic")
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
    """(width, height) of an image decoded in full (a truncated JPEG whose header is fine fails
    here, not in train_cls); ValueError naming the file and id."""
    if not path.is_file():
        raise ValueError(f"image id {image_id!r}: image file {path} not found")
    try:
        with Image.open(path) as im:
            im.load()
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
    bad = [int(v) for v in values if v > num_fg and v != IGNORE_LABEL]
    if bad:
        raise ValueError(
            f"image id {image_id!r}: mask {path} has value(s) {bad} outside 0..{num_fg} and {IGNORE_LABEL}"
        )


def _check_ids(manifest: Manifest, ids: list[str]) -> None:
    for i in ids:
        size = check_image(manifest.image_file(i), i)
        mask = manifest.mask_file(i)
        if mask is not None:
            check_mask(mask, i, manifest.num_fg, size)


def check_files(manifest: Manifest, workers: int = 1) -> None:
    """Decode every image and every mask of the manifest in full; threads = workers."""
    ids = sorted(set().union(*manifest.splits.values()))
    chunks = [ids[i : i + CHECK_CHUNK] for i in range(0, len(ids), CHECK_CHUNK)]
    with Progress("check images", len(ids), unit="img") as bar:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for chunk, _ in zip(chunks, pool.map(lambda c: _check_ids(manifest, c), chunks)):
                bar.update(n=len(chunk))


def _relative_root(manifest: Manifest, out_dir: Path) -> Manifest:
    """A copy whose root is relative to out_dir when it lies inside it (movable results)."""
    root = Path(manifest.root).resolve()
    if root.is_relative_to(out_dir):
        return dataclasses.replace(manifest, root=root.relative_to(out_dir))
    return manifest


TRAINING_SPLITS = ("train", "train_eval")


def drop_unlabelled_training(manifest: Manifest) -> Manifest:
    """Leave images without a foreground label (an all-background mask, a CSV row without
    tags, a COCO image without annotations) out of train and train_eval, with one counted
    warning; meta["train_without_labels"] records how many. [OURS] IRNet's cls_labels list
    only labelled images: such an image has no class for the CAM loss, no CAM, IR label or
    pseudo-mask other than background, so every later step would spend time on it for nothing.
    val/test keep them (an all-background image is a valid evaluation case)."""
    dropped = sorted({i for s in TRAINING_SPLITS for i in manifest.splits.get(s, []) if not manifest.labels.get(i)})
    if not dropped:
        return manifest
    log.warning(
        "dataset %s: %d training image(s) without a foreground label left out of train/train_eval (e.g. %s)",
        manifest.name,
        len(dropped),
        dropped[:3],
    )
    gone = set(dropped)
    splits = {k: ([i for i in v if i not in gone] if k in TRAINING_SPLITS else v) for k, v in manifest.splits.items()}
    meta = {**manifest.meta, "train_without_labels": manifest.meta.get("train_without_labels", 0) + len(dropped)}
    return dataclasses.replace(manifest, splits=splits, meta=meta)


SCORED_SPLITS = ("train_eval", "val")  # the evaluation steps score these when the dataset has GT masks


def check_scorable(manifest: Manifest) -> None:
    """With GT masks (any mask in the manifest) every scored split needs at least one, else the
    evaluation jobs of every round would fail after the training; ValueError at prepare instead."""
    if not manifest.masks:
        return  # no GT at all: no evaluation job is planned (rules/common.smk HAS_GT)
    for split in SCORED_SPLITS:
        ids = manifest.splits.get(split, [])
        if ids and not any(manifest.mask_file(i) is not None for i in ids):
            raise ValueError(
                f"dataset {manifest.name}: no GT mask for any of the {len(ids)} images of split {split!r}, "
                "which the evaluation steps score; give masks for them (dataset.masks_dir) or run without "
                "GT (folder dataset with masks_dir: null)"
            )


def prepare_dataset(dataset_cfg: dict, out_dir: Path, check_images: bool = True, workers: int = 1) -> Manifest:
    """Build, validate and save the dataset manifest as out_dir/manifest.json.

    dataset_cfg: the `dataset` config section. check_images: decode every image and
    every mask in full (mask values, size). workers: threads for the checks / processes for COCO masks.
    Returns the manifest (absolute root). Raises ValueError naming the key / file / id.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = drop_unlabelled_training(load_source(dataset_cfg, out_dir, workers))
    manifest.validate()
    check_scorable(manifest)
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
