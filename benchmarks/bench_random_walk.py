#!/usr/bin/env python
"""Benchmark: IRNet boundary map + random walk -> pseudo-masks (step random_walk).

naive: IRNet's make_sem_seg_labels loop: per image, the boundary map of [image, flip],
       the dense N x N affinity matrix (N = stride-4 pixels) from the pair affinities,
       T = column-normalised A^beta squared exp_times times (T^(2^exp_times)), then v T.
fast:  conta_core.steps.random_walk.make_pseudo_masks (sparse walk, 2^exp_times sparse steps).

Inputs: --images synthetic images (seed 0) of --size px, CAMs derived from their GT masks
(seed 0), a random-init resnet18 IRNet boundary net (seed 0); config random_walk section.

CLI: python benchmarks/bench_random_walk.py [--images 8] [--size 96] [--device auto|cpu|cuda]
     [--repeat 3] [--threads 2] [--shards 1|2] [--json FILE] (see benchmarks/harness.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures import load_config, make_cam_files, make_dataset, make_edge_net, train_ids
from harness import Step, main


def prepare(work: Path, args) -> dict:
    manifest = make_dataset(work / "data", args.images, args.size)
    ids = train_ids(manifest, args.images)
    cams = make_cam_files(manifest, ids, work / "cam")
    irn = make_edge_net(work / "irn.pth")
    return {"manifest": str(manifest), "cams": str(cams), "irn": str(irn), "cfg": load_config()["random_walk"],
            "ids": ids}  # fmt: skip


def dense_walk(cams, boundary, beta: float, exp_times: int, radius: int):
    """IRNet's dense random walk: float32[P, h, w] planes, float32[h, w] boundary -> [P, h, w]."""
    import torch

    from conta_core.steps.irn import build_pair_index, pair_affinity

    h, w = boundary.shape
    n = h * w
    index = build_pair_index(h, w, radius).to(boundary.device)
    aff = pair_affinity(boundary[None], index)[0].pow(beta)
    src = torch.arange(n, device=boundary.device).expand_as(index.dst)
    a = torch.eye(n, device=boundary.device)
    a[src[index.valid], index.dst[index.valid]] = aff[index.valid]
    a[index.dst[index.valid], src[index.valid]] = aff[index.valid]
    t = a / a.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    v = (cams * (1.0 - boundary)).reshape(cams.shape[0], -1)
    return (v @ t).reshape(-1, h, w)


def naive(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from conta_core.data.manifest import Manifest
    from conta_core.data.transforms import normalize
    from conta_core.infra.fileio import CAM_SUFFIX, load_cam, load_image, save_label_png
    from conta_core.models.irn import edge_net_from_checkpoint

    manifest = Manifest.load(spec["manifest"])
    net = edge_net_from_checkpoint(spec["irn"], device)
    cfg = spec["cfg"]
    for image_id in ids:
        img = load_image(manifest.image_file(image_id))
        cam = load_cam(Path(spec["cams"]) / f"{image_id}{CAM_SUFFIX}")
        keys, h, w = cam["keys"], img.shape[0], img.shape[1]
        with torch.no_grad():
            x = torch.from_numpy(normalize(img)).to(device)
            logits = net(torch.stack([x, x.flip(-1)]))[:, 0]
            boundary = torch.sigmoid((logits[0] + logits[1].flip(-1)) / 2)
            cams = torch.from_numpy(cam["cam"]).to(device)
            rw = dense_walk(cams, boundary, cfg["beta"], cfg["exp_times"], cfg["radius"])
            up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
            up = up / up.max()
            scores = torch.cat([torch.full_like(up[:1], cfg["bg_threshold"]), up])
        label = np.concatenate([[0], keys + 1])[scores.argmax(0).cpu().numpy()] if len(keys) else np.zeros((h, w))
        save_label_png(out / f"{image_id}.png", label.astype(np.uint8))


def fast(spec: dict, ids: list[str], out: Path, device, threads: int) -> None:
    from conta_core.data.artifacts import index_artifacts
    from conta_core.data.manifest import Manifest
    from conta_core.infra.fileio import CAM_SUFFIX
    from conta_core.steps.random_walk import make_pseudo_masks

    cams = index_artifacts([Path(spec["cams"])], CAM_SUFFIX)
    make_pseudo_masks(Manifest.load(spec["manifest"]), ids, cams, Path(spec["irn"]), out, spec["cfg"], device)


STEP = Step("random_walk", prepare, {"naive": naive, "fast": fast})

if __name__ == "__main__":
    main(STEP, __file__)
