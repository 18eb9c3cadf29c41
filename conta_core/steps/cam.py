"""Multi-scale CAM inference (IRNet make_cam); the CAM evaluation: conta_core.evaluation.cam_eval.

compute_cam follows IRNet (https://github.com/jiwoon-ahn/irn, step/make_cam.py): per
scale, the rescaled image and its horizontal flip run in one batch; ReLU CAMs of the flipped
copy are flipped back and added; each scale is resized bilinearly (align_corners=False) to
the stride-4 size ceil(H/4) x ceil(W/4), and to the stride-16-aligned size
16*ceil(H/16) x 16*ceil(W/16) then cropped to H x W for `high_res` (IRNet's
get_strided_up_size + crop); the maps are summed over scales, only the image's classes are
kept and each map is divided by its max + 1e-5.

`cam.resize` picks how the image is rescaled per scale: "pil_bicubic" (IRNet's
pil_rescale, order 3; the VOC/COCO overlays; with it the CAM files equal IRNet's to <= 1e-3,
tests/test_parity.py) or "bilinear" ([OURS], torch on uint8, the generated default).
For context models X_m is encoded once at the canonical context size (the encoding resizes
to context.size, so a per-scale resize would not change it) and flipped together with the
image (flip first, then encode).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import normalize, rescale_image
from conta_core.data.xm import load_xm
from conta_core.infra.config import require_keys
from conta_core.infra.device import inference_autocast, inference_model
from conta_core.infra.fileio import CAM_SUFFIX, load_image, save_cam
from conta_core.infra.progress import Progress
from conta_core.models.classifier import context_xm_files, load_classifier

log = logging.getLogger("conta.cam")

NORM_EPS = 1e-5  # IRNet: cam / (max + 1e-5)
CAM_STRIDE = 4
HIGH_RES_ALIGN = 16  # high_res is upsampled to a multiple of the network stride, then cropped (IRNet)
CAM_WINDOW = 8  # make_cams loads this many images at a time; same-size ones share forward passes
MAX_BATCH_PIXELS = 2**20  # input pixels of one forward pass at the largest scale, flips included


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- inference


def compute_cam(
    model: torch.nn.Module,
    img_u8: np.ndarray,
    keys: np.ndarray,
    scales: list[float],
    flip: bool,
    device: torch.device | str,
    xm: np.ndarray | None = None,
    resize: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-scale (+flip) CAMs of one image, IRNet style (module docstring).

    model: in eval mode, with `cam_maps(x: float32[B, 3, h, w], xm: float32[B, h', w'] | None)
    -> float32[B, C, h/16, w/16]` (and `encode_xm` if xm is given).
    img_u8: uint8[H, W, 3]; keys: int[K] 0-based foreground classes to keep;
    xm: uint8[H, W] label map X_m for context models; resize: `cam.resize`.
    Returns (cam float32[K, ceil(H/4), ceil(W/4)], high_res float32[K, H, W]), each map in [0, 1).
    """
    h, w = img_u8.shape[:2]
    keys_t = torch.as_tensor(np.asarray(keys, dtype=np.int64), device=device)
    strided_size = (math.ceil(h / CAM_STRIDE), math.ceil(w / CAM_STRIDE))
    xm_batch = context_batch(model, xm, (h, w), flip, device)
    if len(keys_t) == 0:  # an image without foreground tags: nothing to localise
        return np.zeros((0, *strided_size), np.float32), np.zeros((0, h, w), np.float32)
    with torch.inference_mode():
        strided, high_res = multiscale_sum(
            lambda batch: model.cam_maps(batch, xm_batch)[:, keys_t], img_u8, scales, flip, device, resize
        )
        strided = _max_normalise(strided)
        high_res = _max_normalise(high_res)
    return strided.cpu().numpy().astype(np.float32), high_res.cpu().numpy().astype(np.float32)


