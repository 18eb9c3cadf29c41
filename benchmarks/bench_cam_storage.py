#!/usr/bin/env python
"""Benchmark: CAM artifact storage per image and what float16 high_res maps would cost.

1. Storage at VOC size (500 x 375, K foreground classes, keys + stride-4 cam + high_res):
   the old pickled-dict .npy (IRNet's format, written only to measure it), the .npz of
   conta_core.infra.fileio.save_cam (float32), and two options not taken: float16 high_res and a
   compressed .npz. The maps are smooth blobs in [0, 1] (compressed sizes depend on content;
   uncompressed ones do not).
2. With --round-dir (a finished round of a run) and --manifest: the CAM sweep mIoU of the
   round's train_eval CAMs with high_res as stored (float32) and rounded to float16, and the
   largest difference over the thresholds of cam.sweep.

CLI: python benchmarks/bench_cam_storage.py [--classes 1 2 3] [--round-dir results/default/round0
     --manifest results/default/data/manifest.json] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

H, W = 375, 500  # a VOC image


def _maps(k: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((k, h, w), np.float32)
    for c in range(k):
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.3) * min(h, w)
        out[c] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return out / out.max(axis=(1, 2), keepdims=True)


def storage(k: int) -> dict[str, int]:
    """Bytes per image of each format for K classes at VOC size."""
    from conta_core.infra.fileio import save_cam

    high = _maps(k, H, W)
    cam = high[:, ::4, ::4].copy()
    keys = np.arange(k, dtype=np.int64)
    sizes = {}
    with tempfile.TemporaryDirectory() as d:
        buf = io.BytesIO()
        np.save(buf, {"keys": keys, "cam": cam, "high_res": high}, allow_pickle=True)  # the old format
        sizes["pickled_npy_float32"] = buf.getbuffer().nbytes
        save_cam(Path(d) / "x.npz", keys, cam, high)
        sizes["npz_float32"] = (Path(d) / "x.npz").stat().st_size
        for name, saver, h in (
            ("npz_float16_high_res", np.savez, high.astype(np.float16)),
            ("npz_compressed_float32", np.savez_compressed, high),
        ):
            buf = io.BytesIO()
            saver(buf, keys=keys, cam=cam, high_res=h)
            sizes[name] = buf.getbuffer().nbytes
    return sizes


def float16_effect(round_dir: Path, manifest_path: Path) -> dict:
    """CAM sweep mIoU (percent) with float32 and float16-rounded high_res on train_eval."""
    import conta_core.evaluation.cam_eval as cam_mod
    from conta_core.data.artifacts import index_artifacts
    from conta_core.data.manifest import Manifest
    from conta_core.infra.config import load_config
    from conta_core.infra.fileio import CAM_SUFFIX, load_cam

    manifest = Manifest.load(manifest_path)
    cfg = load_config(REPO / "config/config.yaml")
    thresholds = cam_mod.sweep_thresholds(cfg["cam"])
    files = index_artifacts(sorted(p for p in (round_dir / "cam").iterdir() if p.is_dir()), CAM_SUFFIX)
    ids = manifest.ids("train_eval")
    full = cam_mod.eval_cam_sweep(manifest, ids, files, thresholds, manifest.num_classes)

    def half(path):
        d = load_cam(path)
        d["high_res"] = d["high_res"].astype(np.float16).astype(np.float32)
        return d

    original = cam_mod.load_cam
    cam_mod.load_cam = half
    try:
        rounded = cam_mod.eval_cam_sweep(manifest, ids, files, thresholds, manifest.num_classes)
    finally:
        cam_mod.load_cam = original
    diff = (rounded["miou"] - full["miou"]).abs() * 100
    return {
        "images": len(ids),
        "thresholds": len(thresholds),
        "max_abs_miou_diff_points": float(diff.max()),
        "at_eval_threshold": float(diff[np.isclose(full["threshold"], float(cfg["cam"]["eval_threshold"]))].max()),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--round-dir", type=Path, default=None)
    p.add_argument("--manifest", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    result = {"image": f"{W}x{H}", "bytes_per_image": {k: storage(k) for k in a.classes}}
    for k, sizes in result["bytes_per_image"].items():
        print(f"K={k}: " + ", ".join(f"{n} {v / 1e6:.3f} MB" for n, v in sizes.items()))
    if a.round_dir is not None:
        if a.manifest is None:
            p.error("--round-dir needs --manifest")
        result["float16_high_res"] = float16_effect(a.round_dir, a.manifest)
        print("float16 high_res:", result["float16_high_res"])
    if a.json is not None:
        a.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
