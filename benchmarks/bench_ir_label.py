#!/usr/bin/env python
"""Benchmark: dense-CRF inter-pixel-relation labels from CAMs (step make_ir_label).

naive: IRNet's cam_to_ir_label in one process: per image, a fresh dense CRF for the
       fg-threshold map and another for the bg-threshold map.
fast:  conta_core.steps.ir_label.make_ir_labels with workers = --threads (spawn pool; the fg and
       bg CRFs of an image share one CRF object, i.e. one permutohedral lattice).

Inputs: --images synthetic images (seed 0) of --size px and CAMs derived from their GT
masks (blurred class masks + noise, seed 0); the config's ir_label section.

CLI: python benchmarks/bench_ir_label.py [--images 8] [--size 96] [--repeat 3]
     [--threads 2] [--shards 1|2] [--json FILE] (see benchmarks/harness.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures import load_config, make_cam_files, make_dataset, train_ids
from harness import Step, main


def prepare(work: Path, args) -> dict:
    manifest = make_dataset(work / "data", args.images, args.size)
    ids = train_ids(manifest, args.images)
    cams = make_cam_files(manifest, ids, work / "cam")
    return {"manifest": str(manifest), "cams": str(cams), "cfg": load_config()["ir_label"], "ids": ids}


def _naive_label(img: np.ndarray, keys: np.ndarray, high_res: np.ndarray, cfg: dict) -> np.ndarray:
    from conta_core.steps.crf import crf_inference_label

    class_ids = np.concatenate([[0], keys + 1])
    maps = []
    for thr in (cfg["fg_threshold"], cfg["bg_threshold"]):
        planes = np.concatenate([np.full((1, *high_res.shape[1:]), thr, np.float32), high_res])
        maps.append(class_ids[crf_inference_label(img, planes.argmax(0), len(class_ids), cfg["crf"])])
    fg, bg = maps
    return np.where(fg > 0, fg, np.where(bg == 0, 0, 255)).astype(np.uint8)


def naive(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    from conta_core.data.manifest import Manifest
    from conta_core.infra.fileio import CAM_SUFFIX, load_cam, load_image, save_label_png

    manifest = Manifest.load(spec["manifest"])
    for image_id in ids:
        img = load_image(manifest.image_file(image_id))
        cam = load_cam(Path(spec["cams"]) / f"{image_id}{CAM_SUFFIX}")
        save_label_png(out / f"{image_id}.png", _naive_label(img, cam["keys"], cam["high_res"], spec["cfg"]))


def fast(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    from conta_core.data.artifacts import index_artifacts
    from conta_core.data.manifest import Manifest
    from conta_core.infra.fileio import CAM_SUFFIX
    from conta_core.steps.ir_label import make_ir_labels

    cams = index_artifacts([Path(spec["cams"])], CAM_SUFFIX)
    make_ir_labels(Manifest.load(spec["manifest"]), ids, cams, out, spec["cfg"], workers=threads)


def fast_1proc(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    """The fast path without the pool (isolates the CRF-reuse gain from the pool's)."""
    fast(spec, ids, out, device, 1)


STEP = Step("make_ir_label", prepare, {"naive": naive, "fast": fast, "fast_1proc": fast_1proc})

if __name__ == "__main__":
    main(STEP, __file__)
