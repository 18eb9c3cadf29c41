"""MS-COCO 2014 instances -> VOC-style class-index PNGs + Manifest.

Input ``root`` holds train2014/, val2014/ and annotations/instances_{train,val}2014.json.
The 80 category ids are mapped to 1..80 in sorted id order (0 = background). Each image's
mask is written once to out_dir/coco14_masks/<split dir>/<id>.png (skipped when it exists):
crowd regions are drawn first as 255 (ignore), then the non-crowd instances by decreasing
area, so smaller instances end up on top; instances with equal area keep file order.
Image-level labels are the categories of all the image's annotations (crowd included).
Image ids are the file name stems (e.g. COCO_train2014_000000000009). Images without any
annotation are dropped from train/train_eval (no foreground class to learn) and kept in val.

Segmentations are decoded with pycocotools when it is installed (optional extra
``pip install pycocotools``); otherwise polygons are rasterised with PIL and uncompressed
RLE is decoded with numpy, and only compressed (string) RLE needs pycocotools.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from conta_core.data.manifest import Manifest
from conta_core.infra.config import config_error
from conta_core.infra.fileio import IGNORE_LABEL, save_label_png
from conta_core.infra.progress import Progress

log = logging.getLogger("conta.data.coco")
SPLIT_DIRS = {"train": "train2014", "val": "val2014"}
CHUNK = 256  # images per worker task


def _pycocotools_mask():
    """pycocotools.mask, or None when the optional extra is not installed."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        return None
    return mask_utils


def rasterise_polygons(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """bool[h, w] union of COCO polygons [[x0, y0, x1, y1, ...], ...] (PIL rasteriser)."""
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=1)
    return np.asarray(im, dtype=bool)


def decode_uncompressed_rle(rle: dict) -> np.ndarray:
    """bool[h, w] from {"counts": [int, ...], "size": [h, w]} (column-major runs, 0s first)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum {counts.sum()} != h*w {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T


def decode_segmentation(seg, h: int, w: int, where: str) -> np.ndarray:
    """bool[h, w] mask of one annotation's `segmentation` (polygons or RLE)."""
    mu = _pycocotools_mask()
    if mu is not None:
        if isinstance(seg, list):
            rle = mu.merge(mu.frPyObjects(seg, h, w)) if seg else None
        elif isinstance(seg.get("counts"), list):
            rle = mu.frPyObjects(seg, h, w)
        else:
            rle = seg
        return np.zeros((h, w), dtype=bool) if rle is None else mu.decode(rle).astype(bool)
    if isinstance(seg, list):
        return rasterise_polygons(seg, h, w)
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        return decode_uncompressed_rle(seg)
    raise ValueError(
        f"{where}: compressed RLE segmentation needs pycocotools; install it with `pip install pycocotools`"
    )


def render_mask(anns: list[dict], h: int, w: int, cat_index: dict[int, int], where: str) -> np.ndarray:
    """uint8[h, w] class-index mask of one image (crowd -> 255 below the instances)."""
    mask = np.zeros((h, w), dtype=np.uint8)
    for a in anns:
        if a.get("iscrowd", 0):
            mask[decode_segmentation(a["segmentation"], h, w, where)] = IGNORE_LABEL
    instances = [a for a in anns if not a.get("iscrowd", 0)]
    for a in sorted(instances, key=lambda a: -float(a.get("area", 0.0))):  # stable: file order on ties
        mask[decode_segmentation(a["segmentation"], h, w, where)] = cat_index[a["category_id"]]
    return mask


def _write_masks(tasks: list[tuple[dict, list[dict], str]], cat_index: dict[int, int]) -> None:
    """Worker: render + save the masks of a chunk of (image info, annotations, png path)."""
    for info, anns, png in tasks:
        if not Path(png).is_file():
            where = f"COCO image {info.get('file_name', info['id'])}"
            save_label_png(png, render_mask(anns, int(info["height"]), int(info["width"]), cat_index, where))


def _load_instances(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read COCO instances json ({e})") from e


def _split_entries(root: Path, out_dir: Path, split: str, workers: int):
    """(class names, image entries [(id, rel image path, mask path, labels)]) of one split."""
    ann_path = root / "annotations" / f"instances_{SPLIT_DIRS[split]}.json"
    data = _load_instances(ann_path)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: k + 1 for k, c in enumerate(cats)}
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a["category_id"] not in cat_index:
            raise ValueError(f"{ann_path}: annotation {a.get('id')} has unknown category_id {a['category_id']}")
        by_image.setdefault(a["image_id"], []).append(a)
    entries, tasks = [], []
    for info in sorted(data["images"], key=lambda i: i["file_name"]):
        anns = by_image.get(info["id"], [])
        image_id = Path(info["file_name"]).stem
        png = out_dir / "coco14_masks" / SPLIT_DIRS[split] / f"{image_id}.png"
        labels = sorted({cat_index[a["category_id"]] for a in anns})
        entries.append((image_id, f"{SPLIT_DIRS[split]}/{info['file_name']}", str(png), labels))
        tasks.append((info, anns, str(png)))
    chunks = [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]
    bar = Progress(f"COCO {split} masks", len(tasks), unit="img")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for chunk, _ in zip(chunks, pool.map(_write_masks, chunks, [cat_index] * len(chunks))):
                bar.update(n=len(chunk))
    else:
        for chunk in chunks:
            _write_masks(chunk, cat_index)
            bar.update(n=len(chunk))
    bar.close()
    return ["background"] + [c["name"] for c in cats], entries


def prepare_coco14(root: Path, out_dir: Path, workers: int = 1) -> Manifest:
    """Build the COCO 2014 manifest; masks are written under out_dir (see module docstring).

    Splits: train = train2014 images with >= 1 annotation, train_eval = train, val = val2014.
    workers: processes rendering masks.
    """
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    if not (root / "annotations").is_dir():
        raise config_error("dataset.root", f"{root} has no annotations/ folder (COCO 2014 layout)")
    class_names: list[str] | None = None
    splits: dict[str, list[str]] = {}
    images, masks, labels = {}, {}, {}
    dropped = 0
    for split in SPLIT_DIRS:
        names, entries = _split_entries(root, out_dir, split, workers)
        if class_names is not None and names != class_names:
            raise ValueError(f"{root / 'annotations'}: train and val jsons have different categories")
        class_names = names
        ids = []
        for image_id, rel, png, labs in entries:
            if image_id in images:
                raise ValueError(f"{root / 'annotations'}: duplicate image id {image_id!r}")
            images[image_id], masks[image_id], labels[image_id] = rel, png, labs
            if split == "train" and not labs:
                dropped += 1
                continue
            ids.append(image_id)
        splits[split] = ids
    if dropped:
        log.warning("COCO: %d train images without annotations left out of train", dropped)
    return Manifest(
        name="coco14",
        root=root,
        class_names=class_names,
        splits={"train": splits["train"], "train_eval": list(splits["train"]), "val": splits["val"]},
        labels=labels,
        images=images,
        masks=masks,
        meta={
            "source": "COCO 2014 instances",
            "rasteriser": "pycocotools" if _pycocotools_mask() is not None else "PIL polygons / numpy RLE",
            "train_without_annotations": dropped,
        },
    )
