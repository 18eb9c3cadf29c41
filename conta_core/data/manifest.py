"""The dataset manifest: one JSON file that every step reads instead of a dataset layout.

Whatever the source (generated, VOC+SBD, COCO, a folder + CSV), `prepare_data` writes a
manifest with explicit per-image paths, so downstream code has a single interface.

Conventions used across conta_core:
- `class_names[0] == "background"`; foreground classes are 1..C in label maps.
- Multi-hot label vectors cover the C foreground classes only: class k (label-map value)
  is vector index k-1 (IRNet's `cls_labels.npy` convention). CAM `keys` use the same
  0-based foreground indices.
- Label maps use 255 for ignore/void.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conta_core.infra.fileio import write_json

MANIFEST_VERSION = 1


@dataclass
class Manifest:
    """Index of a prepared dataset.

    name: dataset kind ("synthetic", "voc12", "coco14", "folder").
    root: folder that relative image/mask paths are resolved against.
    class_names: ["background", fg_1, ..., fg_C].
    splits: split name -> list of image ids (e.g. "train", "val", "train_eval").
    labels: image id -> sorted list of foreground class indices in 1..C.
    images: image id -> image path (relative to root or absolute).
    masks: image id -> GT label PNG path, for ids that have one.
    meta: free-form provenance (generator settings, source files).
    """

    name: str
    root: Path
    class_names: list[str]
    splits: dict[str, list[str]]
    labels: dict[str, list[int]]
    images: dict[str, str]
    masks: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes including background (C + 1)."""
        return len(self.class_names)

    @property
    def num_fg(self) -> int:
        """Number of foreground classes C."""
        return len(self.class_names) - 1

    def ids(self, split: str) -> list[str]:
        if split not in self.splits:
            raise KeyError(f"manifest {self.name}: no split {split!r} (has {sorted(self.splits)})")
        return list(self.splits[split])

    def image_file(self, image_id: str) -> Path:
        return self._resolve(self.images[image_id])

    def mask_file(self, image_id: str) -> Path | None:
        p = self.masks.get(image_id)
        return None if p is None else self._resolve(p)

    def label_vector(self, image_id: str) -> np.ndarray:
        """float32[C] multi-hot over foreground classes (index k-1 for class k)."""
        v = np.zeros(self.num_fg, dtype=np.float32)
        for k in self.labels[image_id]:
            v[k - 1] = 1.0
        return v

    def _resolve(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else self.root / path

    def to_dict(self) -> dict:
        return {
            "version": MANIFEST_VERSION,
            "name": self.name,
            "root": str(self.root),
            "class_names": self.class_names,
            "splits": self.splits,
            "labels": self.labels,
            "images": self.images,
            "masks": self.masks,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read dataset manifest ({e})") from e
        if d.get("version") != MANIFEST_VERSION:
            raise ValueError(f"{path}: manifest version {d.get('version')} != {MANIFEST_VERSION}")
        root = Path(d["root"])
        if not root.is_absolute():
            root = (path.parent / root).resolve()
        return cls(
            name=d["name"],
            root=root,
            class_names=d["class_names"],
            splits=d["splits"],
            labels={k: list(v) for k, v in d["labels"].items()},
            images=d["images"],
            masks=d.get("masks", {}),
            meta=d.get("meta", {}),
        )

    def validate(self) -> None:
        """Structural checks; raise ValueError naming the offending split/id."""
        if not self.class_names or self.class_names[0] != "background":
            raise ValueError(f"manifest {self.name}: class_names must start with 'background'")
        for split, ids in self.splits.items():
            if not ids:
                raise ValueError(f"manifest {self.name}: split {split!r} is empty")
            if len(set(ids)) != len(ids):
                seen, dup = set(), None
                for i in ids:
                    if i in seen:
                        dup = i
                        break
                    seen.add(i)
                raise ValueError(f"manifest {self.name}: split {split!r} has duplicate image id {dup!r}")
            for i in ids:
                if i not in self.images:
                    raise ValueError(f"manifest {self.name}: image id {i!r} of split {split!r} has no image path")
                if i not in self.labels:
                    raise ValueError(f"manifest {self.name}: image id {i!r} of split {split!r} has no labels")
                if split in ("train", "train_eval") and not self.labels[i]:
                    raise ValueError(
                        f"manifest {self.name}: image id {i!r} of split {split!r} has no foreground label "
                        "(conta_core.data.prepare leaves such images out of the training splits)"
                    )
        # val = train is allowed only as the folder loader's declared fallback (meta.val_is_train)
        held_out = set() if self.meta.get("val_is_train") else set(self.splits.get("val", []))
        held_out |= set(self.splits.get("test", []))
        for split in ("train", "train_eval"):
            leak = sorted(held_out & set(self.splits.get(split, [])))
            if leak:
                raise ValueError(
                    f"manifest {self.name}: {len(leak)} image id(s) of split {split!r} are also in val/test "
                    f"(e.g. {leak[:3]}); a held-out image seen in training inflates every val number"
                )
        for i, ks in self.labels.items():
            for k in ks:
                if not 1 <= k <= self.num_fg:
                    raise ValueError(f"manifest {self.name}: image {i!r} has class index {k} outside 1..{self.num_fg}")
