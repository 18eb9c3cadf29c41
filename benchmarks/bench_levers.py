#!/usr/bin/env python
"""Benchmark: CPU inference levers for the CNN steps, each measured alone against eager fp32.

The two CNN inference steps at the size users run (VOC, 375 x 500 by default):
* make_cam: `compute_cams_batch` with the ResNet-50 CAM network, scales 1/0.5/1.5/2 + flip
  (IRNet's make_cam), one image per call;
* infer_seg: `predict_batch` with DeepLab-v2 ResNet-101 MSC (eval: max over 1/0.75/0.5),
  one input scale, no flip (config/voc12.yaml, deeplab-pytorch's test), one image per call.
Weights: the fixed-seed recipe of tests/parity_fixtures.py; images: its generator.

Levers (each applied to the backbone only, in a fresh subprocess, so they do not interact):
* eager: what the project runs on the CPU (fp32, contiguous NCHW);
* bn_fold: every eval BatchNorm folded into the convolution before it
  (conta_core.infra.device.fold_batchnorm, the one the production path uses);
* channels_last: model and input in channels_last;
* mkldnn: torch.utils.mkldnn.to_mkldnn (oneDNN weight layout, prepacked once); the stage
  input is converted to an MKLDNN tensor and the stage outputs back;
* jit_freeze: torch.jit.trace + freeze + optimize_for_inference of the backbone (conv-BN
  folding, oneDNN prepacking), traced on the first input;
* compile: torch.compile (inductor, freezing on), static shapes: one compilation per input
  shape, its time reported separately (`compile_s`, the first pass of each new shape);
* bn_fold+channels_last: both;
* production: what the project now runs on the CPU (device.inference_model: bn_fold +
  channels_last for inputs of >= 256 x 256 px, the model as loaded below).
Every lever but `production` runs with $CONTA_FAST_CPU=0.
Reported per lever: median seconds per image over --images images after one warm-up image
(the warm-up also triggers compile's compilations), speed-up over eager, and the largest
absolute difference of the step's outputs from eager (CAM maps in [0, 1]; segmentation
class probabilities); and the arithmetic rate, GFLOP/s = the step's convolution and matmul
FLOPs per image (torch.utils.flop_counter, counted once on the eager network: 2 x MACs) /
seconds per image, beside `conv_peak`, the best rate this machine reaches on single fp32
channels_last convolutions of ResNet shapes (CONV_PEAK_SHAPES, the same threads). A lever
cannot take a step past conv_peak without doing fewer FLOPs or lowering the precision.

CLI: python benchmarks/bench_levers.py [--step make_cam|infer_seg] [--size 375x500]
     [--images 3] [--levers eager,bn_fold,...] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from records import RESULT_TAG, append_jsonl, parse_size  # noqa: E402

LEVERS = ("eager", "bn_fold", "channels_last", "mkldnn", "jit_freeze", "compile", "bn_fold+channels_last", "production")
CONV_PEAK_SHAPES = [  # (channels, kernel, spatial): ResNet bottleneck convolutions, batch 1
    (256, 1, 64),
    (1024, 1, 64),
    (2048, 1, 64),
    (256, 3, 64),
    (512, 3, 64),
    (512, 3, 32),
]
CAM_SCALES = [1.0, 0.5, 1.5, 2.0]
SEG_SCALES = [1.0]  # config/voc12.yaml segmentation.infer: one MSC pass (1.0, 0.75, 0.5, max), no flip


class _Mkldnn:
    """A Sequential stage run on MKLDNN tensors: dense in, dense out."""

    def __init__(self, stage):
        import torch.utils.mkldnn as mk

        self.stage = mk.to_mkldnn(stage)

    def __call__(self, x):
        return self.stage(x.to_mkldnn()).to_dense()


def apply_lever(lever: str, stages, example):
    """Transform the backbone stages (nn.ModuleList, eval) in place; returns the stages.
    "a+b" applies a, then b (e.g. bn_fold+channels_last)."""
    import torch

    if "+" in lever:
        for part in lever.split("+"):
            stages = apply_lever(part, stages, example)
        return stages
    if lever in ("eager", "production"):
        return stages
    if lever == "bn_fold":
        from conta_core.infra.device import fold_batchnorm

        return fold_batchnorm(stages)
    if lever == "channels_last":  # the input: compute_cams_batch / predict_batch feed NCHW; the first conv converts
        return stages.to(memory_format=torch.channels_last)
    if lever == "mkldnn":
        for i in range(len(stages)):
            stages[i] = _Wrap(_Mkldnn(stages[i]))
        return stages
    if lever == "jit_freeze":
        x = example
        for i in range(len(stages)):
            with torch.no_grad():
                traced = torch.jit.trace(stages[i], x)
                y = stages[i](x)
            stages[i] = _Wrap(torch.jit.optimize_for_inference(torch.jit.freeze(traced)))
            x = y
        return stages
    if lever == "compile":
        import torch._inductor.config as ind

        ind.freezing = True
        for i in range(len(stages)):
            stages[i] = _Wrap(torch.compile(stages[i], dynamic=False))
        return stages
    raise SystemExit(f"unknown lever {lever!r} (one of {', '.join(LEVERS)})")


def _Wrap(fn):
    import torch.nn as nn

    class Wrapped(nn.Module):
        def forward(self, x):
            return fn(x)

    return Wrapped()


def worker(args) -> None:
    import os

    import torch

    # the project's own CPU fast path (device.inference_model) is itself the lever "production";
    # every other lever starts from the model as loaded, in NCHW
    os.environ["CONTA_FAST_CPU"] = "1" if args.lever == "production" else "0"
    torch.set_num_threads(args.threads)
    if args.lever == "conv_peak":  # the machine's rate, no network or images
        print(RESULT_TAG + json.dumps({"gflops": conv_peak_gflops()}), flush=True)
        return

    import parity_fixtures as fx

    cpu = torch.device("cpu")
    imgs = fx.fixture_images(sizes=[args.size] * (args.images + 1))
    keys = fx.fixture_keys(n=args.images + 1)
    if args.step == "make_cam":
        from conta_core.models.classifier import CAMNet
        from conta_core.steps.cam import compute_cams_batch

        net = CAMNet(fx.NUM_FG, backbone="resnet50", frozen_stages=0)
        net.load_state_dict(fx.fill_state_dict(net.state_dict()))
        net.eval()
        stages = net.backbone.stages
        example = torch.zeros(2, 3, *args.size)

        def run(i):
            ((cam, high_res),) = compute_cams_batch(
                net, [imgs[i]], [keys[i]], CAM_SCALES, True, cpu, resize="pil_bicubic"
            )
            return high_res
    else:
        from conta_core.models.deeplab import MSC, DeepLabV2
        from conta_core.steps.segment import predict_batch

        base = DeepLabV2(fx.DEEPLAB_CLASSES, "resnet101", resnet_style="caffe")
        base.load_state_dict(fx.fill_state_dict(base.state_dict()))
        net = MSC(base, (0.75, 0.5)).eval()
        stages = base.backbone.stages
        example = torch.zeros(2, 3, *args.size)

        def run(i):
            return predict_batch(net, [imgs[i]], SEG_SCALES, False, cpu, norm="caffe")[0]

    if "channels_last" in args.lever.split("+"):
        net.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    flops = None
    if args.lever == "eager":  # the same FLOPs under every lever (folded BatchNorm is not counted)
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            run(0)
        flops = counter.get_total_flops()
    t0 = time.perf_counter()
    apply_lever(args.lever, stages, example)
    prep_s = time.perf_counter() - t0
    with torch.inference_mode():
        t0 = time.perf_counter()
        run(0)  # warm-up (and compilation)
        warm_s = time.perf_counter() - t0
        times, outs = [], []
        for i in range(1, args.images + 1):
            t0 = time.perf_counter()
            outs.append(run(i))
            times.append(time.perf_counter() - t0)
    np.savez(args.out, *outs)
    print(
        RESULT_TAG
        + json.dumps(
            {
                "s_per_image": round(statistics.median(times), 3),
                "runs_s": [round(t, 3) for t in times],
                "prepare_s": round(prep_s, 2),
                "first_image_s": round(warm_s, 2),
                **({"gflop_per_image": round(flops / 1e9, 2)} if flops else {}),
            }
        ),
        flush=True,
    )


def conv_peak_gflops(repeat: int = 10) -> float:
    """The best fp32 rate (GFLOP/s) of one channels_last convolution over CONV_PEAK_SHAPES."""
    import torch
    import torch.nn.functional as F

    best = 0.0
    with torch.inference_mode():
        for c, k, hw in CONV_PEAK_SHAPES:
            x = torch.randn(1, c, hw, hw).contiguous(memory_format=torch.channels_last)
            w = torch.randn(c, c, k, k).contiguous(memory_format=torch.channels_last)
            F.conv2d(x, w, padding=k // 2)
            t0 = time.perf_counter()
            for _ in range(repeat):
                F.conv2d(x, w, padding=k // 2)
            best = max(best, 2 * c * hw * hw * c * k * k * repeat / (time.perf_counter() - t0) / 1e9)
    return round(best, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step", choices=["make_cam", "infer_seg"], default="make_cam")
    p.add_argument("--size", type=parse_size, default=(375, 500))
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--levers", default=",".join(LEVERS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--lever", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.lever:
        worker(args)
        return
    work = Path(tempfile.mkdtemp(prefix="bench_levers_"))
    rows = []
    for lever in args.levers.split(",") + ["conv_peak"]:
        out = work / f"{lever}.npz"
        cmd = [
            sys.executable,
            __file__,
            "--step",
            args.step,
            "--size",
            f"{args.size[0]}x{args.size[1]}",
            "--images",
            str(args.images),
            "--threads",
            str(args.threads),
            "--lever",
            lever,
            "--out",
            str(out),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            rows.append({"lever": lever, "error": " / ".join(tail)})
            print(f"{lever}: failed: {rows[-1]['error']}", flush=True)
            continue
        res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)][-1][len(RESULT_TAG) :])
        rows.append({"lever": lever, **res})
        print(f"{lever}: {res}", flush=True)
    eager = next((r for r in rows if r["lever"] == "eager" and "error" not in r), None)
    ref = dict(np.load(work / "eager.npz")) if eager else None
    peak = next((r["gflops"] for r in rows if r["lever"] == "conv_peak" and "error" not in r), None)
    gflop = eager.get("gflop_per_image") if eager else None
    print(
        f"\n{args.step} at {args.size[0]}x{args.size[1]}, {args.images} images after 1 warm-up, {args.threads} threads;"
        f" {gflop} GFLOP per image; conv_peak {peak} GFLOP/s"
    )
    print(
        "| lever | s / image | speed-up vs eager | max abs diff vs eager | first image s (compile) | GFLOP/s | % of conv_peak |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        r.update({"step": args.step, "size": f"{args.size[0]}x{args.size[1]}", "threads": args.threads})
        if "error" in r:
            print(f"| {r['lever']} | failed: {r['error'][:80]} | | | | | |")
            continue
        if r["lever"] == "conv_peak":
            continue
        if ref is not None:
            got = dict(np.load(work / f"{r['lever']}.npz"))
            r["max_abs_diff"] = float(max(np.abs(got[k] - ref[k]).max() for k in ref))
            r["speedup"] = round(eager["s_per_image"] / r["s_per_image"], 2)
        rate = pct = ""
        if gflop:
            r["gflops"] = round(gflop / r["s_per_image"], 1)
            rate = f"{r['gflops']:.0f}"
            if peak:
                r["pct_of_conv_peak"] = round(100 * r["gflops"] / peak, 1)
                pct = f"{r['pct_of_conv_peak']:.0f} %"
        print(
            f"| {r['lever']} | {r['s_per_image']:.2f} | {r.get('speedup', float('nan')):.2f}x | "
            f"{r.get('max_abs_diff', float('nan')):.1e} | {r['first_image_s']:.1f} | {rate} | {pct} |"
        )
    if args.json:
        append_jsonl(args.json, rows)


if __name__ == "__main__":
    main()
