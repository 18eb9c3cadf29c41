"""Datasets: sources (synthetic, VOC 2012 + SBD, COCO 2014, folder + CSV) -> Manifest,
torch Dataset classes over a manifest, and lookup of per-image artifacts by id.

Modules: manifest (Manifest), prepare (prepare_dataset), synthetic, voc, coco, folder,
artifacts (index_artifacts, require), torch_datasets, transforms.
"""

from conta_core.data.artifacts import index_artifacts, require
from conta_core.data.manifest import Manifest

__all__ = ["Manifest", "index_artifacts", "require"]
