"""PASCAL VOC 2012 (+ optional SBD for train_aug) -> Manifest.

Inputs:
- ``root``: VOCdevkit/VOC2012 (or VOCdevkit containing VOC2012/) with JPEGImages/,
  SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt.
- ``sbd_root``: optional SBD ``benchmark_RELEASE`` folder (or its ``dataset/`` folder) with
  cls/<id>.mat (struct GTcls, field Segmentation) and {train,val}.txt.

Splits: train = train_aug = (SBD train + SBD val + VOC train) - VOC val when SBD is given,
else VOC train (or, if the VOC folder already holds SegmentationClassAug/ and
ImageSets/Segmentation/train_aug.txt, that list); train_eval = VOC train (1,464 images with
VOC GT); val = VOC val. SBD masks of ids without a VOC mask are converted once to palette
PNGs under out_dir/SegmentationClassAug/. Image-level labels are the classes present in
each mask (ignoring 0 and 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from conta_core.data.manifest import Manifest
from conta_core.infra.config import config_error
from conta_core.infra.fileio import IGNORE_LABEL, load_label_png, save_label_png
from conta_core.infra.progress import track

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


def labels_from_mask(mask: np.ndarray, num_fg: int, where: str) -> list[int]:
    """Sorted foreground classes 1..num_fg present in `mask: uint8[H, W]` (0, 255 ignored).

    Raises ValueError naming `where` (file / id) on a value outside {0..num_fg, 255}.
    """
    values = np.unique(mask)
    bad = [int(v) for v in values if v != IGNORE_LABEL and v > num_fg]
    if bad:
        raise ValueError(f"{where}: mask value(s) {bad} outside 0..{num_fg} and {IGNORE_LABEL}")
    return [int(v) for v in values if 0 < v <= num_fg]


def read_id_list(path: Path) -> list[str]:
    """Image ids (strings, one per line; blank lines skipped) of a VOC/SBD list file."""
    if not path.is_file():
        raise ValueError(f"{path}: image list not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def load_sbd_mask(path: Path) -> np.ndarray:
    """SBD cls/<id>.mat -> uint8[H, W] class indices (GTcls.Segmentation)."""
    try:
        mat = scipy.io.loadmat(str(path))
        seg = mat["GTcls"]["Segmentation"][0, 0]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path}: cannot read SBD mask GTcls.Segmentation ({e})") from e
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"{path}: GTcls.Segmentation must be 2-D, got shape {seg.shape}")
    return seg.astype(np.uint8)


def _voc_dir(root: Path) -> Path:
    root = Path(root)
    if (root / "VOC2012" / "JPEGImages").is_dir():
        return root / "VOC2012"
    if not (root / "JPEGImages").is_dir():
        raise config_error("dataset.root", f"{root} has no JPEGImages/ (expected VOCdevkit/VOC2012)")
    return root


def _sbd_dir(sbd_root: Path) -> Path:
    sbd_root = Path(sbd_root)
    d = sbd_root / "dataset" if (sbd_root / "dataset" / "cls").is_dir() else sbd_root
    if not (d / "cls").is_dir():
        raise config_error("dataset.sbd_root", f"{sbd_root} has no cls/ or dataset/cls/ (SBD benchmark_RELEASE)")
    return d


def _convert_sbd(sbd: Path, ids: list[str], out_dir: Path) -> dict[str, Path]:
    """Write out_dir/SegmentationClassAug/<id>.png for each id once; return id -> path."""
    out: dict[str, Path] = {}
    for i in track(ids, "SBD masks"):
        png = out_dir / "SegmentationClassAug" / f"{i}.png"
        if not png.is_file():
            save_label_png(png, load_sbd_mask(sbd / "cls" / f"{i}.mat"))
        out[i] = png
    return out


def _train_aug(voc: Path, sbd_root: Path | None, out_dir: Path, voc_train: list[str], voc_val: list[str]):
    """(train ids, id -> mask path for SBD-only ids, provenance note)."""
    val = set(voc_val)
    if sbd_root is not None:
        sbd = _sbd_dir(sbd_root)
        sbd_ids = read_id_list(sbd / "train.txt") + read_id_list(sbd / "val.txt")
        train = sorted((set(sbd_ids) | set(voc_train)) - val)
        has_voc = set(voc_train)
        need = [i for i in train if i not in has_voc and not (voc / "SegmentationClass" / f"{i}.png").is_file()]
        return train, _convert_sbd(sbd, need, out_dir), "SBD train+val + VOC train - VOC val"
    aug_list = voc / "ImageSets" / "Segmentation" / "train_aug.txt"
    aug_dir = voc / "SegmentationClassAug"
    if aug_list.is_file() and aug_dir.is_dir():
        train = sorted(set(read_id_list(aug_list)) - val)
        masks = {i: aug_dir / f"{i}.png" for i in train if not (voc / "SegmentationClass" / f"{i}.png").is_file()}
        return train, masks, "VOC2012 SegmentationClassAug + train_aug.txt - VOC val"
    return sorted(voc_train), {}, "VOC train (no SBD)"


def prepare_voc12(root: Path, sbd_root: Path | None, out_dir: Path) -> Manifest:
    """Build the VOC 2012 manifest (see module docstring); root = the VOC2012 folder."""
    voc = _voc_dir(Path(root)).resolve()
    out_dir = Path(out_dir).resolve()
    sets = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_id_list(sets / "train.txt"), read_id_list(sets / "val.txt")
    train, aug_masks, source = _train_aug(voc, sbd_root, out_dir, voc_train, voc_val)
    images: dict[str, str] = {}
    masks: dict[str, str] = {}
    labels: dict[str, list[int]] = {}
    all_ids = list(dict.fromkeys(train + voc_train + voc_val))
    for i in track(all_ids, "VOC labels"):
        images[i] = f"JPEGImages/{i}.jpg"
        mask = aug_masks.get(i, voc / "SegmentationClass" / f"{i}.png")
        if not Path(mask).is_file():
            raise ValueError(f"VOC image {i!r}: mask file {mask} not found")
        masks[i] = str(mask.relative_to(voc)) if mask.is_relative_to(voc) else str(mask)
        labels[i] = labels_from_mask(load_label_png(mask), len(VOC_CLASSES) - 1, str(mask))
    return Manifest(
        name="voc12",
        root=voc,
        class_names=list(VOC_CLASSES),
        splits={"train": train, "train_eval": sorted(voc_train), "val": sorted(voc_val)},
        labels=labels,
        images=images,
        masks=masks,
        meta={"source": source, "sbd_root": None if sbd_root is None else str(sbd_root)},
    )
