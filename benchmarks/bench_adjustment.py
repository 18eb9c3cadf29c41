#!/usr/bin/env python
"""Cost of `context.adjustment: exact` against `nwgm` (docs/context.md).

    python benchmarks/bench_adjustment.py [--backbone resnet50] [--classes 20] [--size 512]
        [--batch 2] [--repeat 5] [--device auto] [--threads 2]

Times, on random-init weights and random inputs, one training step (forward + backward of
the classifier with the context module) and one CAM pass (cam_maps, no grad) of the round-t
classifier for both adjustments, median of --repeat after one warm-up, and prints one
markdown row per adjustment with the ratio exact / nwgm. Defaults: the VOC setting
(ResNet-50, 20 classes, 512 px crops, context 32 x 32).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from harness import _sync  # benchmarks/: CUDA synchronisation before reading the clock

from conta_core.infra.device import claim_device
from conta_core.models.classifier import CAMNet


def timed(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = claim_device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
    xm = (torch.rand(args.batch, args.context, args.context, generator=g) > 0.7).float().to(device)
    conf = torch.rand(args.classes, args.context, args.context, generator=g).to(device)
    y = (torch.rand(args.batch, args.classes, generator=g) > 0.8).float().to(device)
    rows = {}
    for adjustment in ("nwgm", "exact"):
        ctx = {"mode": "conta", "block": 5, "size": [args.context] * 2, "xm_encoding": "foreground",
               "m_scale": 1.0, "init_std": 0.2, "adjustment": adjustment}  # fmt: skip
        torch.manual_seed(0)
        net = CAMNet(args.classes, backbone=args.backbone, freeze_bn=True, frozen_stages=2, context=ctx).to(device)
        net.set_confounder(conf)

        def train_step(net=net):
            net.train()
            net.zero_grad(set_to_none=True)
            F.multilabel_soft_margin_loss(net(x, xm), y).backward()

        def cam_pass(net=net):
            net.eval()
            with torch.no_grad():
                net.cam_maps(x, xm)

        rows[adjustment] = (timed(train_step, args.repeat, device), timed(cam_pass, args.repeat, device))
    print(
        f"{args.backbone}, {args.classes} classes, batch {args.batch} x {args.size} px, context "
        f"{args.context}x{args.context}, {device}, {args.threads} threads, median of {args.repeat}"
    )
    print("| adjustment | training step s | CAM pass s | exact / nwgm |")
    print("| --- | --- | --- | --- |")
    for name, (tr, cam) in rows.items():
        ratio = "" if name == "nwgm" else f"{tr / rows['nwgm'][0]:.2f} (step), {cam / rows['nwgm'][1]:.2f} (CAM)"
        print(f"| {name} | {tr:.3f} | {cam:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
