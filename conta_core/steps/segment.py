"""Segmentation step: train DeepLab-v2 on pseudo-masks, predict label maps (+ optional CRF).

Training (deeplab-pytorch as used by CONTA): iteration-based SGD with
momentum and per-iteration poly decay, cross-entropy (ignore 255) summed over the MSC
outputs [1.0, *msc scales, max], the label map resized by nearest neighbour (pixel
centres, as PIL) to each output's size. Not reproduced: gradient accumulation
(ITER_SIZE 2; set batch_size to the effective batch instead) and the poly update every 10
iterations (we update every iteration).

Prediction: for every test scale s in `infer.scales` (and its horizontal flip when
`infer.flip`), the eval-mode MSC model (max-fusion over its own msc scales) gives logits;
each is upsampled bilinearly to H x W (flipped logits are flipped back), the logits are
AVERAGED over all scale/flip passes and a softmax over classes gives the probabilities.
With infer.scales [1.0] and flip false this is exactly deeplab-pytorch's test protocol.

CRF (optional, `infer.crf`): conta_core.steps.crf.crf_inference_prob on the softmax
probabilities with the `segmentation.crf` parameters. `segmentation.crf_image` picks the
image its bilateral term sees: "rgb" (the raw RGB image, [OURS] default on the generated
data) or "deeplab_pytorch" (what deeplab-pytorch's CRF step feeds it: the BGR
mean-subtracted image cast to uint8, negative values wrapping around; the reference
convention of the VOC/COCO overlays, needed to reproduce published CRF numbers).

Input normalisation (`segmentation.input_norm`): "imagenet" (RGB mean/std, torchvision
weights) or "caffe" (BGR minus deeplab-pytorch's mean, no std: DeepLab caffemodel weights).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.data.artifacts import require
from conta_core.data.manifest import Manifest
from conta_core.data.transforms import caffe_crf_image, normalize
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.device import inference_autocast, inference_model
from conta_core.infra.fileio import IGNORE_LABEL, save_label_png, save_torch, write_csv
from conta_core.infra.progress import Progress
from conta_core.infra.training import Loop, Resume, fingerprint, fit, loader_options, poly_lr, shuffled_loader
from conta_core.models.deeplab import MSC, build_deeplab, checkpoint_dict, load_deeplab, param_groups

log = logging.getLogger("conta.segment")

INFER_WINDOW = 8  # infer_segmentation loads this many images at a time; same-size ones share passes
_TRAIN_KEYS = (
    "iterations", "batch_size", "lr", "momentum", "weight_decay", "poly_power",
    "crop_size", "scale_range",
)  # fmt: skip


def _segmentation_dataset(
    manifest: Manifest, ids: list[str], label_files: dict[str, Path], cfg_seg: dict, seed: int
) -> torch.utils.data.Dataset:
    """conta_core.data.torch_datasets.SegmentationDataset: items {"image", "label", "id"}."""
    from conta_core.data.torch_datasets import SegmentationDataset

    return SegmentationDataset(
        manifest,
        ids,
        label_files,
        crop_size=int(cfg_seg["crop_size"]),
        scale_range=tuple(float(s) for s in cfg_seg["scale_range"]),
        seed=seed,
        norm=input_norm(cfg_seg),
    )


def msc_loss(outputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Sum over MSC outputs of the mean cross-entropy over non-ignored pixels.

    outputs: each float32[B, K, h_i, w_i]; labels: int64[B, S, S] with IGNORE_LABEL = 255.
    Labels are resized to each (h_i, w_i) by nearest neighbour at pixel centres. An output
    whose resized labels are all ignored contributes 0 (instead of NaN).
    """
    total = outputs[0].new_zeros(())
    for logits in outputs:
        target = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")
        target = target[:, 0].long()
        valid = (target != IGNORE_LABEL).sum().clamp(min=1)
        total = total + F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL, reduction="sum") / valid
    return total


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]


def _build_optimizer(model: MSC, cfg_seg: dict) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, cfg_seg), lr=float(cfg_seg["lr"]), momentum=float(cfg_seg["momentum"]))