def multiscale_sum(
    maps_fn: Callable[[torch.Tensor], torch.Tensor],
    img_u8: np.ndarray,
    scales: list[float],
    flip: bool,
    device: torch.device | str,
    resize: str = "bilinear",
    high_res_align: int = HIGH_RES_ALIGN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over scales (and the flip) of a network's dense maps, at stride 4 and full size.

    maps_fn(batch: float32[B, 3, h, w]) -> float32[B, P, h', w'], B = 2 (image, flipped
    image) with `flip`, else 1. The image is rescaled per scale with rescale_image(`resize`).
    Per scale the flipped copy's maps are flipped back and added, then resized bilinearly
    (align_corners=False) to ceil(H/4) x ceil(W/4) and by high_res_resize(align=high_res_align)
    to H x W (IRNet make_cam: 16; AMN make_amn_cam resizes straight to H x W: 1).
    Returns (strided float32[P, ceil(H/4), ceil(W/4)], high_res float32[P, H, W]) on `device`:
    plain sums (divide by len(scales) * (2 if flip else 1) for the mean).
    """
    h, w = img_u8.shape[:2]
    if not img_u8.flags.writeable:  # PIL-backed arrays are read-only; torch.from_numpy warns on them
        img_u8 = img_u8.copy()
    strided_size = (math.ceil(h / CAM_STRIDE), math.ceil(w / CAM_STRIDE))
    strided = high_res = None
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = torch.from_numpy(normalize(rescale_image(img_u8, size, resize))).to(device)
        maps = maps_fn(torch.stack([x, x.flip(-1)]) if flip else x[None])
        fused = (maps[0] + maps[1].flip(-1) if flip else maps[0])[None]
        s_part = F.interpolate(fused, strided_size, mode="bilinear", align_corners=False)[0]
        h_part = high_res_resize(fused, h, w, high_res_align)[0]
        strided = s_part if strided is None else strided + s_part
        high_res = h_part if high_res is None else high_res + h_part
    if strided is None:
        raise ValueError("multiscale_sum: no scales given (cam.scales is empty)")
    return strided, high_res


def high_res_resize(maps: torch.Tensor, h: int, w: int, align: int = HIGH_RES_ALIGN) -> torch.Tensor:
    """float32[B, P, h', w'] -> [B, P, h, w]: bilinear to align*ceil(h/align) x align*ceil(w/align),
    then the top-left h x w crop (IRNet make_cam, align 16; equal to a straight resize when
    align divides h and w, and for align 1)."""
    up = (-(-h // align) * align, -(-w // align) * align)
    return F.interpolate(maps, up, mode="bilinear", align_corners=False)[..., :h, :w]


def _max_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map of float32[K, h, w] by its spatial max + 1e-5."""
    return maps / (maps.flatten(1).amax(dim=1)[:, None, None] + NORM_EPS) if len(maps) else maps


def context_batch(
    model: torch.nn.Module, xm: np.ndarray | None, image_size: tuple[int, int], flip: bool, device
) -> torch.Tensor | None:
    """Encoded X_m for [image, flipped image]: float32[B, h', w'] or None (no context).

    model: has `uses_context` and `encode_xm` (CAMNet, AMNNet); xm: uint8[H, W] label map.
    """
    uses_context = bool(getattr(model, "uses_context", False))
    if xm is None:
        if uses_context:
            raise ValueError("compute_cam: the context classifier needs the X_m map (xm)")
        return None
    if not uses_context:
        raise ValueError("compute_cam: xm given but the classifier has no context module")
    if xm.shape != image_size:
        raise ValueError(f"compute_cam: X_m shape {xm.shape} != image size {image_size}")
    maps = [model.encode_xm(xm)] + ([model.encode_xm(xm[:, ::-1])] if flip else [])
    return torch.from_numpy(np.stack(maps)).to(device)


def compute_cams_batch(
    model: torch.nn.Module,
    imgs: list[np.ndarray],
    keys_list: list[np.ndarray],
    scales: list[float],
    flip: bool,
    device: torch.device | str,
    xms: list[np.ndarray] | None = None,
    resize: str = "bilinear",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """compute_cam of B images of one size with one forward pass per scale for all of them.

    imgs: B x uint8[H, W, 3] of equal size; keys_list: B x int[K_b]; xms: B x uint8[H, W] X_m
    maps for context models, else None. Per scale the batch is [img_1..img_B, flipped
    img_1..img_B]; on CUDA it runs channels_last under bf16/fp16 autocast (maps summed in
    fp32), on the CPU in fp32, scales of >= 256 x 256 px through the BN-folded channels_last
    copy of the model (device.inference_model). Returns per image (cam float32[K_b, ceil(H/4), ceil(W/4)],
    high_res float32[K_b, H, W]); on the CPU equal to compute_cam up to float32 rounding of
    the batched convolutions and of the folded BatchNorm (tests/test_fast_paths.py: max abs
    difference < 1e-5).
    """
    if not imgs:
        return []
    if not scales:
        raise ValueError("compute_cams_batch: no scales given (cam.scales is empty)")
    h, w = imgs[0].shape[:2]
    if any(im.shape[:2] != (h, w) for im in imgs):
        raise ValueError(f"compute_cams_batch: images differ in size ({sorted({im.shape[:2] for im in imgs})})")
    dev, b = torch.device(device), len(imgs)
    parts = [context_batch(model, None if xms is None else xms[i], (h, w), flip, dev) for i in range(b)]
    xm_batch = None if parts[0] is None else torch.cat([p[:1] for p in parts] + [p[1:] for p in parts])
    keys_t = [torch.as_tensor(np.asarray(k, dtype=np.int64), device=dev) for k in keys_list]
    strided_size = (math.ceil(h / CAM_STRIDE), math.ceil(w / CAM_STRIDE))
    strided = [torch.zeros((len(k), *strided_size), device=dev) for k in keys_t]
    high_res = [torch.zeros((len(k), h, w), device=dev) for k in keys_t]
    with torch.inference_mode():
        for s in scales:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = torch.from_numpy(np.stack([normalize(rescale_image(im, size, resize)) for im in imgs])).to(dev)
            net, batch = inference_model(model, torch.cat([x, x.flip(-1)]) if flip else x)
            with inference_autocast(dev):
                maps = net.cam_maps(batch, xm_batch)
            maps = maps.float()
            fused = maps[:b] + maps[b:].flip(-1) if flip else maps
            for i, k in enumerate(keys_t):
                if len(k):
                    f = fused[i, k][None]
                    strided[i] += F.interpolate(f, strided_size, mode="bilinear", align_corners=False)[0]
                    high_res[i] += high_res_resize(f, h, w)[0]
        return [
            (_max_normalise(sm).cpu().numpy().astype(np.float32), _max_normalise(hm).cpu().numpy().astype(np.float32))
            for sm, hm in zip(strided, high_res)
        ]


def size_batches(shapes: list[tuple[int, ...]], scales: list[float], flip: bool) -> list[list[int]]:
    """Group positions of `shapes` ([H, W, ...]) into batches of equal H x W, in order, each
    small enough that a forward pass at the largest scale stays within MAX_BATCH_PIXELS."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape[:2]), []).append(i)
    copies = 2 if flip else 1
    top = max([1.0, *map(float, scales)])
    batches = []
    for (h, w), members in groups.items():
        per_pass = max(1, int(MAX_BATCH_PIXELS // (copies * h * w * top * top)))
        batches += [members[k : k + per_pass] for k in range(0, len(members), per_pass)]
    return batches


def image_batches(
    manifest: Manifest, ids: list[str], window: int, scales: list[float], flip: bool
) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Stream `ids` as (batch ids, images uint8[H, W, 3]) batches for batched inference.

    Images are loaded `window` at a time (the only ones held in memory); within a window,
    same-size images share a batch (size_batches for `scales` and `flip`), in order.
    """
    for start in range(0, len(ids), window):
        window_ids = ids[start : start + window]
        imgs = [load_image(manifest.image_file(i)) for i in window_ids]
        for batch in size_batches([im.shape for im in imgs], scales, flip):
            yield [window_ids[k] for k in batch], [imgs[k] for k in batch]


def make_cams(
    manifest: Manifest,
    ids: list[str],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg_cam: dict,
    device: torch.device | str,
    xm_files: dict[str, Path] | None = None,
) -> None:
    """Write out_dir/<id>.npz (conta_core.infra.fileio.save_cam) for `ids`; existing files are skipped.

    cfg_cam: the `cam:` section (scales, flip). xm_files: image id -> X_m label PNG,
    required for context classifiers.
    """
    require_keys(cfg_cam, ("scales", "flip"), "cam")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_classifier(model_path, device)
    if model.uses_context and xm_files is None:
        raise ValueError(f"{model_path}: context classifier but no X_m files (--xm-dir) given")
    if model.uses_context:
        xm_files = context_xm_files(model.context_cfg, xm_files)  # placebo: the partner's X_m
    todo = [i for i in ids if not (out_dir / f"{i}{CAM_SUFFIX}").exists()]
    log.info("make_cams: %d of %d images to do -> %s", len(todo), len(ids), out_dir)
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    scales, flip = list(cfg_cam["scales"]), bool(cfg_cam["flip"])
    resize = str(cfg_cam.get("resize", "bilinear"))
    bar = Progress("cam", len(todo), unit="img")
    for batch_ids, imgs in image_batches(manifest, todo, CAM_WINDOW, scales, flip):
        keys = [np.asarray(manifest.labels[i], dtype=np.int64) - 1 for i in batch_ids]
        xms = [load_xm(xm_files, i, img.shape[:2]) for i, img in zip(batch_ids, imgs)] if model.uses_context else None
        cams = compute_cams_batch(model, imgs, keys, scales, flip, device, xms, resize)
        for image_id, k, (cam, high_res) in zip(batch_ids, keys, cams):
            save_cam(out_dir / f"{image_id}{CAM_SUFFIX}", k, cam, high_res)
        bar.update(n=len(batch_ids))
    bar.close()
