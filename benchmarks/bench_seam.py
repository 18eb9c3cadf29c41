#!/usr/bin/env python
"""Benchmark: method seam's per-image CAM and affinity walk beside the OFFICIAL SEAM code.

The official code is not part of the project; check it out in a scratch folder, as for
tools/make_seam_goldens.py (`git clone https://github.com/YudeWang/SEAM /tmp/ref/seam`, 3212261):

    python benchmarks/bench_seam.py --seam /tmp/ref/seam --size 64x80 --images 2 --repeat 1   # smoke
    python benchmarks/bench_seam.py --seam /tmp/ref/seam --size 375x500 --images 2 --repeat 1  # VOC

Two steps, each on N generated images of one size (tests/parity_fixtures.py `fixture_images`,
seed 7; classes `fixture_keys`) and the full-width ResNet-38 networks with the recipe weights
(`fill_state_dict` of the official networks' state_dicts; the project's networks have the same
key names, so the same values):

* cam: reference = infer_SEAM.py as shipped with --out_cam only (no CRF, no cam_pred): scales
  0.5/1/1.5/2 + flips, normalisation, one .npy per image; project = `make_seam_cams` (the
  workflow's function: load_seam, load_image, compute_seam_cam at the same scales and flip,
  the stride-4 copy and save_cam).
* walk: reference = infer_aff.py as shipped (beta 8, logt 6, alpha 6); project =
  `make_seam_pseudo_masks` (load_affinity, load_cam, walk_labels, save_label_png). Both walk
  the same CAMs: the recipe's `fixture_cams` (smooth blobs with background, as in
  tools/make_seam_goldens.py), written in each code's own CAM format before the clock starts.

The official scripts run through tools/make_seam_goldens.py's `install_shims` / `run_script`
(its docstring lists the CPU shims: `.cuda()` no-ops, one "GPU", DataLoader num_workers 0, the
labels from the fixtures), with the checkout as working directory; --num_workers 1 (infer_SEAM's
BatchThreader: one thread). Every (code, step) runs in a fresh subprocess, so its peak RSS
(ru_maxrss) is its own; `rss_before_mib` is the RSS just before the timed call. Time: one
timed call per run (wall, perf_counter) of the whole script / function, model construction and
weight loading and file I/O included for both codes; with --repeat R the codes alternate and
the median is reported. Agreement: CAM max abs difference (project high_res vs infer_SEAM's
maps) and pseudo-mask pixel agreement, so a speed-up is only reported with its agreement.

Output: a markdown table on stdout; --json FILE appends one record per (code, step) with the
machine, load average (start and end), date, command and commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
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

STEPS = ("cam", "walk")
CAM_SCALES = [0.5, 1.0, 1.5, 2.0]  # infer_SEAM's, in its order (the sum's rounding)
WALK = {"beta": 8, "logt": 6, "alpha": 6}  # infer_aff's defaults
NUM_FG = 20


def _inputs(size: tuple[int, int], n: int):
    """(ids, images uint8[H, W, 3], keys int64[K] 0-based, fixture CAMs float32[K, H, W])."""
    import make_seam_goldens as ref
    import parity_fixtures as fx

    keys = fx.fixture_keys(n=n)
    return ref.names("2007", n), fx.fixture_images(sizes=[size] * n), keys, fx.fixture_cams([size] * n, keys)


# ----------------------------------------------------------------------------- workers


def _reference_step(step: str, out: Path, size: tuple[int, int], n: int):
    """Prepare one official script run (cwd and sys.path: the SEAM checkout); returns the call to time
    and the call that stores its outputs (untimed) as out/<step>.npz."""
    import make_seam_goldens as ref
    import parity_fixtures as fx
    import torch

    ids, imgs, keys, cams = _inputs(size, n)
    ref.write_voc(out / "VOC2012", dict(zip(ids, imgs)))
    ref.install_shims(ref.SAVED, dict(zip(ids, keys)))
    common = {"infer_list": ref.write_list(out / "list.txt", ids), "voc12_root": str(out / "VOC2012")}
    if step == "cam":
        from network.resnet38_SEAM import Net

        torch.save(fx.fill_state_dict(Net().state_dict()), out / "seam.pth")
        (out / "cam").mkdir()
        opts = {"weights": str(out / "seam.pth"), "num_workers": "1", "out_cam": str(out / "cam"), **common}

        def store():
            arrays = {}
            for name, k in zip(ids, keys):
                cam_dict = ref.SAVED[str(out / "cam" / f"{name}.npy")]
                assert sorted(cam_dict) == list(k), (sorted(cam_dict), k)
                arrays[name] = np.stack([cam_dict[int(c)] for c in k]).astype(np.float32)
            np.savez(out / "cam.npz", **arrays)

        return (lambda: ref.run_script("infer_SEAM.py", opts)), store
    from network.resnet38_aff import Net

    torch.save(fx.fill_state_dict(Net().state_dict()), out / "aff.pth")
    for d in ("affcam", "rw"):
        (out / d).mkdir()
    for name, k, c in zip(ids, keys, cams):
        np.save(out / "affcam" / f"{name}.npy", {int(i): m for i, m in zip(k, c)})  # infer_aff's input format
    opts = {
        "weights": str(out / "aff.pth"),
        "num_workers": "0",
        "cam_dir": str(out / "affcam"),
        "out_rw": str(out / "rw"),
        **{k: str(v) for k, v in WALK.items()},
        **common,
    }

    def store():
        np.savez(
            out / "walk.npz", **{name: ref.SAVED[str(out / "rw" / f"{name}.png")].astype(np.uint8) for name in ids}
        )

    return (lambda: ref.run_script("infer_aff.py", opts)), store


def _project_step(step: str, out: Path, size: tuple[int, int], n: int):
    """Prepare one project function call (inputs and checkpoints written first); returns the call to
    time and the call that stores its outputs (untimed) as out/<step>.npz."""
    import parity_fixtures as fx
    import torch
    import torch.nn.functional as F

    from conta_core.data.manifest import Manifest
    from conta_core.infra.checkpoint import save_model
    from conta_core.infra.fileio import load_cam, save_cam
    from conta_core.models.affinity import AffinityNet
    from conta_core.models.seam import SEAMNet
    from conta_core.steps.seam import make_seam_cams, make_seam_pseudo_masks

    cpu = torch.device("cpu")
    ids, imgs, keys, cams = _inputs(size, n)
    (out / "images").mkdir()
    for name, img in zip(ids, imgs):
        from PIL import Image

        Image.fromarray(img).save(out / "images" / f"{name}.png")
    manifest = Manifest(
        name="folder",
        root=out,
        class_names=["background", *(f"class{i + 1}" for i in range(NUM_FG))],
        splits={"train": list(ids)},
        labels={name: [int(c) + 1 for c in k] for name, k in zip(ids, keys)},
        images={name: f"images/{name}.png" for name in ids},
    )
    if step == "cam":
        with torch.device("meta"):
            shapes = SEAMNet(1.0, NUM_FG + 1).state_dict()
        state = fx.fill_state_dict({k: torch.empty(v.shape, dtype=v.dtype) for k, v in shapes.items()})
        save_model(out / "seam.pt", "seam", state, {"seam": {"width": 1.0}, "context": None, "num_fg": NUM_FG})
        cfg = {"cam_scales": CAM_SCALES, "cam_flip": True}

        def run():
            make_seam_cams(manifest, ids, out / "seam.pt", out / "cam", cfg, cpu)

        def store():
            np.savez(out / "cam.npz", **{name: load_cam(out / "cam" / f"{name}.npz")["high_res"] for name in ids})

        return run, store
    with torch.device("meta"):
        shapes = AffinityNet(1.0, 5).state_dict()
    state = fx.fill_state_dict({k: torch.empty(v.shape, dtype=v.dtype) for k, v in shapes.items()})
    save_model(out / "aff.pt", "affinity", state, {"affinity": {"width": 1.0, "radius": 5}})
    (out / "cam").mkdir()
    cam_files = {}
    for name, k, c in zip(ids, keys, cams):
        strided = (-(-c.shape[1] // 4), -(-c.shape[2] // 4))
        small = F.interpolate(torch.from_numpy(c)[None], strided, mode="bilinear", align_corners=False)[0]
        cam_files[name] = out / "cam" / f"{name}.npz"
        save_cam(cam_files[name], k, small.numpy(), c)

    def run():
        make_seam_pseudo_masks(manifest, ids, cam_files, out / "aff.pt", out / "rw", WALK, cpu)

    def store():
        from PIL import Image

        np.savez(out / "walk.npz", **{name: np.array(Image.open(out / "rw" / f"{name}.png")) for name in ids})

    return run, store


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    out = args.work.resolve() / f"{args.code}_{args.step}_{args.run}"
    out.mkdir(parents=True)
    if args.code == "reference":
        os.chdir(args.seam)
        sys.path.insert(0, str(args.seam))
        fn, store = _reference_step(args.step, out, args.size, args.images)
    else:
        fn, store = _project_step(args.step, out, args.size, args.images)
    before = rss_mib()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = peak_mib()
    store()
    result = {"seconds": round(seconds, 3), "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1)}
    print(RESULT_TAG + json.dumps({**result, "out": str(out / f"{args.step}.npz")}), flush=True)


# ----------------------------------------------------------------------------- orchestration


def _run_worker(base: list[str], code: str, step: str, run: int) -> dict:
    cmd = [*base, "--worker", "--code", code, "--step", step, "--run", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"bench_seam: {code} {step} failed (exit {proc.returncode}); command: {shlex.join(cmd)}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    return json.loads(lines[-1][len(RESULT_TAG) :])


def _agreement(step: str, ref_file: str, our_file: str) -> tuple[str, float]:
    """(text, number): CAM max abs diff, or pseudo-mask % of pixels equal."""
    with np.load(ref_file) as a, np.load(our_file) as b:
        assert sorted(a.files) == sorted(b.files), (a.files, b.files)
        if step == "cam":
            diff = max(float(np.abs(a[k] - b[k]).max()) if a[k].size else 0.0 for k in a.files)
            return f"CAM max abs diff {diff:.1e}", diff
        same = sum(int((a[k] == b[k]).sum()) for k in a.files)
        total = sum(a[k].size for k in a.files)
        pct = 100.0 * same / total
        return f"{pct:.3f} % of pixels equal", pct


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seam", type=Path, required=True, help="checkout of YudeWang/SEAM")
    p.add_argument("--size", type=parse_size, default=(375, 500), help="image size H or HxW")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads of every worker")
    p.add_argument("--repeat", type=int, default=1, help="runs per code and step, alternating; the median is reported")
    p.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    p.add_argument("--json", type=Path, help="append one JSON record per (code, step)")
    p.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--code", choices=["reference", "project"], help=argparse.SUPPRESS)
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.seam = args.seam.resolve()
    if args.worker:
        worker(args)
        return
    if not ((args.seam / "infer_SEAM.py").is_file() and (args.seam / "infer_aff.py").is_file()):
        raise SystemExit(f"--seam {args.seam}: not a checkout of YudeWang/SEAM (no infer_SEAM.py / infer_aff.py)")
    steps = [s for s in args.steps.split(",") if s]
    for step in steps:
        if step not in STEPS:
            raise SystemExit(f"--steps: unknown step {step!r} (choose from {', '.join(STEPS)})")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_seam_"))
    work.mkdir(parents=True, exist_ok=True)
    size = f"{args.size[0]}x{args.size[1]}"
    base = [sys.executable, str(Path(__file__).resolve()), "--seam", str(args.seam), "--threads", str(args.threads)]
    base += ["--work", str(work.resolve()), "--size", size, "--images", str(args.images)]
    meta = {
        "benchmark": "bench_seam",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _cpu_model(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "commit": _commit(),
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "load_avg_start": os.getloadavg(),
        "size": size,
        "images": args.images,
        "repeat": args.repeat,
    }
    codes = ("reference", "project")
    records = []
    run_id = 0
    for step in steps:
        runs: dict[str, list[dict]] = {c: [] for c in codes}
        for rep in range(args.repeat):  # alternate the order: drift on a shared machine hits both alike
            for code in codes if rep % 2 == 0 else codes[::-1]:
                run_id += 1
                r = _run_worker(base, code, step, run_id)
                r["load_avg"] = os.getloadavg()[0]
                runs[code].append(r)
                print(f"{code} {step} run {rep + 1}: {r}", flush=True)
        text, value = _agreement(step, runs["reference"][-1]["out"], runs["project"][-1]["out"])
        for code, rs in runs.items():
            median = statistics.median(x["seconds"] for x in rs)
            records.append(
                {
                    **meta,
                    "step": step,
                    "code": code,
                    "seconds": median,
                    "s_per_image": median / args.images,
                    "runs_s": [x["seconds"] for x in rs],
                    "load_avg_runs": [x["load_avg"] for x in rs],
                    "rss_before_mib": min(x["rss_before_mib"] for x in rs),
                    "peak_rss_mib": max(x["peak_rss_mib"] for x in rs),
                    "agreement": text,
                    "agreement_value": value,
                }
            )
    load_end = os.getloadavg()
    for r in records:
        r["load_avg_end"] = load_end
    print(
        f"\n{meta['machine']}, {args.threads} threads, load average {meta['load_avg_start'][0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end; commit {meta['commit']}\n"
    )
    print(
        "| step | size | images | repeats | official s/image | project s/image | speed-up | "
        "official peak RSS MiB (step) | project peak RSS MiB (step) | agreement |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"cam": "CAM (infer_SEAM --out_cam / make_seam_cams)", "walk": "walk (infer_aff / make_seam_pseudo_masks)"}
    for step in steps:
        ref_r, our_r = (next(r for r in records if r["step"] == step and r["code"] == c) for c in codes)
        print(
            f"| {names[step]} | {size} | {args.images} | {args.repeat} | {ref_r['s_per_image']:.2f} | "
            f"{our_r['s_per_image']:.2f} | **{ref_r['seconds'] / our_r['seconds']:.2f}x** | "
            f"{ref_r['peak_rss_mib']:.0f} ({ref_r['peak_rss_mib'] - ref_r['rss_before_mib']:+.0f}) | "
            f"{our_r['peak_rss_mib']:.0f} ({our_r['peak_rss_mib'] - our_r['rss_before_mib']:+.0f}) | "
            f"{ref_r['agreement']} |"
        )
    if args.json:
        append_jsonl(args.json, records)


if __name__ == "__main__":
    main()
