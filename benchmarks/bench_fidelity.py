#!/usr/bin/env python
"""Benchmark: what each reference convention costs (docs/fidelity.md).

For every key with a reference value and an alternative, the same inputs run under both:
- cam.resize pil_bicubic vs bilinear: compute_cams_batch, ResNet-50 CAM net, scales
  1/0.5/1.5/2 + flip, one image per call;
- random_walk.pad_size 512 vs null: boundary_map of the ResNet-50 edge network;
- segmentation.resnet_style caffe vs torchvision: DeepLab-v2 ResNet-101 MSC forward (eval).
Inputs: the 8 parity fixtures (97-160 px, tests/parity_fixtures.py) with recipe weights;
DeepLab on the 160 x 161 fixture. Reports the median over --repeat runs of the whole set.

CLI: python benchmarks/bench_fidelity.py [--repeat 3] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import parity_fixtures as fx  # noqa: E402


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up (first-call allocations, lazy imports)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from conta_core.models.classifier import CAMNet
    from conta_core.models.deeplab import MSC, DeepLabV2
    from conta_core.models.irn import EdgeNet
    from conta_core.steps.cam import compute_cams_batch
    from conta_core.steps.random_walk import boundary_map

    cpu = torch.device("cpu")
    imgs, keys = fx.fixture_images(), fx.fixture_keys()
    cam_net = CAMNet(fx.NUM_FG, backbone="resnet50", frozen_stages=0)
    cam_net.load_state_dict(fx.fill_state_dict(cam_net.state_dict()))
    cam_net.eval()
    edge = EdgeNet("resnet50")
    edge.load_state_dict(fx.fill_state_dict(edge.state_dict()))
    edge.eval()

    def cams(resize):
        return lambda: [
            compute_cams_batch(cam_net, [im], [k], [1.0, 0.5, 1.5, 2.0], True, cpu, resize=resize)
            for im, k in zip(imgs, keys)
        ]

    def edges(pad):
        return lambda: [boundary_map(edge, im, cpu, pad) for im in imgs]

    def deeplab(style):
        net = MSC(DeepLabV2(fx.DEEPLAB_CLASSES, "resnet101", resnet_style=style), (0.75, 0.5)).eval()
        x = torch.from_numpy(
            np.ascontiguousarray(np.random.default_rng(0).normal(size=(1, 3, 160, 161)), dtype=np.float32)
        )

        def run():
            with torch.no_grad():
                net(x)

        return run

    rows = [
        ("make_cam (8 images)", "cam.resize", "pil_bicubic", cams("pil_bicubic"), "bilinear", cams("bilinear")),
        ("boundary map (8 images)", "random_walk.pad_size", "512", edges(512), "null", edges(None)),
        (
            "DeepLab-v2 R101 MSC forward (160x161)",
            "segmentation.resnet_style",
            "caffe",
            deeplab("caffe"),
            "torchvision",
            deeplab("torchvision"),
        ),
    ]
    records = []
    for step, key, ref_v, ref_fn, alt_v, alt_fn in rows:
        t_ref, t_alt = _median_time(ref_fn, args.repeat), _median_time(alt_fn, args.repeat)
        records.append(
            {
                "step": step,
                "key": key,
                "reference": ref_v,
                "reference_s": round(t_ref, 3),
                "alternative": alt_v,
                "alternative_s": round(t_alt, 3),
                "ratio": round(t_ref / t_alt, 2),
                "threads": args.threads,
                "repeat": args.repeat,
            }
        )
    print("| step | key | reference value: s | alternative value: s | reference / alternative |")
    print("| --- | --- | --- | --- | --- |")
    for r in records:
        print(
            f"| {r['step']} | `{r['key']}` | {r['reference']}: {r['reference_s']:.2f} | "
            f"{r['alternative']}: {r['alternative_s']:.2f} | {r['ratio']:.2f}x |"
        )
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    main()
