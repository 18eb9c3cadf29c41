#!/usr/bin/env python
"""Benchmark: confounder set (class-average masks) + context map M (step confounder, CONTA Eq. 3).

naive: per image and per class, the binary class map resized on its own (one area
       interpolation per class) and accumulated; then per image (batch 1) X_m encoding
       and the context module's attention M = sum_i alpha_i c_i P(c_i).
fast:  conta_core.steps.confounder.build_confounder (the production function) and the context
       module on batches of images (as the classifier sees it in training / CAM inference).

Inputs: --images synthetic images (seed 0) of --size px whose GT masks stand in for the
segmentation predictions X_m; the config's context section (size, xm_encoding,
confounder_resize); a ContextModule with weights from seed 0.

CLI: python benchmarks/bench_confounder.py [--images 8] [--size 96] [--repeat 3]
     [--threads 2] [--json FILE] (see benchmarks/harness.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures import MODEL_SEED, load_config, make_dataset, train_ids
from harness import Step, main

CONTEXT_BATCH = 16  # images per context-module call in the fast variant (classifier.batch_size)


def prepare(work: Path, args) -> dict:
    manifest = make_dataset(work / "data", args.images, args.size)
    return {"manifest": str(manifest), "context": load_config()["context"], "ids": train_ids(manifest, args.images)}


def _setup(spec: dict, ids: list[str]):
    import torch

    from conta_core.data.manifest import Manifest
    from conta_core.models.context import ContextModule

    manifest = Manifest.load(spec["manifest"])
    size = tuple(int(s) for s in spec["context"]["size"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MODEL_SEED)
        module = ContextModule(manifest.num_fg, size)
    masks = {i: manifest.mask_file(i) for i in ids}
    labels = {i: manifest.labels[i] for i in ids}
    return manifest, size, module.eval(), masks, labels


def naive(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from conta_core.infra.fileio import load_label_png
    from conta_core.models.context import encode_xm
    from conta_core.steps.confounder import save_confounder

    manifest, size, module, masks, labels = _setup(spec, ids)
    sums = np.zeros((manifest.num_fg, *size))
    counts = np.zeros(manifest.num_fg, dtype=np.int64)
    for image_id in sorted(labels):
        mask = load_label_png(masks[image_id])
        for k in labels[image_id]:
            binary = torch.from_numpy((mask == k).astype(np.float32))[None, None]
            sums[k - 1] += F.interpolate(binary, size=size, mode="area")[0, 0].numpy()
            counts[k - 1] += 1
    c = (sums / np.maximum(counts, 1)[:, None, None]).astype(np.float32)
    save_confounder(out / "confounder.h5", c, counts, manifest.class_names[1:], 0, "seg")
    module.to(device)
    conf = torch.from_numpy(c).to(device)
    with torch.no_grad():
        for image_id in ids:
            xm = encode_xm(load_label_png(masks[image_id]), spec["context"]["xm_encoding"], manifest.num_fg, size)
            module(torch.from_numpy(xm)[None].to(device), conf)


def fast(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    import torch

    from conta_core.infra.fileio import load_label_png
    from conta_core.models.context import encode_xm
    from conta_core.steps.confounder import build_confounder, save_confounder

    manifest, size, module, masks, labels = _setup(spec, ids)
    c, counts = build_confounder(masks, labels, manifest.num_fg, size, spec["context"]["confounder_resize"])
    save_confounder(out / "confounder.h5", c, counts, manifest.class_names[1:], 0, "seg")
    module.to(device)
    conf = torch.from_numpy(c).to(device)
    with torch.inference_mode():
        for start in range(0, len(ids), CONTEXT_BATCH):
            chunk = ids[start : start + CONTEXT_BATCH]
            xms = [encode_xm(load_label_png(masks[i]), spec["context"]["xm_encoding"], manifest.num_fg, size)
                   for i in chunk]  # fmt: skip
            module(torch.from_numpy(np.stack(xms)).to(device), conf)


STEP = Step("confounder", prepare, {"naive": naive, "fast": fast}, per_image=False)

if __name__ == "__main__":
    main(STEP, __file__)
