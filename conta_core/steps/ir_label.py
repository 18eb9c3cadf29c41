"""Inter-pixel-relation (IR) labels from CAMs: IRNet `step/cam_to_ir_label.py`.

Per image, with the full-resolution CAMs `high_res` of the K classes present (`keys`):
1. fg index map = argmax over [constant plane fg_threshold, high_res] (0..K), refined by a
   dense CRF (conta_core.steps.crf.crf_inference_label, n_labels = K + 1), mapped to class ids;
2. bg index map likewise with the lower bg_threshold;
3. label = fg class where the fg map is foreground; 0 where both maps say background;
   255 (uncertain, ignored by IRNet training) elsewhere.
Ties with the constant plane go to background (argmax takes the first maximum).

Output: one label PNG uint8[H, W] per image (0 bg, 1..C, 255 uncertain), written with
conta_core.infra.fileio.save_label_png (VOC palette PNG).
"""

from __future__ import annotations

import functools
import multiprocessing
import sys
from pathlib import Path

import numpy as np

from conta_core.data.manifest import Manifest
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import IGNORE_LABEL, load_cam, load_image, save_label_png
from conta_core.steps import crf

MAX_CLASS_ID = IGNORE_LABEL - 1  # class ids keys + 1 must stay below the uncertain value
CFG_KEYS = ("fg_threshold", "bg_threshold", "crf")
MAX_CHUNKSIZE = 4
# fork on Linux: a worker starts in ~0.1 s; a spawned one re-imports the main module, and the
# workflow script's imports pull in torch (~4 s and ~500 MB per worker on the benchmark machine,
# benchmarks/RESULTS.md). The workers never touch torch, so forking a parent that has
# imported it is safe (torch's DataLoader forks its workers the same way). Elsewhere: spawn.
POOL_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def _class_ids(keys: np.ndarray) -> np.ndarray:
    """int64[K + 1] map from argmax index to class id: [0, keys[0] + 1, ..., keys[K-1] + 1]."""
    return np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])


def _threshold_index(high_res: np.ndarray, threshold: float) -> np.ndarray:
    """int64[H, W] argmax over [threshold plane, high_res float32[K, H, W]] (0 = the plane)."""
    bg_plane = np.full((1,) + high_res.shape[1:], threshold, dtype=high_res.dtype)
    return np.argmax(np.concatenate([bg_plane, high_res], axis=0), axis=0)


def crf_label_maps(img: np.ndarray, label_maps: list[np.ndarray], n_labels: int, params: dict) -> list[np.ndarray]:
    """conta_core.steps.crf.crf_inference_label of several label maps of ONE image, on one dense CRF.

    The pairwise terms (pydensecrf's permutohedral lattices) depend only on the image, so
    they are built once and each map only swaps the unary; the result equals separate
    crf_inference_label calls exactly (tests/test_fast_paths.py), ~1.6x faster for two maps.
    img: uint8[H, W, 3]; label_maps: int[H, W] each, values in 0..n_labels-1.
    Returns int64[H, W] per map.
    """
    crf._check_params(params, crf.LABEL_KEYS)
    if n_labels < 2 or not label_maps:  # one label: nothing to decide (as crf_inference_label)
        return [crf.crf_inference_label(img, m, n_labels, params) for m in label_maps]
    shape = label_maps[0].shape
    img = crf._check_image(img, shape, "label map")
    d = crf._densecrf().DenseCRF2D(shape[1], shape[0], n_labels)
    d.addPairwiseGaussian(sxy=float(params["gaussian_sxy"]), compat=float(params["gaussian_compat"]))
    d.addPairwiseBilateral(
        sxy=float(params["bilateral_sxy"]), srgb=float(params["bilateral_srgb"]), rgbim=img,
        compat=float(params["bilateral_compat"]),
    )  # fmt: skip
    out = []
    for labels in label_maps:
        if labels.shape != shape:
            raise ValueError(f"CRF label maps differ in size: {labels.shape} != {shape}")
        d.setUnaryEnergy(np.ascontiguousarray(crf.labels_unary(labels, n_labels, float(params["gt_prob"]))))
        q = np.asarray(d.inference(int(params["iterations"])), dtype=np.float32).reshape(n_labels, -1)
        out.append(np.argmax(q, axis=0).reshape(shape).astype(np.int64))
    return out


def _check_cam(img: np.ndarray, keys: np.ndarray, high_res: np.ndarray) -> None:
    if high_res.ndim != 3 or high_res.shape[0] != len(keys):
        raise ValueError(f"high_res must be float32[K, H, W] with K = len(keys) = {len(keys)}, got {high_res.shape}")
    if img.shape[:2] != high_res.shape[1:]:
        raise ValueError(f"CAM size {high_res.shape[1:]} != image size {img.shape[:2]}")
    if len(keys) and (keys.min() < 0 or keys.max() + 1 > MAX_CLASS_ID):
        raise ValueError(f"CAM keys {keys.tolist()} must be 0-based foreground indices below {MAX_CLASS_ID}")


