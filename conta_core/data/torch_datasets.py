"""torch Dataset classes over a Manifest for classification, segmentation and inference.

Training datasets draw their augmentation from np.random.default_rng((seed, epoch, index)),
so an item depends only on (seed, epoch, index): identical across runs, worker counts and
devices. Call `set_epoch(epoch)` at the start of each epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import augment
from conta_core.data.xm import load_xm
from conta_core.infra.fileio import IGNORE_LABEL, load_image, load_map_for

XM_PAD = 0  # padded context-map pixels count as background


def _check_ids(manifest: Manifest, ids: list[str]) -> list[str]:
    unknown = [i for i in ids if i not in manifest.images]
    if unknown:
        raise ValueError(f"manifest {manifest.name}: unknown image id(s) {unknown[:5]}")
    return list(ids)


class _Augmented(Dataset):
    """Shared epoch / rng handling of the training datasets."""

    def __init__(self, manifest: Manifest, ids: list[str], crop_size: int, scale_range, seed: int):
        self.manifest = manifest
        self.ids = _check_ids(manifest, ids)
        self.crop_size = int(crop_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, index))

    def __len__(self) -> int:
        return len(self.ids)


class ClassificationDataset(_Augmented):
    """Multi-label classification items (IRNet CAM training).

    Item: {"image": float32[3, S, S] normalised, "label": float32[C] multi-hot, "id": str,
    and with xm_files "xm": uint8[S, S] (the round's predicted mask, transformed with the
    image, padded with 0)}.
    """

    def __init__(
        self,
        manifest: Manifest,
        ids: list[str],
        crop_size: int,
        scale_range: tuple[float, float],
        seed: int = 0,
        xm_files: dict[str, Path] | None = None,
    ):
        super().__init__(manifest, ids, crop_size, scale_range, seed)
        self.xm_files = xm_files

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        img = load_image(self.manifest.image_file(image_id))
        maps = []
        if self.xm_files is not None:
            maps = [load_xm(self.xm_files, image_id, img.shape[:2])]
        x, maps = augment(img, maps, self.rng(index), self.scale_range, self.crop_size, map_pad=XM_PAD)
        item = {"image": x, "label": self.manifest.label_vector(image_id), "id": image_id}
        if self.xm_files is not None:
            item["xm"] = maps[0].astype(np.uint8)
        return item


class SegmentationDataset(_Augmented):
    """Segmentation items: {"image": float32[3, S, S], "label": int64[S, S] (pad 255), "id"}."""

    def __init__(
        self,
        manifest: Manifest,
        ids: list[str],
        label_files: dict[str, Path],
        crop_size: int,
        scale_range: tuple[float, float],
        seed: int = 0,
        norm: str = "imagenet",
    ):
        super().__init__(manifest, ids, crop_size, scale_range, seed)
        self.label_files = label_files
        self.norm = norm  # transforms.normalize: "imagenet" | "caffe" (segmentation.input_norm)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        img = load_image(self.manifest.image_file(image_id))
        label = load_map_for(self.label_files, image_id, img.shape[:2], "label")
        x, (label,) = augment(
            img, [label], self.rng(index), self.scale_range, self.crop_size, map_pad=IGNORE_LABEL, norm=self.norm
        )
        return {"image": x, "label": label.astype(np.int64), "id": image_id}