def _build_model(cfg_seg: dict, num_classes: int, seed: int, device: torch.device) -> MSC:
    """The model with weights initialised from `seed` (global torch RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_deeplab(cfg_seg, num_classes)
    return model.to(device).train()


def _save_log(log_csv: Path | None, rows: list[dict]) -> None:
    if log_csv is not None:
        write_csv(log_csv, pd.DataFrame(rows, columns=["iteration", "loss", "lr"]))


def train_segmentation(
    manifest: Manifest,
    ids: list[str],
    label_files: dict[str, Path],
    cfg_seg: dict,
    device: torch.device,
    out_path: Path,
    seed: int,
    log_csv: Path | None,
    num_workers: int = 0,
    checkpoint: dict | None = None,
) -> None:
    """Train MSC(DeepLab-v2) on (image, pseudo-mask) pairs; save {"state_dict", "config", ...} at out_path.

    label_files: image id -> label PNG (uint8 0..C, 255 ignore) for every id in `ids`.
    cfg_seg: the `segmentation` config section. Writes a CSV (iteration, loss, lr = backbone
    learning rate used at that iteration) at log_csv (None = no log). checkpoint: the
    `checkpoint` config section (conta_core.infra.training: resumable checkpoints in
    <out_path>.resume/, resumed by a rerun).
    Deterministic on CPU for a fixed seed (model init, shuffling, augmentation), whatever
    num_workers (DataLoader worker processes, config loader_workers).
    """
    require_keys(cfg_seg, _TRAIN_KEYS, "segmentation")
    require(label_files, ids, "train_segmentation: pseudo-masks (label_files)")
    iterations, batch_size = int(cfg_seg["iterations"]), int(cfg_seg["batch_size"])
    if iterations < 1:
        raise config_error("segmentation.iterations", f"must be >= 1, got {iterations}")
    if not 1 <= batch_size <= len(ids):
        raise ValueError(
            f"config: segmentation.batch_size={batch_size} must be in 1..{len(ids)} (the number of training images)"
        )
    out_path = Path(out_path)
    model = _build_model(cfg_seg, manifest.num_classes, seed, device)
    optimizer = _build_optimizer(model, cfg_seg)
    dataset = _segmentation_dataset(manifest, ids, label_files, cfg_seg, seed)
    loader, batches = shuffled_loader(dataset, batch_size, loader_options(num_workers, device, seed))
    resume = Resume(out_path, checkpoint, fingerprint("train_seg", cfg_seg, list(ids), seed, manifest.num_classes))
    step_fn = functools.partial(
        _step,
        model=model,
        optimizer=optimizer,
        base_lr=float(cfg_seg["lr"]),
        iterations=iterations,
        power=float(cfg_seg["poly_power"]),
        device=device,
    )
    rows = fit(
        Loop(
            name="train_seg",
            model=model,
            optimizer=optimizer,
            max_step=iterations,
            steps_per_epoch=len(loader),
            batches=batches,
            step=step_fn,
            resume=resume,
            generators=[loader.generator],
        )
    )
    save_torch(out_path, checkpoint_dict(model, cfg_seg, manifest.num_classes, iteration=iterations))
    _save_log(log_csv, rows)
    resume.finish()
    log.info("segmentation: %d iterations, final loss %.4f -> %s", iterations, rows[-1]["loss"], out_path)


def _step(
    batch: dict,
    it: int,
    epoch: int,
    *,
    model: MSC,
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    iterations: int,
    power: float,
    device,
) -> dict:
    """One SGD step at the poly lr of iteration `it` (0-based; `fit` calls it with the batch,
    the iteration and the epoch); the row (iteration, loss, lr)."""
    lr = poly_lr(base_lr, it, iterations, power)
    _set_lr(optimizer, lr)
    images = batch["image"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True).long()
    loss = msc_loss(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"iteration": it + 1, "loss": float(loss.detach()), "lr": lr}


CRF_IMAGES = ("rgb", "deeplab_pytorch")  # segmentation.crf_image


def input_norm(cfg_seg: dict) -> str:
    """`segmentation.input_norm` ("imagenet" when absent: checkpoints written before the key existed)."""
    return str(cfg_seg.get("input_norm", "imagenet"))


def crf_input_image(img_u8: np.ndarray, crf_image: str) -> np.ndarray:
    """The uint8[H, W, 3] image the segmentation CRF sees for `segmentation.crf_image`."""
    if crf_image == "rgb":
        return np.ascontiguousarray(img_u8)
    if crf_image == "deeplab_pytorch":
        return caffe_crf_image(img_u8)
    raise config_error("segmentation.crf_image", f"expected one of {CRF_IMAGES}, got {crf_image!r}")


def predict(
    model: nn.Module,
    img_u8: np.ndarray,
    scales: Sequence[float],
    flip: bool,
    device: torch.device,
    norm: str | None = None,
) -> np.ndarray:
    """Class probabilities of one image at full resolution.

    img_u8: uint8[H, W, 3] RGB. Returns float32[K, H, W] (K = C + 1 classes, sums to 1 per
    pixel): softmax of the logits averaged over all (scale, flip) passes, each pass's logits
    upsampled bilinearly to H x W (see the module docstring). The model is put in eval mode.
    """
    if img_u8.ndim != 3 or img_u8.shape[2] != 3:
        raise ValueError(f"predict: expected an RGB image uint8[H, W, 3], got shape {img_u8.shape}")
    return predict_batch(model, [img_u8], scales, flip, device, norm)[0]


def predict_batch(
    model: nn.Module,
    imgs: list[np.ndarray],
    scales: Sequence[float],
    flip: bool,
    device: torch.device,
    norm: str | None = None,
) -> np.ndarray:
    """`predict` of B images of one size with one forward pass per scale: float32[B, K, H, W].

    imgs: B x uint8[H, W, 3] of equal size. The batch of a scale is [img_1..img_B, flipped
    img_1..img_B] (on the CPU, scales of >= 256 x 256 px through the BN-folded channels_last
    copy: device.inference_model); on CUDA it runs channels_last under bf16/fp16 autocast (logits averaged
    in fp32), on the CPU in fp32: equal to `predict` per image up to float32 rounding of the
    batched convolutions (tests/test_fast_paths.py: max abs difference < 1e-5).
    """
    if not imgs:
        raise ValueError("predict_batch: no images")
    h, w = imgs[0].shape[:2]
    if any(im.ndim != 3 or im.shape[2] != 3 or im.shape[:2] != (h, w) for im in imgs):
        raise ValueError(f"predict_batch: expected RGB images uint8[{h}, {w}, 3], got {[im.shape for im in imgs]}")
    if not scales:
        raise ValueError("predict: segmentation.infer.scales is empty")
    model.eval()
    dev, b = torch.device(device), len(imgs)
    norm = norm or getattr(model, "input_norm", "imagenet")
    x = torch.from_numpy(np.stack([normalize(im, norm) for im in imgs])).to(dev)
    total, passes = None, 0
    with torch.inference_mode():
        for s in scales:
            size = (max(1, round(h * float(s))), max(1, round(w * float(s))))
            xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            net, batch = inference_model(model, torch.cat([xs, xs.flip(-1)]) if flip else xs)
            with inference_autocast(dev):
                out = net(batch)
            logits = F.interpolate(out.float(), size=(h, w), mode="bilinear", align_corners=False)
            fused = logits[:b] + logits[b:].flip(-1) if flip else logits
            total = fused if total is None else total + fused
            passes += 2 if flip else 1
        probs = torch.softmax(total / passes, dim=1)
    return probs.cpu().numpy()


def labels_from_probs(
    img_u8: np.ndarray, probs: np.ndarray, crf_params: dict | None = None, crf_image: str = "rgb"
) -> np.ndarray:
    """uint8[H, W] argmax of probs float32[K, H, W], after a dense CRF when crf_params is given
    (on the image `crf_input_image(img_u8, crf_image)`)."""
    if crf_params is not None:
        from conta_core.steps.crf import crf_inference_prob

        probs = crf_inference_prob(crf_input_image(img_u8, crf_image), probs, crf_params)
    return np.argmax(probs, axis=0).astype(np.uint8)


def predict_labels(
    model: nn.Module,
    img_u8: np.ndarray,
    scales: Sequence[float],
    flip: bool,
    device: torch.device,
    crf_params: dict | None = None,
    crf_image: str = "rgb",
) -> np.ndarray:
    """Label map uint8[H, W] (0 bg, 1..C): argmax of `predict`, after a dense CRF when crf_params is given.

    crf_params: the `segmentation.crf` section (iterations, gaussian_sxy, gaussian_compat,
    bilateral_sxy, bilateral_srgb, bilateral_compat); crf_image: `segmentation.crf_image`.
    """
    return labels_from_probs(img_u8, predict(model, img_u8, scales, flip, device), crf_params, crf_image)


def _infer_settings(cfg_seg: dict) -> tuple[list[float], bool, dict | None]:
    """(scales, flip, crf_params or None) from segmentation.infer / segmentation.crf."""
    require_keys(cfg_seg, ("infer",), "segmentation")
    infer = cfg_seg["infer"]
    require_keys(infer, ("scales", "flip", "crf"), "segmentation.infer")
    crf_params = None
    if infer["crf"]:
        require_keys(cfg_seg, ("crf",), "segmentation")
        crf_params = cfg_seg["crf"]
    return [float(s) for s in infer["scales"]], bool(infer["flip"]), crf_params


def infer_segmentation(
    manifest: Manifest, ids: list[str], model_path: Path, out_dir: Path, cfg_seg: dict, device: torch.device
) -> None:
    """Write the predicted label map of every id as a palette PNG out_dir/<id>.png.

    Ids whose PNG already exists are skipped (resume); the model is loaded only if some
    remain. Architecture and weights come from the checkpoint; scales, flip and CRF from
    cfg_seg (`segmentation.infer`, `segmentation.crf`).
    """
    scales, flip, crf_params = _infer_settings(cfg_seg)
    crf_image = str(cfg_seg.get("crf_image", "rgb"))
    crf_input_image(np.zeros((1, 1, 3), np.uint8), crf_image)  # a bad value fails before the model loads
    out_dir = Path(out_dir)
    todo = [i for i in ids if not (out_dir / f"{i}.png").exists()]
    log.info("infer_seg: %d of %d images to predict -> %s", len(todo), len(ids), out_dir)
    if not todo:
        return
    model = load_deeplab(model_path, device)
    n_model = model.base.num_classes
    if n_model != manifest.num_classes:
        raise ValueError(
            f"{model_path}: model predicts {n_model} classes but manifest {manifest.name} has {manifest.num_classes}"
        )
    if torch.device(device).type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    from conta_core.steps.cam import image_batches

    bar = Progress("infer_seg", len(todo), unit="img")
    for batch_ids, imgs in image_batches(manifest, todo, INFER_WINDOW, scales, flip):
        for image_id, img, p in zip(batch_ids, imgs, predict_batch(model, imgs, scales, flip, device)):
            save_label_png(out_dir / f"{image_id}.png", labels_from_probs(img, p, crf_params, crf_image))
        bar.update(n=len(batch_ids))
    bar.close()
