#!/usr/bin/env python
"""Benchmark: multi-scale + flip CAM inference (step make_cam).

naive: IRNet's loop, one image at a time, one scale at a time, the image and its flip as
       two separate forward passes (batch 1) under torch.no_grad.
fast:  conta_core.steps.cam.make_cams (the production function).

Inputs: --images synthetic images (seed 0) of --size px, a random-init resnet18 classifier
(seed 0), the config's cam.scales / cam.flip.

CLI: python benchmarks/bench_cam.py [--images 8] [--size 96] [--device auto|cpu|cuda]
     [--repeat 3] [--threads 2] [--shards 1|2] [--json FILE] (see benchmarks/harness.py)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fixtures import load_config, make_classifier, make_dataset, train_ids
from harness import Step, main


def prepare(work: Path, args) -> dict:
    from conta_core.data.manifest import Manifest

    manifest = make_dataset(work / "data", args.images, args.size)
    num_fg = Manifest.load(manifest).num_fg
    model = make_classifier(work / "cls.pth", num_fg)
    return {"manifest": str(manifest), "model": str(model), "cam": load_config()["cam"],
            "ids": train_ids(manifest, args.images)}  # fmt: skip


def naive(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from conta_core.data.manifest import Manifest
    from conta_core.data.transforms import normalize, resize_image
    from conta_core.infra.fileio import CAM_SUFFIX, load_image, save_cam
    from conta_core.models.classifier import load_classifier

    manifest = Manifest.load(spec["manifest"])
    model = load_classifier(spec["model"], device)
    scales, flip = spec["cam"]["scales"], bool(spec["cam"]["flip"])
    for image_id in ids:
        img = load_image(manifest.image_file(image_id))
        keys = np.asarray(manifest.labels[image_id], dtype=np.int64) - 1
        h, w = img.shape[:2]
        strided_size = (math.ceil(h / 4), math.ceil(w / 4))
        strided = torch.zeros((len(keys), *strided_size), device=device)
        high = torch.zeros((len(keys), h, w), device=device)
        with torch.no_grad():
            for s in scales:
                x = torch.from_numpy(normalize(resize_image(img, (round(h * s), round(w * s)))))[None].to(device)
                maps = model.cam_maps(x)[0, keys]
                if flip:
                    maps = maps + model.cam_maps(x.flip(-1))[0, keys].flip(-1)
                strided += F.interpolate(maps[None], strided_size, mode="bilinear", align_corners=False)[0]
                high += F.interpolate(maps[None], (h, w), mode="bilinear", align_corners=False)[0]
        strided /= strided.flatten(1).amax(1)[:, None, None] + 1e-5
        high /= high.flatten(1).amax(1)[:, None, None] + 1e-5
        save_cam(out / f"{image_id}{CAM_SUFFIX}", keys, strided.cpu().numpy(), high.cpu().numpy())


def fast(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    from conta_core.data.manifest import Manifest
    from conta_core.steps.cam import make_cams

    make_cams(Manifest.load(spec["manifest"]), ids, spec["model"], out, spec["cam"], device)


STEP = Step("make_cam", prepare, {"naive": naive, "fast": fast})

if __name__ == "__main__":
    main(STEP, __file__)