def cam_to_ir_label(
    img: np.ndarray,
    keys: np.ndarray,
    high_res: np.ndarray,
    fg_threshold: float,
    bg_threshold: float,
    crf_params: dict,
) -> np.ndarray:
    """IR label of one image (IRNet cam_to_ir_label).

    img: uint8[H, W, 3] raw RGB.
    keys: int[K] 0-based foreground indices of the CAM channels (class id = key + 1).
    high_res: float32[K, H, W] max-normalised CAMs.
    fg_threshold / bg_threshold: background scores of the confident-fg / confident-bg maps
        (config ir_label.fg_threshold, ir_label.bg_threshold).
    crf_params: config ir_label.crf.
    Returns uint8[H, W]: fg class id where the fg map is foreground, 0 where both maps are
    background, 255 elsewhere.
    """
    keys = np.asarray(keys, dtype=np.int64).ravel()
    high_res = np.asarray(high_res, dtype=np.float32)
    img = np.asarray(img)
    _check_cam(img, keys, high_res)
    class_ids = _class_ids(keys)
    index_maps = [_threshold_index(high_res, t) for t in (fg_threshold, bg_threshold)]
    fg, bg = (class_ids[m] for m in crf_label_maps(img, index_maps, len(class_ids), crf_params))
    label = np.where(fg > 0, fg, np.where(bg == 0, 0, IGNORE_LABEL))
    return label.astype(np.uint8)


def _check_cfg(cfg: dict) -> None:
    require_keys(cfg, CFG_KEYS, "ir_label")
    if not 0.0 <= float(cfg["bg_threshold"]) <= float(cfg["fg_threshold"]):
        raise config_error(
            "ir_label.bg_threshold",
            f"need 0 <= bg_threshold <= fg_threshold, got {cfg['bg_threshold']} and {cfg['fg_threshold']}",
        )


def _ir_label_file(task: tuple[str, Path, Path, Path], cfg: dict) -> str:
    """Worker: compute and write one IR label PNG; task = (id, image, cam, out). Returns the id."""
    image_id, image_path, cam_path, out_path = task
    img = load_image(image_path)
    cam = load_cam(cam_path)
    try:
        label = cam_to_ir_label(
            img, cam["keys"], cam["high_res"], float(cfg["fg_threshold"]), float(cfg["bg_threshold"]), cfg["crf"]
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"image {image_id!r} ({image_path}, CAM {cam_path}): {e}") from e
    save_label_png(out_path, label)
    return image_id


def make_ir_labels(
    manifest: Manifest,
    ids: list[str],
    cam_files: dict[str, Path],
    out_dir: Path,
    cfg: dict,
    workers: int,
) -> None:
    """Write out_dir/<id>.png (IR label, see `cam_to_ir_label`) for every id.

    cam_files: id -> CAM .npz (conta_core.infra.fileio.save_cam format).
    cfg: config section ir_label (fg_threshold, bg_threshold, crf).
    workers: processes (> 1: a multiprocessing.Pool, POOL_START_METHOD). Ids whose PNG exists already
    are skipped (resume). The result does not depend on `workers`.
    """
    _check_cfg(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    no_cam = [i for i in ids if i not in cam_files]
    if no_cam:
        raise ValueError(f"no CAM file for image id(s) {no_cam[:10]} ({len(no_cam)} in all)")
    tasks = [
        (i, manifest.image_file(i), Path(cam_files[i]), out_dir / f"{i}.png")
        for i in ids
        if not (out_dir / f"{i}.png").exists()
    ]
    map_tasks(functools.partial(_ir_label_file, cfg=cfg), tasks, workers, "ir_label")


def map_tasks(work, tasks: list, workers: int, desc: str) -> None:
    """work(task) for every task with a progress bar (desc), in `workers` processes (> 1: a
    multiprocessing.Pool, POOL_START_METHOD; `work` a module-level function or a partial of
    one). The CRF label steps of every method (make_ir_labels, seam.make_seam_crf_labels):
    each task writes its own files, so the result does not depend on `workers`."""
    from conta_core.infra.progress import track  # main process only: keeps torch out of workers

    bar = functools.partial(track, desc=desc, total=len(tasks))
    if workers <= 1 or len(tasks) <= 1:
        for task in bar(tasks):
            work(task)
        return
    chunksize = max(1, min(MAX_CHUNKSIZE, len(tasks) // (4 * workers)))
    with multiprocessing.get_context(POOL_START_METHOD).Pool(min(workers, len(tasks))) as pool:
        for _ in bar(pool.imap(work, tasks, chunksize=chunksize)):
            pass
