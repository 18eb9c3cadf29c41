#!/usr/bin/env python
"""Benchmark: CPU training levers for train_seg, the step that dominates a testbed round.

On study 2's testbed (studies/em3/testbed.yaml over config/config.yaml: DeepLab-v2 on a
ResNet-18 stand-in, output stride 8, 96 px crops, batch 8, one scale, 450 iterations) a
run-round costs about 7 job-minutes and train_seg about 3 of them (`conta cost` on a study
run). This benchmark asks what a change of the step's arithmetic buys and what it changes:

* eager: what the project runs (fp32, contiguous NCHW; conta_core.steps.segment._step);
* channels_last: model and batch in channels_last (same arithmetic, other kernels);
* bf16: the forward pass under torch.autocast("cpu", bfloat16) (oneDNN's bf16 kernels where
  the CPU has them: avx512_bf16 / amx_bf16, recorded from /proc/cpuinfo), the loss on the
  logits cast back to fp32, backward and SGD as usual;
* channels_last+bf16: both.

Every lever trains the same model (segment._build_model, --seed) on the same batches (the
production SegmentationDataset and shuffled loader over generated images with their GT masks
as labels) with the production step and the first iterations of the production poly schedule
(horizon segmentation.iterations), each in a fresh subprocess, the levers alternating over
--repeat rounds. Reported per lever: the median seconds of `_step` per iteration after
--warmup iterations (median over the repeats; data loading and start-up are not timed), the
speed-up over eager, and what changes: the absolute difference of the first iteration's loss
from eager's (the same weights and batch: the arithmetic alone), and the relative distance of
the parameters after the last iteration from eager's, ||w - w_eager|| / ||w_eager||, beside
how far the lever's training moved them from the start, ||w - w_0|| / ||w_0||, for scale.
eager's own repeats are bit-identical on one machine. A lever that is not bit-identical
changes a study's results: adopting one is a change of the testbed.

CLI: python benchmarks/bench_train_seg.py [--overlay studies/em3/testbed.yaml] [--iterations 30]
     [--warmup 3] [--repeat 2] [--levers eager,channels_last,bf16,channels_last+bf16]
     [--images 32] [--threads 2] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
LEVERS = ("eager", "channels_last", "bf16", "channels_last+bf16")


def _segmentation_cfg(overlay: str | None) -> dict:
    from conta_core.infra.config import deep_merge, load_yaml

    cfg = load_yaml(REPO / "config/config.yaml")
    if overlay:
        cfg = deep_merge(cfg, load_yaml(REPO / overlay))
    return {**cfg["segmentation"], "pretrained": None}


def child(args: argparse.Namespace) -> None:
    """One lever: train args.warmup + args.iterations steps, print one JSON line."""
    import time

    import torch

    torch.set_num_threads(args.threads)
    from conta_core.data.manifest import Manifest
    from conta_core.infra.training import loader_options, shuffled_loader
    from conta_core.steps import segment

    cfg_seg = _segmentation_cfg(args.overlay)
    manifest = Manifest.load(Path(args.data) / "manifest.json")
    ids = manifest.ids("train")[: args.images]
    labels = {i: manifest.mask_file(i) for i in ids}
    device = torch.device("cpu")
    total = args.warmup + args.iterations
    horizon = int(cfg_seg["iterations"])  # the production poly schedule's first `total` iterations
    model = segment._build_model(cfg_seg, manifest.num_classes, args.seed, device)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    channels_last = "channels_last" in args.lever
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = segment._build_optimizer(model, cfg_seg)
    dataset = segment._segmentation_dataset(manifest, ids, labels, cfg_seg, args.seed)
    loader, batches = shuffled_loader(dataset, int(cfg_seg["batch_size"]), loader_options(0, device, args.seed))
    if "bf16" in args.lever:  # the forward pass only; the loss on fp32 logits, backward and SGD as usual
        forward = model.forward

        def bf16_forward(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = forward(x)
            return [o.float() for o in out] if isinstance(out, list) else out.float()

        model.forward = bf16_forward
    losses, times, it = [], [], 0
    while it < total:
        for batch in batches(it // len(loader), 0):
            if it == total:
                break
            if channels_last:
                batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
            t0 = time.perf_counter()
            row = segment._step(
                batch,
                it,
                0,
                model=model,
                optimizer=optimizer,
                base_lr=float(cfg_seg["lr"]),
                iterations=horizon,
                power=float(cfg_seg["poly_power"]),
                device=device,
            )
            times.append(time.perf_counter() - t0)
            losses.append(row["loss"])
            it += 1
    params = {k: v.detach().float().contiguous() for k, v in model.named_parameters()}
    torch.save(params, args.weights)
    moved = _weights_distance(params, start)
    out = {"lever": args.lever, "s_per_it": statistics.median(times[args.warmup :]), "losses": losses, "moved": moved}
    print(json.dumps(out))


def _weights_distance(a: dict, b: dict) -> float:
    """||w_a - w_b|| / ||w_b|| over the parameters (name -> tensor) together."""
    import torch

    keys = sorted(b)
    diff = torch.cat([(a[k] - b[k]).flatten() for k in keys]).double().norm()
    return float(diff / torch.cat([b[k].flatten() for k in keys]).double().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--overlay", default="studies/em3/testbed.yaml", help="config overlay (repo-relative) or ''")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--levers", default=",".join(LEVERS))
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lever", default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    levers = args.levers.split(",")
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown or "eager" not in levers:
        sys.exit(f"--levers: unknown {unknown} or no eager (the reference); choose from {LEVERS}")
    from fixtures import make_dataset
    from harness import machine_info

    from conta_core.report.run_digest import cpuinfo_field

    cfg_seg = _segmentation_cfg(args.overlay)
    if args.images < int(cfg_seg["batch_size"]):
        sys.exit(f"--images {args.images}: need at least segmentation.batch_size = {cfg_seg['batch_size']} images")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "data", args.images, int(cfg_seg["crop_size"]))
        runs: dict[str, list[dict]] = {lv: [] for lv in levers}
        for r in range(args.repeat):
            for lv in levers:
                weights = Path(tmp) / f"{lv}.pth"
                cmd = [sys.executable, __file__, "--child", "--lever", lv, "--data", str(Path(tmp) / "data")]
                cmd += ["--weights", str(weights), "--overlay", args.overlay, "--seed", str(args.seed)]
                cmd += ["--iterations", str(args.iterations), "--warmup", str(args.warmup)]
                cmd += ["--images", str(args.images), "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if out.returncode:
                    sys.exit(f"lever {lv} failed:\n{out.stderr[-3000:]}")
                runs[lv].append(json.loads(out.stdout.strip().splitlines()[-1]))
        import torch

        ref_w = torch.load(Path(tmp) / "eager.pth", weights_only=True)
        ref = statistics.median(x["s_per_it"] for x in runs["eager"])
        print(
            f"train_seg, {args.overlay or 'config/config.yaml'}: crop {cfg_seg['crop_size']}, batch "
            f"{cfg_seg['batch_size']}, {cfg_seg['backbone']} OS{cfg_seg['output_stride']}, msc {cfg_seg['msc_scales']}; "
            f"{args.iterations} timed iterations after {args.warmup}, {args.repeat} repeats, {args.threads} threads"
        )
        print(
            "| lever | s / iteration | speed-up | first loss, abs diff | parameters after: distance to eager's "
            "| distance to the start |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        same = all(r["losses"] == runs["eager"][0]["losses"] for r in runs["eager"])
        records = []
        for lv in levers:
            s = statistics.median(x["s_per_it"] for x in runs[lv])
            loss_diff = abs(runs[lv][-1]["losses"][0] - runs["eager"][-1]["losses"][0])
            w_diff = _weights_distance(torch.load(Path(tmp) / f"{lv}.pth", weights_only=True), ref_w)
            moved = statistics.median(x["moved"] for x in runs[lv])
            print(f"| {lv} | {s:.3f} | {ref / s:.2f}x | {loss_diff:.2e} | {w_diff:.2e} | {moved:.2e} |")
            records.append(
                {
                    "bench": "train_seg_levers",
                    "lever": lv,
                    "s_per_it": s,
                    "s_per_it_repeats": [x["s_per_it"] for x in runs[lv]],
                    "speedup": ref / s,
                    "first_loss_abs_diff": loss_diff,
                    "weights_rel_distance": w_diff,
                    "moved_from_start": moved,
                    "iterations": args.iterations,
                    "repeat": args.repeat,
                    "threads": args.threads,
                    "overlay": args.overlay,
                    "eager_repeats_identical": same,
                    "cpu_bf16_flags": sorted(set(cpuinfo_field("flags").split()) & {"avx512_bf16", "amx_bf16"}),
                    **machine_info(),
                    "torch": torch.__version__,
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                }
            )
    print(f"eager's {args.repeat} repeats bit-identical (losses): {same}")
    if args.json:
        from records import append_jsonl

        append_jsonl(args.json, records)


if __name__ == "__main__":
    main()
