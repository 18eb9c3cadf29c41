#!/usr/bin/env python
"""Benchmark: this project beside the OFFICIAL IRNet code, same inputs and weights, side by side.

Two modes (the official code is not part of the project; check it out in a scratch folder,
as for tools/make_parity_goldens.py: `git clone https://github.com/jiwoon-ahn/irn /tmp/ref/irn`):

* steps (default): the three IRNet inference steps on N generated images of one size,
      python benchmarks/bench_reference.py --irn /tmp/ref/irn --size 96 --images 8
      python benchmarks/bench_reference.py --irn /tmp/ref/irn --size 375x500 --images 8   # VOC
  reference = IRNet's `step.make_cam._work`, `step.cam_to_ir_label._work`,
  `step.make_sem_seg_labels._work` as shipped (CPU shims of tools/make_parity_goldens.py:
  `.cuda()` no-ops, `imageio.imread` returns the generated image, labels from the recipe);
  project = `compute_cams_batch` (same-size images batched, as make_cams does) + `save_cam`,
  `cam_to_ir_label` + `save_label_png` (one process, like the reference's `_work`),
  `boundary_maps` + `pseudo_mask_from_cam` + `save_label_png`, with the reference conventions
  (cam.resize pil_bicubic, random_walk.pad_size 512, beta 10, exp_times 8, radius 5, IRNet's
  CRF constants). Each chain reads its own previous step's files.
* walk: the random walk alone on a random boundary map and random CAMs of a stride-4 grid,
      python benchmarks/bench_reference.py --irn /tmp/ref/irn --walk 94x125 120x160
  reference = IRNet's `misc.indexing.propagate_to_edge` (dense N x N transition matrix
  squared exp_times times); project = `conta_core.steps.random_walk.random_walk` (sparse, 2^exp_times
  matrix-vector products). `--walk-project-only` grids run only the project (the sizes where
  the dense matrix no longer fits), for the memory scaling.

Weights: the fixed-seed recipe of tests/parity_fixtures.py (ResNet-50 CAM and edge networks),
loaded into both codes. Images: the parity-fixture generator at the requested size (seed 7).
Every (code, step) runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own;
`rss_before_mib` is the RSS after imports, model and inputs, just before the timed call, so
`peak - before` is the step's own working memory. Time: one timed call (wall, perf_counter)
per run, after the models are built, file I/O of the step included for both codes; with
--repeat R the two codes alternate R times and the median is reported (on this VM the same
call varies by up to 1.5x between processes, so single runs of a close pair say little). After the steps,
the outputs of the two codes are compared (CAM max abs difference, IR-label and pseudo-mask
pixel agreement), so a speed-up is only reported with its agreement.

Output: a markdown table on stdout, one JSON object per row with --json FILE (appended).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from records import RESULT_TAG, append_jsonl, parse_size, peak_mib, rss_mib  # noqa: E402

STEPS = ("make_cam", "cam_to_ir_label", "make_sem_seg_labels")
CAM_SCALES = (1.0, 0.5, 1.5, 2.0)
RW_CFG = {"radius": 5, "beta": 10, "exp_times": 8, "bg_threshold": 0.25, "pad_size": 512}
IR_THRESHOLDS = (0.30, 0.05)
WALK_SEED = 0


def _inputs(size: tuple[int, int], n: int):
    import parity_fixtures as fx

    return fx.fixture_images(sizes=[size] * n), fx.fixture_keys(n=n)


# ----------------------------------------------------------------------------- workers


def _reference_step(step: str, work: Path, size: tuple[int, int], n: int):
    """Prepare one IRNet step; returns the call to time (cwd and sys.path: the IRNet checkout)."""
    import types

    import make_parity_goldens as ref

    imgs, keys = _inputs(size, n)
    ref.install_shims(dict(zip(ref.voc_ids(n), imgs)))
    out = work / "reference"
    args = types.SimpleNamespace(
        num_workers=0,
        cam_out_dir=str(out / "cam"),
        ir_label_out_dir=str(out / "ir"),
        sem_seg_out_dir=str(out / "sem"),
        conf_fg_thres=IR_THRESHOLDS[0],
        conf_bg_thres=IR_THRESHOLDS[1],
        beta=RW_CFG["beta"],
        exp_times=RW_CFG["exp_times"],
        sem_seg_bg_thres=RW_CFG["bg_threshold"],
    )
    for d in (args.cam_out_dir, args.ir_label_out_dir, args.sem_seg_out_dir):
        os.makedirs(d, exist_ok=True)
    if step == "make_cam":
        import step.make_cam as s_cam

        model, ds = ref.reference_cam_model(), ref.msf_dataset(CAM_SCALES, keys)
        return lambda: s_cam._work(0, model, [ds], args)
    if step == "cam_to_ir_label":
        import step.cam_to_ir_label as s_ir

        ds = ref.image_dataset(n)
        return lambda: s_ir._work(0, [ds], args)
    import step.make_sem_seg_labels as s_rw

    s_rw.DataLoader = ref._scalar_size_loader(s_rw.DataLoader)
    edge, ds = ref.reference_edge_model(), ref.msf_dataset((1.0,), keys)
    return lambda: s_rw._work(0, edge, [ds], args)


def _project_step(step: str, work: Path, size: tuple[int, int], n: int):
    """Prepare one project step (the reference conventions); returns the call to time."""
    import make_parity_goldens as ref
    import torch

    from conta_core.infra.config import DEFAULT_CONFIG, load_yaml
    from conta_core.infra.fileio import load_cam, save_cam, save_label_png

    cpu = torch.device("cpu")
    imgs, keys = _inputs(size, n)
    ids = ref.voc_ids(n)
    out = work / "project"
    for d in ("cam", "ir", "sem"):
        (out / d).mkdir(parents=True, exist_ok=True)
    if step == "make_cam":
        import parity_fixtures as fx

        from conta_core.models.classifier import CAMNet
        from conta_core.steps.cam import compute_cams_batch, size_batches

        net = CAMNet(fx.NUM_FG, backbone="resnet50", frozen_stages=0)
        net.load_state_dict(fx.fill_state_dict(net.state_dict()))
        net.eval()

        def run():
            for batch in size_batches([im.shape for im in imgs], list(CAM_SCALES), True):
                res = compute_cams_batch(
                    net,
                    [imgs[i] for i in batch],
                    [keys[i] for i in batch],
                    list(CAM_SCALES),
                    True,
                    cpu,
                    resize="pil_bicubic",
                )
                for i, (cam, high_res) in zip(batch, res):
                    save_cam(out / "cam" / f"{ids[i]}.npz", keys[i], cam, high_res)

        return run
    if step == "cam_to_ir_label":
        from conta_core.steps.ir_label import cam_to_ir_label

        crf = load_yaml(DEFAULT_CONFIG)["ir_label"]["crf"]

        def run():
            for name, img in zip(ids, imgs):
                cam = load_cam(out / "cam" / f"{name}.npz")
                label = cam_to_ir_label(img, cam["keys"], cam["high_res"], *IR_THRESHOLDS, crf)
                save_label_png(out / "ir" / f"{name}.png", label, palette=False)

        return run
    import parity_fixtures as fx

    from conta_core.models.irn import EdgeNet
    from conta_core.steps.random_walk import boundary_maps, pseudo_mask_from_cam

    edge = EdgeNet("resnet50")
    edge.load_state_dict(fx.fill_state_dict(edge.state_dict()))
    edge.eval()

    def run():
        for name, img in zip(ids, imgs):  # equal sizes: one image per pass, as the reference
            (boundary,) = boundary_maps(edge, [img], cpu, RW_CFG["pad_size"])
            mask = pseudo_mask_from_cam(img, load_cam(out / "cam" / f"{name}.npz"), edge, RW_CFG, cpu, boundary)
            save_label_png(out / "sem" / f"{name}.png", mask, palette=False)

    return run


def _walk_inputs(grid: tuple[int, int]):
    """Boundary float32[h, w] in (0, 1) and 2 CAM planes float32[2, h, w], fixed seed, smooth."""
    rng = np.random.default_rng(WALK_SEED)
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    boundary = 1.0 / (1.0 + np.exp(-8.0 * (np.sin(9 * yy + 3 * np.cos(7 * xx)) - 0.6)))
    boundary = np.clip(boundary + rng.uniform(0, 0.05, (h, w)), 0, 1).astype(np.float32)
    cams = np.stack(
        [np.exp(-((yy - 0.3) ** 2 + (xx - 0.4) ** 2) * 20), np.exp(-((yy - 0.6) ** 2 + (xx - 0.7) ** 2) * 15)]
    )
    return boundary, (cams * rng.uniform(0.8, 1.0, cams.shape)).astype(np.float32)


def _walk_step(code: str, work: Path, grid: tuple[int, int]):
    import torch

    boundary, cams = _walk_inputs(grid)
    out = work / f"walk_{code}_{grid[0]}x{grid[1]}.npy"
    if code == "reference":
        import make_parity_goldens as ref

        ref.install_shims({})  # `.cuda()` no-ops
        from misc import indexing

        def run():
            with torch.no_grad():
                rw = indexing.propagate_to_edge(
                    torch.from_numpy(cams),
                    torch.from_numpy(boundary)[None],
                    beta=RW_CFG["beta"],
                    exp_times=RW_CFG["exp_times"],
                    radius=RW_CFG["radius"],
                )
            np.save(out, rw[:, 0].numpy())

        return run
    from conta_core.steps.random_walk import random_walk

    def run():
        with torch.inference_mode():
            rw = random_walk(
                torch.from_numpy(cams),
                torch.from_numpy(boundary),
                RW_CFG["beta"],
                RW_CFG["exp_times"],
                RW_CFG["radius"],
            )
        np.save(out, rw.numpy())

    return run


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.code == "reference":
        os.chdir(args.irn)
        sys.path.insert(0, str(args.irn))
    work = args.work.resolve()
    if args.step == "walk":
        fn = _walk_step(args.code, work, args.grid)
    elif args.code == "reference":
        fn = _reference_step(args.step, work, args.size, args.images)
    else:
        fn = _project_step(args.step, work, args.size, args.images)
    before = rss_mib()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    print(
        RESULT_TAG
        + json.dumps(
            {"seconds": round(seconds, 3), "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak_mib(), 1)}
        ),
        flush=True,
    )


# ----------------------------------------------------------------------------- orchestration


def _run_worker(base: list[str], code: str, step: str, extra: list[str]) -> dict:
    cmd = [*base, "--worker", "--code", code, "--step", step, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench_reference: {code} {step} failed (exit {proc.returncode}); command: {' '.join(cmd)}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    return json.loads(lines[-1][len(RESULT_TAG) :])


def _agreement(work: Path, n: int) -> dict[str, str]:
    """How the two codes' outputs agree, per step."""
    import make_parity_goldens as ref

    from conta_core.infra.fileio import load_cam, read_irnet_cam

    ids = ref.voc_ids(n)
    cam_diff = 0.0
    for name in ids:
        a, b = (
            load_cam(work / "project" / "cam" / f"{name}.npz"),
            read_irnet_cam(work / "reference" / "cam" / f"{name}.npy"),
        )
        cam_diff = max(
            cam_diff,
            float(np.abs(a["cam"] - np.asarray(b["cam"])).max()),
            float(np.abs(a["high_res"] - np.asarray(b["high_res"])).max()),
        )
    out = {"make_cam": f"max abs diff {cam_diff:.1e}"}
    for step, folder in (("cam_to_ir_label", "ir"), ("make_sem_seg_labels", "sem")):
        same = total = 0
        for name in ids:
            a = ref.read_png(work / "project" / folder / f"{name}.png")
            b = ref.read_png(work / "reference" / folder / f"{name}.png")
            same, total = same + int((a == b).sum()), total + a.size
        out[step] = f"{100.0 * same / total:.3f} % of pixels equal"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--irn", type=Path, required=True, help="checkout of jiwoon-ahn/irn")
    p.add_argument("--size", type=parse_size, default=(96, 96), help="image size H or HxW (steps mode)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="runs per code and step, alternating; the median is reported")
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    p.add_argument(
        "--codes",
        default="reference,project",
        choices=["reference,project", "project", "reference"],
        help="run only one side, e.g. the project again after a change (--keep the folder with the "
        "other side's outputs, for the agreement)",
    )
    p.add_argument("--walk", type=parse_size, nargs="*", default=None, help="walk mode: stride-4 grids HxW")
    p.add_argument("--walk-project-only", type=parse_size, nargs="*", default=[], help="grids for the project only")
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--code", choices=["reference", "project"], help=argparse.SUPPRESS)
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--grid", type=parse_size, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.irn = args.irn.resolve()
    if args.worker:
        worker(args)
        return
    if not (args.irn / "step" / "make_sem_seg_labels.py").is_file():
        raise SystemExit(f"--irn {args.irn}: not a checkout of jiwoon-ahn/irn (no step/make_sem_seg_labels.py)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_reference_"))
    work.mkdir(parents=True, exist_ok=True)
    base = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--irn",
        str(args.irn),
        "--threads",
        str(args.threads),
        "--work",
        str(work.resolve()),
    ]
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "load_avg_start": os.getloadavg()[0],
    }
    records = []
    if args.walk is not None:
        jobs = [(code, g) for g in args.walk for code in ("reference", "project")]
        jobs += [("project", g) for g in args.walk_project_only]
        for code, g in jobs:
            r = _run_worker(base, code, "walk", ["--grid", f"{g[0]}x{g[1]}"])
            records.append({**meta, "mode": "walk", "code": code, "grid": f"{g[0]}x{g[1]}", "nodes": g[0] * g[1], **r})
            print(f"{code} walk {g[0]}x{g[1]}: {r}", flush=True)
        for g in args.walk:
            a = np.load(work / f"walk_project_{g[0]}x{g[1]}.npy")
            b = np.load(work / f"walk_reference_{g[0]}x{g[1]}.npy")
            rel = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
            for r in records:
                if r["grid"] == f"{g[0]}x{g[1]}":
                    r["max_rel_diff"] = rel
        print("| grid (stride 4) | nodes N | code | s | peak RSS MiB | peak - before MiB | max rel. diff |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in records:
            diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "-"
            print(
                f"| {r['grid']} | {r['nodes']} | {r['code']} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | "
                f"{r['peak_rss_mib'] - r['rss_before_mib']:.0f} | {diff} |"
            )
    else:
        size = f"{args.size[0]}x{args.size[1]}"
        extra = ["--size", size, "--images", str(args.images)]
        steps = [s for s in args.steps.split(",") if s]
        for step in steps:
            if step not in STEPS:
                raise SystemExit(f"--steps: unknown step {step!r} (choose from {', '.join(STEPS)})")
            codes = args.codes.split(",")
            runs: dict[str, list[dict]] = {c: [] for c in codes}
            for rep in range(args.repeat):  # alternate the order: drift on a shared VM hits both alike
                for code in codes if rep % 2 == 0 else codes[::-1]:
                    runs[code].append(_run_worker(base, code, step, extra))
                    print(f"{code} {step} run {rep + 1}: {runs[code][-1]}", flush=True)
            for code, rs in runs.items():
                r = {
                    "seconds": statistics.median(x["seconds"] for x in rs),
                    "runs_s": [x["seconds"] for x in rs],
                    "rss_before_mib": min(x["rss_before_mib"] for x in rs),
                    "peak_rss_mib": max(x["peak_rss_mib"] for x in rs),
                }
                records.append(
                    {
                        **meta,
                        "mode": "steps",
                        "code": code,
                        "step": step,
                        "size": size,
                        "images": args.images,
                        "repeat": args.repeat,
                        **r,
                    }
                )
        agree = _agreement(work, args.images) if set(steps) == set(STEPS) else {}
        if args.codes != "reference,project":
            print(f"(--codes {args.codes}: no side-by-side table; agreement with the files in {work}: {agree})")
            steps = []
        print(
            "| step | size | images | reference s | project s | speed-up | reference peak RSS MiB (step) | "
            "project peak RSS MiB (step) | agreement |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for step in steps:
            ref_r, our_r = (
                next(r for r in records if r["step"] == step and r["code"] == c) for c in ("reference", "project")
            )
            for r in (ref_r, our_r):
                r["agreement"] = agree.get(step, "")
            print(
                f"| {step} | {size} | {args.images} | {ref_r['seconds']:.2f} | {our_r['seconds']:.2f} | "
                f"**{ref_r['seconds'] / our_r['seconds']:.2f}x** | {ref_r['peak_rss_mib']:.0f} "
                f"({ref_r['peak_rss_mib'] - ref_r['rss_before_mib']:+.0f}) | {our_r['peak_rss_mib']:.0f} "
                f"({our_r['peak_rss_mib'] - our_r['rss_before_mib']:+.0f}) | {agree.get(step, '')} |"
            )
    if args.json:
        append_jsonl(args.json, records)


if __name__ == "__main__":
    main()
