#!/usr/bin/env python
"""Benchmark: DeepLab-v2 (MSC) segmentation inference (step infer_seg).

naive: deeplab-pytorch's loop: one image at a time, one test scale at a time, the image
       and its flip as separate forward passes (batch 1) under torch.no_grad.
fast:  conta_core.steps.segment.infer_segmentation (the production function).

Inputs: --images synthetic images (seed 0) of --size px, a random-init resnet18 DeepLab-v2
(seed 0); the config's segmentation.infer section (scales [1.0], flip, no CRF).

CLI: python benchmarks/bench_seg_infer.py [--images 8] [--size 96] [--device auto|cpu|cuda]
     [--repeat 3] [--threads 2] [--shards 1|2] [--json FILE] (see benchmarks/harness.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures import load_config, make_dataset, make_deeplab, train_ids
from harness import Step, main


def prepare(work: Path, args) -> dict:
    from conta_core.data.manifest import Manifest

    manifest = make_dataset(work / "data", args.images, args.size)
    model = make_deeplab(work / "seg.pth", Manifest.load(manifest).num_classes)
    return {"manifest": str(manifest), "model": str(model), "cfg": load_config()["segmentation"],
            "ids": train_ids(manifest, args.images)}  # fmt: skip


def naive(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from conta_core.data.manifest import Manifest
    from conta_core.data.transforms import normalize
    from conta_core.infra.fileio import load_image, save_label_png
    from conta_core.models.deeplab import load_deeplab

    manifest = Manifest.load(spec["manifest"])
    model = load_deeplab(spec["model"], device)
    infer = spec["cfg"]["infer"]
    for image_id in ids:
        img = load_image(manifest.image_file(image_id))
        h, w = img.shape[:2]
        x = torch.from_numpy(normalize(img))[None].to(device)
        total, passes = 0, 0
        with torch.no_grad():
            for s in infer["scales"]:
                xs = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
                for flipped in [False, True] if infer["flip"] else [False]:
                    logits = model(xs.flip(-1) if flipped else xs)
                    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]
                    total = total + (logits.flip(-1) if flipped else logits)
                    passes += 1
            probs = torch.softmax(total / passes, dim=0)
        save_label_png(out / f"{image_id}.png", probs.argmax(0).cpu().numpy().astype(np.uint8))


def fast(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    from conta_core.data.manifest import Manifest
    from conta_core.steps.segment import infer_segmentation

    infer_segmentation(Manifest.load(spec["manifest"]), ids, Path(spec["model"]), out, spec["cfg"], device)


STEP = Step("infer_seg", prepare, {"naive": naive, "fast": fast})

if __name__ == "__main__":
    main(STEP, __file__)
