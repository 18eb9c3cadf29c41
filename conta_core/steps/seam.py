"""SEAM as a seed method (method: seam): training, CAM inference, CRF labels, AffinityNet, walk.

SEAM (Wang et al., CVPR 2020; https://github.com/YudeWang/SEAM) with AffinityNet (Ahn and
Kwak, CVPR 2018; https://github.com/jiwoon-ahn/psa). Per round t:

1. `train_seam` (train_SEAM.py): SEAMNet (conta_core.models.seam) on the image x and on
   x2 = x resized by seam.siamese_scale (0.3, bilinear, align_corners). Per branch b:
   (cam_b, cam_rv_b) = net(x_b), both at the branch's input size. Losses (`seam_losses`):
   - cls = mean over branches of the multilabel soft margin on GAP(cam_b) (foreground);
   - min-pool = mean over branches of `adaptive_min_pooling_loss` of cam_rv_b x label;
   - ER = mean |maxnorm(cam_1) resized by the scale - maxnorm(cam_2)| on the foreground;
   - ECR = sum over the two directions of the mean of the top seam.ecr_top (20 %) of
     |max_onehot(other branch's maxnorm CAM, detached) - maxnorm(cam_rv)| over all channels
     and pixels (background channel 1 - max fg).
   loss = cls + min-pool + ER + ECR. SGD with the official four groups (trunk weights at lr,
   trunk biases 2 lr, new-layer weights 10 lr, new-layer biases 20 lr: seam.lr_mults), weight
   decay on the weight groups only, poly decay (1 - step / max_step) ** seam.poly_power.
   seam.psa_optimizer_quirk (official: true): PSA's PolyOptimizer calls SGD(params, lr,
   weight_decay), so the momentum is the weight decay value (5e-4) instead of seam.momentum;
   the per-group weight decay is kept (SEAM's groups set it explicitly).
   t > 0: CONTA's context at block 5 (conta_core.models.seam), both branches get the same M;
   W_1, W_2 learn at the new layers' rate times context.lr_mult, as in IRNet's classifier
   [OURS: SEAM has no context; make_optimizer].
2. `make_seam_cams` (infer_SEAM.py): cam_rv of the image at seam.cam_scales (PIL bicubic)
   and their flips, foreground channels resized bilinearly (align_corners=False) to H x W,
   flips flipped back, summed over all passes; negatives set to 0; per class channel
   norm = (s - min - 1e-5) / (max - min + 1e-5) after values below min + 1e-5 are set to 0
   (the official formula, including its negative values where s was at its minimum:
   -(min + 1e-5) / (max - min + 1e-5), far below 0 when a class is active everywhere;
   equal to infer_SEAM's within 1e-4, tests/test_seam_parity.py). Saved in the standard CAM format (conta_core.infra.fileio.save_cam): high_res =
   the normalised maps, cam = them resized to stride 4 [OURS: only the format needs it].
3. `make_seam_crf_labels` (infer_SEAM.py --out_crf): for alpha in seam.crf_alphas (4, 24)
   the scores [(1 - max fg)^alpha, fg maps] through the dense CRF (seam.crf: the official
   crf_inference settings); <id>.npz {"keys", "la", "ha": float16[K + 1, H, W]} and <id>.png
   (the AffinityNet label at full size: la argmax, 255 where la says background, 0 where ha
   says background; class ids) for inspection and the report.
4. `train_affinity` (train_aff.py): AffinityNet (conta_core.models.affinity) on crops of the
   image with la / ha (random crop seam.aff.crop_size with zero padding, flip), the scores
   average-pooled by 8, labels as above plus 255 where no score (padding); pair labels
   in radius seam.aff.radius; loss bg / 4 + fg / 4 + neg / 2 with -log(aff + 1e-5),
   -log(1 + 1e-5 - aff); the same optimiser as step 1. [OURS] seam.aff.scale (official 1):
   the image (PIL bicubic) and la / ha (nearest) rescaled by it before the crop.
5. `make_seam_pseudo_masks` (infer_aff.py): conta_core.models.affinity.walk_labels with
   seam.walk beta, logt, alpha; class ids 0 / keys + 1; the image rescaled (PIL bicubic) by
   the AffinityNet's scale, the masks at the image's size. DeepLab-v2 and the confounder
   follow as for irn.

[OURS] for the generated data (config/config.yaml; the official values in config/voc12.yaml):
a narrow ResNet-38 (seam.width), trained BN and no frozen blocks (random init: seam.freeze_bn /
seam.freeze_early false), crops of 96 px with random rescale (seam.scale_range) instead of
RandomResizeLong (seam.resize_long); no ColorJitter (seam.color_jitter null; official
[0.3, 0.3, 0.3, 0.1] in both trainings, drawn from the item's rng); AffinityNet starts
from the round's SEAM trunk (seam.aff.backbone_init: seam) instead of ImageNet weights.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from conta_core.data.manifest import Manifest
from conta_core.data.torch_datasets import XM_PAD, ClassificationDataset
from conta_core.data.transforms import (
    color_jitter,
    normalize,
    pil_resize_image,
    random_crop,
    random_hflip,
    random_scale,
    rescale_image,
    resize_label,
    scaled_size,
)
from conta_core.data.xm import load_xm
from conta_core.infra.checkpoint import load_model, save_model
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import CAM_SUFFIX, atomic_path, load_cam, load_image, save_cam, save_label_png, write_csv
from conta_core.infra.progress import track
from conta_core.infra.training import Loop, Resume, fingerprint, fit, loader_options, poly_lr, shuffled_loader
from conta_core.models.affinity import AffinityNet, affinity_labels, effective_radius, load_affinity, walk_labels
from conta_core.models.classifier import context_active, context_xm_files
from conta_core.models.context import encode_xm_batch
from conta_core.models.seam import SEAMNet, build_seam, load_seam, seam_config
from conta_core.steps.cam import CAM_STRIDE, context_batch
from conta_core.steps.confounder import load_confounder
from conta_core.steps.crf import crf_inference_prob
from conta_core.steps.ir_label import map_tasks

log = logging.getLogger("conta.seam")

EPS = 1e-5
LABEL_SUFFIX = ".npz"  # make_seam_crf_labels: <id>.npz (la / ha scores) beside <id>.png
TRAIN_KEYS = (
    "width",
    "freeze_bn",
    "freeze_early",
    "epochs",
    "batch_size",
    "lr",
    "lr_mults",
    "momentum",
    "weight_decay",
    "psa_optimizer_quirk",
    "poly_power",
    "crop_size",
    "scale_range",
    "siamese_scale",
    "ecr_top",
)
AFF_KEYS = ("backbone_init", "radius", "epochs", "batch_size", "lr", "crop_size")  # and scale (default 1)
LOG_COLUMNS = ["epoch", "iter", "loss", "lr", "loss_cls", "loss_er", "loss_ecr"]
AFF_LOG_COLUMNS = ["epoch", "iter", "loss", "lr", "loss_bg", "loss_fg", "loss_neg"]


# ----------------------------------------------------------------------------- losses


def max_norm(p: torch.Tensor) -> torch.Tensor:
    """SEAM's visualization.max_norm of float32[B, C, h, w]: ReLU, then per channel
    ReLU(p - min - 1e-5) / (max - min + 1e-5)."""
    p = F.relu(p)
    flat = p.flatten(2)
    hi = flat.amax(dim=-1)[:, :, None, None]
    lo = flat.amin(dim=-1)[:, :, None, None]
    return F.relu(p - lo - EPS) / (hi - lo + EPS)


def max_onehot(x: torch.Tensor) -> torch.Tensor:
    """Foreground values that are not the per-pixel foreground max set to 0 (background kept)."""
    fg = x[:, 1:]
    fg = torch.where(fg != fg.amax(dim=1, keepdim=True), torch.zeros_like(fg), fg)
    return torch.cat([x[:, :1], fg], dim=1)


def adaptive_min_pooling_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean ReLU of the lowest 25 % of the per-pixel max over channels: x float32[B, C, h, w]."""
    n, _, h, w = x.shape
    k = h * w // 4
    low = torch.topk(x.amax(dim=1).reshape(n, -1), k=k, dim=-1, largest=False)[0]
    return F.relu(low).sum() / (k * n)


def seam_losses(
    cam1: torch.Tensor,
    cam_rv1: torch.Tensor,
    logits1: torch.Tensor,
    cam2: torch.Tensor,
    cam_rv2: torch.Tensor,
    logits2: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    ecr_top: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SEAM's loss of one siamese step (module docstring, step 1).

    cam1, cam_rv1: float32[B, C + 1, H, W] of the image; cam2, cam_rv2: [B, C + 1, h, w] of
    the image resized by `scale`; logits1, logits2: float32[B, C + 1] (GAP of the CAMs, or the
    exact-adjustment logits); labels: float32[B, C] multi-hot. Returns (loss, parts).
    """
    label = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
    min1 = adaptive_min_pooling_loss((cam_rv1 * label)[:, 1:])
    min2 = adaptive_min_pooling_loss((cam_rv2 * label)[:, 1:])
    c1 = F.interpolate(max_norm(cam1), scale_factor=scale, mode="bilinear", align_corners=True) * label
    rv1 = F.interpolate(max_norm(cam_rv1), scale_factor=scale, mode="bilinear", align_corners=True) * label
    c2 = max_norm(cam2) * label
    rv2 = max_norm(cam_rv2) * label
    if c1.shape != c2.shape:
        raise ValueError(f"seam_losses: branch sizes differ ({tuple(c1.shape)} vs {tuple(c2.shape)})")
    cls1 = F.multilabel_soft_margin_loss(logits1[:, 1:], labels)
    cls2 = F.multilabel_soft_margin_loss(logits2[:, 1:], labels)
    loss_er = (c1[:, 1:] - c2[:, 1:]).abs().mean()
    c1 = torch.cat([1 - c1[:, 1:].amax(dim=1, keepdim=True), c1[:, 1:]], dim=1)
    c2 = torch.cat([1 - c2[:, 1:].amax(dim=1, keepdim=True), c2[:, 1:]], dim=1)
    n, c, h, w = c2.shape
    k = int(c * h * w * ecr_top)
    ecr1 = (max_onehot(c2.detach()) - rv1).abs().reshape(n, -1)
    ecr2 = (max_onehot(c1.detach()) - rv2).abs().reshape(n, -1)
    loss_ecr = torch.topk(ecr1, k=k, dim=-1)[0].mean() + torch.topk(ecr2, k=k, dim=-1)[0].mean()
    loss_cls = (cls1 + cls2) / 2 + (min1 + min2) / 2
    loss = loss_cls + loss_er + loss_ecr
    parts = {
        "loss_cls": float(loss_cls.detach()),
        "loss_er": float(loss_er.detach()),
        "loss_ecr": float(loss_ecr.detach()),
    }
    return loss, parts


def affinity_loss(
    aff: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """PSA's loss: aff float32[B, D, N]; bg / fg / neg float32[B, D, N] pair labels."""
    bg_loss = (-bg * torch.log(aff + EPS)).sum() / (bg.sum() + EPS)
    fg_loss = (-fg * torch.log(aff + EPS)).sum() / (fg.sum() + EPS)
    neg_loss = (-neg * torch.log(1.0 + EPS - aff)).sum() / (neg.sum() + EPS)
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return loss, {
        "loss_bg": float(bg_loss.detach()),
        "loss_fg": float(fg_loss.detach()),
        "loss_neg": float(neg_loss.detach()),
    }


# ----------------------------------------------------------------------------- optimiser


def make_optimizer(model: SEAMNet | AffinityNet, lr: float, cfg: dict) -> torch.optim.SGD:
    """SGD over the official four groups (module docstring); group["initial_lr"] for poly. With
    a context module, its weights and biases are two more groups at the new layers' lr times
    `context.lr_mult` (weight decay on the weights only), as in IRNet's classifier, where
    W_1, W_2 get the new layers' lr times lr_mult. [OURS: the SEAM code has no context; the
    bias group keeps SEAM's 2x of the biases]"""
    mults = [float(m) for m in cfg["lr_mults"]]
    wd = float(cfg["weight_decay"])
    sets = list(zip(model.get_parameter_groups(), mults))
    if isinstance(model, SEAMNet) and model.uses_context:
        ctx_mult = float(model.context_cfg.get("lr_mult", 1.0))
        weights, biases = model.context_parameter_groups()
        sets += [(weights, mults[2] * ctx_mult), (biases, mults[3] * ctx_mult)]
    groups = [
        {"params": params, "lr": lr * mult, "initial_lr": lr * mult, "weight_decay": wd if i % 2 == 0 else 0.0}
        for i, (params, mult) in enumerate(sets)
        if params
    ]
    momentum = wd if cfg["psa_optimizer_quirk"] else float(cfg["momentum"])
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def poly_step(optimizer: torch.optim.Optimizer, step: int, max_step: int, power: float) -> float:
    """Every group's lr = initial_lr (1 - step / max_step) ** power; returns the first group's."""
    for g in optimizer.param_groups:
        g["lr"] = poly_lr(g["initial_lr"], step, max_step, power)
    return optimizer.param_groups[0]["lr"]


# ----------------------------------------------------------------------------- data


def resize_long(img: np.ndarray, maps: list[np.ndarray], bounds, rng: np.random.Generator):
    """RandomResizeLong: the long side to an integer drawn from [lo, hi] (both included), PIL
    bicubic for the image (official), nearest for the maps."""
    target = int(rng.integers(int(bounds[0]), int(bounds[1]) + 1))
    h, w = img.shape[:2]
    s = target / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return pil_resize_image(img, size), [resize_label(m, size) for m in maps]


class SeamDataset(ClassificationDataset):
    """ClassificationDataset with SEAM's resize (seam.resize_long, else seam.scale_range), flip
    and ColorJitter (seam.color_jitter, on the resized image as train_SEAM.py's transform)."""

    def __init__(self, manifest, ids, cfg: dict, seed: int, xm_files=None):
        super().__init__(manifest, ids, int(cfg["crop_size"]), tuple(cfg["scale_range"]), seed, xm_files)
        self.long = cfg.get("resize_long")
        self.jitter = cfg.get("color_jitter")

    def __getitem__(self, index: int) -> dict:
        if self.long is None and self.jitter is None:
            return super().__getitem__(index)  # the project's standard augmentation
        image_id = self.ids[index]
        rng = self.rng(index)
        img = load_image(self.manifest.image_file(image_id))
        maps = [load_xm(self.xm_files, image_id, img.shape[:2])] if self.xm_files is not None else []
        if self.long is None:
            img, maps = random_scale(img, maps, self.scale_range, rng)
        else:
            img, maps = resize_long(img, maps, self.long, rng)
        img, maps = random_hflip(img, maps, rng)
        if self.jitter is not None:
            img = color_jitter(img, self.jitter, rng)
        x, maps = random_crop(normalize(img).transpose(1, 2, 0), maps, self.crop_size, rng, 0.0, XM_PAD)
        item = {"image": np.ascontiguousarray(x.transpose(2, 0, 1)), "label": self.manifest.label_vector(image_id)}
        item["id"] = image_id
        if self.xm_files is not None:
            item["xm"] = maps[0].astype(np.uint8)
        return item


# ----------------------------------------------------------------------------- training SEAM


def check_train_cfg(cfg: dict) -> None:
    """ValueError naming the first missing or invalid seam.* key."""
    require_keys(cfg, TRAIN_KEYS, "seam")
    if len(cfg["lr_mults"]) != 4:
        raise config_error("seam.lr_mults", f"expected 4 multipliers, got {cfg['lr_mults']!r}")
    if not 0 < float(cfg["ecr_top"]) <= 1:
        raise config_error("seam.ecr_top", f"expected (0, 1], got {cfg['ecr_top']!r}")


def load_trunk(model: torch.nn.Module, path: str | os.PathLike | None, what: str) -> None:
    """Load a ResNet-38 state_dict (torch file, official key names) into the trunk (strict=False)."""
    if path is None:
        return
    from conta_core.infra.fileio import load_torch

    state = load_torch(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = model.load_state_dict(state, strict=False)
    trunk_missing = [k for k in missing if not k.startswith(("fc8", "f8_", "f9", "context", "m_gain", "confounder"))]
    if trunk_missing or unexpected:
        raise ValueError(
            f"{path} ({what}): not ResNet-38 weights ({len(trunk_missing)} missing, {len(unexpected)} unexpected keys)"
        )


def _freeze(model, cfg: dict):
    model.freeze_bn = bool(cfg["freeze_bn"])
    model.freeze_early = bool(cfg["freeze_early"])
    return model.train()


def train_seam(
    manifest: Manifest,
    ids: list[str],
    cfg: dict,
    context_cfg: dict | None,
    device: torch.device | str,
    out_path: str | os.PathLike,
    seed: int,
    log_csv: str | os.PathLike | None = None,
    xm_files: dict[str, Path] | None = None,
    confounder_path: str | os.PathLike | None = None,
    num_workers: int = 0,
    checkpoint: dict | None = None,
) -> None:
    """Train SEAM on `ids` (module docstring, step 1) and save a "seam" checkpoint.

    cfg: the `seam:` section; context_cfg: `context:` (active with xm_files + confounder_path).
    log_csv: per-iteration rows (epoch, iter, loss, lr, loss_cls, loss_er, loss_ecr).
    """
    check_train_cfg(cfg)
    active = context_active(context_cfg, xm_files, confounder_path, "train_seam")
    ctx = context_cfg if active else None
    confounder = load_confounder(confounder_path)[0] if active else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_seam(cfg, ctx, manifest.num_fg, confounder)
    load_trunk(model, cfg.get("pretrained"), "seam.pretrained")
    model = _freeze(model.to(device), cfg)
    dataset = SeamDataset(manifest, ids, cfg, seed, context_xm_files(ctx, xm_files) if active else None)
    batch_size = int(cfg["batch_size"])
    loader, batches = shuffled_loader(dataset, batch_size, loader_options(num_workers, device, seed))
    if len(loader) == 0:
        raise config_error("seam.batch_size", f"{batch_size} exceeds the {len(dataset)} training images")
    max_step = int(cfg["epochs"]) * len(loader)
    optimizer = make_optimizer(model, float(cfg["lr"]), cfg)
    resume = Resume(out_path, checkpoint, fingerprint("train_seam", cfg, ctx, list(ids), seed, str(confounder_path)))
    step_fn = functools.partial(
        _seam_step, model=model, optimizer=optimizer, max_step=max_step, cfg=cfg, ctx=ctx, device=device
    )
    cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # dropout masks from `seed`, global RNG untouched
        torch.manual_seed(seed)
        rows = fit(
            Loop(
                name="train_seam",
                model=model,
                optimizer=optimizer,
                max_step=max_step,
                steps_per_epoch=len(loader),
                batches=batches,
                step=step_fn,
                resume=resume,
                generators=[loader.generator],
            )
        )
    save_model(
        out_path,
        "seam",
        model,
        seam_config(cfg, ctx, manifest.num_fg),
        class_names=list(manifest.class_names),
        seed=int(seed),
        num_images=len(dataset),
        final_loss=rows[-1]["loss"],
    )
    if log_csv is not None:
        write_csv(log_csv, pd.DataFrame(rows, columns=LOG_COLUMNS))
    resume.finish()


def _seam_step(
    batch: dict, step: int, epoch: int, *, model: SEAMNet, optimizer, max_step: int, cfg: dict, ctx: dict | None, device
) -> dict:
    """One siamese SGD step (module docstring, step 1; `fit` calls it with the batch, the
    0-based step and the epoch); the log row."""
    lr = poly_step(optimizer, step, max_step, float(cfg["poly_power"]))
    scale = float(cfg["siamese_scale"])
    x1 = batch["image"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    xm = None if ctx is None else encode_xm_batch(batch["xm"], ctx, model.num_fg).to(device)
    x2 = F.interpolate(x1, scale_factor=scale, mode="bilinear", align_corners=True)
    cam1, rv1, logits1 = model(x1, xm, with_logits=True)
    cam2, rv2, logits2 = model(x2, xm, with_logits=True)
    loss, parts = seam_losses(cam1, rv1, logits1, cam2, rv2, logits2, y, scale, float(cfg["ecr_top"]))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"epoch": epoch, "iter": step, "loss": float(loss.detach()), "lr": lr, **parts}


# ----------------------------------------------------------------------------- CAM inference


def compute_seam_cam(
    model: SEAMNet,
    img_u8: np.ndarray,
    keys: np.ndarray,
    scales: list[float],
    flip: bool,
    device: torch.device | str,
    xm: np.ndarray | None = None,
) -> np.ndarray:
    """infer_SEAM's normalised CAMs of the image's classes: float32[K, H, W] (module docstring, step 2)."""
    h, w = img_u8.shape[:2]
    keys_t = torch.as_tensor(np.asarray(keys, dtype=np.int64) + 1, device=device)
    if len(keys_t) == 0:
        return np.zeros((0, h, w), np.float32)
    xm_batch = context_batch(model, xm, (h, w), flip, device)
    total = torch.zeros((len(keys_t), h, w), device=device)
    with torch.inference_mode():
        for s in scales:
            size = (round(h * s), round(w * s))
            x = torch.from_numpy(normalize(rescale_image(img_u8, size, "pil_bicubic"))).to(device)
            batch = torch.stack([x, x.flip(-1)]) if flip else x[None]
            _, cam_rv = model(batch, xm_batch)
            up = F.interpolate(cam_rv[:, keys_t], (h, w), mode="bilinear", align_corners=False)
            total += up[0] + (up[1].flip(-1) if flip else 0)
    total = F.relu(total)
    flat = total.flatten(1)
    hi = flat.amax(dim=1)[:, None, None]
    lo = flat.amin(dim=1)[:, None, None]
    total = torch.where(total < lo + EPS, torch.zeros_like(total), total)
    return ((total - lo - EPS) / (hi - lo + EPS)).cpu().numpy().astype(np.float32)


def make_seam_cams(
    manifest: Manifest,
    ids: list[str],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: dict,
    device: torch.device | str,
    xm_files: dict[str, Path] | None = None,
) -> None:
    """Write out_dir/<id>.npz (save_cam format) of SEAM's CAMs; existing files are kept.

    cfg: {"cam_scales", "cam_flip"} (the seam section's); xm_files for context models."""
    require_keys(cfg, ("cam_scales", "cam_flip"), "seam")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_seam(model_path, device)
    if model.uses_context and xm_files is None:
        raise ValueError(f"{model_path}: context SEAM but no X_m files (--xm-dir) given")
    if model.uses_context:
        xm_files = context_xm_files(model.context_cfg, xm_files)
    todo = [i for i in ids if not (out_dir / f"{i}{CAM_SUFFIX}").exists()]
    log.info("make_seam_cams: %d of %d images to do -> %s", len(todo), len(ids), out_dir)
    for image_id in track(todo, "seam_cam"):
        img = load_image(manifest.image_file(image_id))
        keys = np.asarray(manifest.labels[image_id], dtype=np.int64) - 1
        xm = load_xm(xm_files, image_id, img.shape[:2]) if model.uses_context else None
        high_res = compute_seam_cam(model, img, keys, list(cfg["cam_scales"]), bool(cfg["cam_flip"]), device, xm)
        strided = (-(-img.shape[0] // CAM_STRIDE), -(-img.shape[1] // CAM_STRIDE))
        cam = F.interpolate(torch.from_numpy(high_res)[None], strided, mode="bilinear", align_corners=False)[0]
        save_cam(out_dir / f"{image_id}{CAM_SUFFIX}", keys, cam.numpy(), high_res)


# ----------------------------------------------------------------------------- CRF labels


def crf_scores(img: np.ndarray, high_res: np.ndarray, alpha: float, crf: dict) -> np.ndarray:
    """CRF of [(1 - max fg)^alpha, fg maps]: float32[K + 1, H, W] (infer_SEAM _crf_with_alpha)."""
    bg = np.power(1 - high_res.max(axis=0, keepdims=True), alpha) if len(high_res) else np.ones((1, *img.shape[:2]))
    return crf_inference_prob(img, np.concatenate([bg, high_res]).astype(np.float32), crf)


def affinity_label(la: np.ndarray, ha: np.ndarray) -> np.ndarray:
    """uint8[h, w] indices into [bg, keys]: la's argmax, 255 where la says background, 0 where
    ha says background, 255 where no score (all channels < 1e-5: padding)."""
    label = la.argmax(axis=0).astype(np.uint8)
    out = label.copy()
    out[label == 0] = 255
    out[ha.argmax(axis=0) == 0] = 0
    out[np.maximum(la.max(axis=0), ha.max(axis=0)) < EPS] = 255
    return out


def make_seam_crf_labels(
    manifest: Manifest,
    ids: list[str],
    cam_files: dict[str, Path],
    out_dir: str | os.PathLike,
    cfg: dict,
    workers: int = 1,
) -> None:
    """Write out_dir/<id>.npz (keys, la, ha) and <id>.png (module docstring, step 3); resumes.

    The call shape of conta_core.steps.ir_label.make_ir_labels (the make_ir_label rule of
    every method): workers CRF processes (conta_core.steps.ir_label.map_tasks; the result
    does not depend on it). Ids whose PNG exists already are skipped.
    """
    require_keys(cfg, ("crf_alphas", "crf"), "seam")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    no_cam = [i for i in ids if i not in cam_files]
    if no_cam:
        raise ValueError(f"no CAM file for image id(s) {no_cam[:10]} ({len(no_cam)} in all)")
    tasks = [
        (i, manifest.image_file(i), Path(cam_files[i]), out_dir) for i in ids if not (out_dir / f"{i}.png").exists()
    ]
    map_tasks(functools.partial(_seam_crf_file, cfg=cfg), tasks, workers, "seam_crf")


def _seam_crf_file(task: tuple[str, Path, Path, Path], cfg: dict) -> str:
    """Worker: one image's <id>.npz (la / ha scores) and then <id>.png (the AffinityNet label,
    class ids; written last: it marks the image done); task = (id, image, cam, out_dir)."""
    image_id, image_path, cam_path, out_dir = task
    lo_alpha, hi_alpha = (float(a) for a in cfg["crf_alphas"])
    img = load_image(image_path)
    cam = load_cam(cam_path)
    keys = np.asarray(cam["keys"], dtype=np.int64)
    la = crf_scores(img, cam["high_res"], lo_alpha, cfg["crf"])
    ha = crf_scores(img, cam["high_res"], hi_alpha, cfg["crf"])
    with atomic_path(out_dir / f"{image_id}{LABEL_SUFFIX}") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, keys=keys, la=la.astype(np.float16), ha=ha.astype(np.float16))
    lut = np.zeros(256, np.uint8)
    lut[: len(keys) + 1] = np.concatenate([[0], keys + 1])
    lut[255] = 255
    save_label_png(out_dir / f"{image_id}.png", lut[affinity_label(la, ha)])
    return image_id


def load_crf_label(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in ("keys", "la", "ha")}


# ----------------------------------------------------------------------------- AffinityNet


class AffinityDataset(Dataset):
    """train_aff items: {"image": float32[3, S, S], "bg", "fg", "neg": float32[D, N] pair labels}."""

    def __init__(
        self,
        manifest: Manifest,
        ids: list[str],
        label_files: dict[str, Path],
        crop: int,
        radius: int,
        seed: int,
        jitter=None,
        scale: float = 1.0,
    ):
        if crop % 8:
            raise config_error("seam.aff.crop_size", f"must be a multiple of 8, got {crop}")
        self.manifest, self.ids, self.files = manifest, list(ids), label_files
        self.crop, self.radius, self.seed, self.epoch = int(crop), int(radius), int(seed), 0
        self.scale = float(scale)  # seam.aff.scale [OURS]: image PIL bicubic, la / ha nearest
        self.jitter = jitter  # seam.color_jitter: on the full image first, as train_aff.py
        missing = [i for i in self.ids if i not in label_files]
        if missing:
            raise ValueError(f"train_affinity: image id {missing[0]!r} has no CRF label ({len(missing)} missing)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image_id = self.ids[index]
        img = load_image(self.manifest.image_file(image_id))
        if self.jitter is not None:
            img = color_jitter(img, self.jitter, rng)
        d = load_crf_label(self.files[image_id])
        k = d["la"].shape[0]
        labels = np.concatenate([d["la"].transpose(1, 2, 0), d["ha"].transpose(1, 2, 0)], axis=2)
        if self.scale != 1.0:
            size = scaled_size(img.shape[:2], self.scale)
            img, labels = pil_resize_image(img, size), resize_label(labels, size)
        img = normalize(img).transpose(1, 2, 0)
        stack = np.concatenate([img, labels], axis=2).astype(np.float32)
        stack, _ = random_crop(stack, [], self.crop, rng, img_pad=0.0)
        stack, _ = random_hflip(stack, [], rng)
        s = self.crop // 8
        pooled = stack[:, :, 3:].reshape(s, 8, s, 8, 2 * k).mean(axis=(1, 3))
        label = affinity_label(pooled[:, :, :k].transpose(2, 0, 1), pooled[:, :, k:].transpose(2, 0, 1))
        bg, fg, neg = affinity_labels(label, effective_radius(self.radius, (s, s)))  # as the network's pairs
        image = np.ascontiguousarray(stack[:, :, :3].transpose(2, 0, 1))
        return {"image": image, "bg": bg, "fg": fg, "neg": neg, "id": image_id}


def train_affinity(
    manifest: Manifest,
    ids: list[str],
    label_files: dict[str, Path],
    cfg: dict,
    device: torch.device | str,
    out_path: str | os.PathLike,
    seed: int,
    log_csv: str | os.PathLike | None = None,
    seam_path: str | os.PathLike | None = None,
    num_workers: int = 0,
    checkpoint: dict | None = None,
) -> None:
    """Train AffinityNet (module docstring, step 4) and save an "affinity" checkpoint.

    cfg: the `seam:` section (width, freezing, optimiser keys) with its `aff:` subsection.
    seam_path: the round's SEAM checkpoint (seam.aff.backbone_init = seam)."""
    check_train_cfg(cfg)
    aff = cfg["aff"]
    require_keys(aff, AFF_KEYS, "seam.aff")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AffinityNet(float(cfg["width"]), int(aff["radius"]))
    if aff["backbone_init"] == "seam":
        if seam_path is None:
            raise config_error("seam.aff.backbone_init", "is 'seam' but no SEAM checkpoint was given")
        state = load_model(seam_path, "seam")["state_dict"]
        own = model.state_dict()
        model.load_state_dict(
            {
                k: v
                for k, v in state.items()
                if k in own and own[k].shape == v.shape and not k.startswith(("f8_", "f9"))
            },
            strict=False,
        )
    elif aff["backbone_init"] == "pretrained":
        load_trunk(model, aff.get("pretrained"), "seam.aff.pretrained")
    model = _freeze(model.to(device), cfg)
    scale = float(aff.get("scale", 1.0))
    dataset = AffinityDataset(
        manifest, ids, label_files, int(aff["crop_size"]), int(aff["radius"]), seed, cfg.get("color_jitter"), scale
    )
    batch_size = int(aff["batch_size"])
    loader, batches = shuffled_loader(dataset, batch_size, loader_options(num_workers, device, seed))
    if len(loader) == 0:
        raise config_error("seam.aff.batch_size", f"{batch_size} exceeds the {len(dataset)} training images")
    max_step = int(aff["epochs"]) * len(loader)
    optimizer = make_optimizer(model, float(aff["lr"]), cfg)
    resume = Resume(out_path, checkpoint, fingerprint("train_affinity", cfg, list(ids), seed, str(seam_path)))
    step_fn = functools.partial(
        _aff_step, model=model, optimizer=optimizer, max_step=max_step, power=float(cfg["poly_power"]), device=device
    )
    cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        rows = fit(
            Loop(
                name="train_aff",
                model=model,
                optimizer=optimizer,
                max_step=max_step,
                steps_per_epoch=len(loader),
                batches=batches,
                step=step_fn,
                resume=resume,
                generators=[loader.generator],
            )
        )
    config = {"affinity": {"width": float(cfg["width"]), "radius": int(aff["radius"]), "scale": scale}}
    save_model(
        out_path, "affinity", model, config, seed=int(seed), num_images=len(dataset), final_loss=rows[-1]["loss"]
    )
    if log_csv is not None:
        write_csv(log_csv, pd.DataFrame(rows, columns=AFF_LOG_COLUMNS))
    resume.finish()


def _aff_step(
    batch: dict, step: int, epoch: int, *, model: AffinityNet, optimizer, max_step: int, power: float, device
) -> dict:
    """One SGD step on AffinityNet's affinity loss (module docstring, step 4); the log row."""
    lr = poly_step(optimizer, step, max_step, power)
    aff = model(batch["image"].to(device, non_blocking=True))
    labels = [batch[k].to(device, non_blocking=True) for k in ("bg", "fg", "neg")]
    loss, parts = affinity_loss(aff, *labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"epoch": epoch, "iter": step, "loss": float(loss.detach()), "lr": lr, **parts}


# ----------------------------------------------------------------------------- random walk


def make_seam_pseudo_masks(
    manifest: Manifest,
    ids: list[str],
    cam_files: dict[str, Path],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: dict,
    device: torch.device | str,
) -> None:
    """Write out_dir/<id>.png pseudo-masks by AffinityNet's random walk (module docstring, step 5).

    cfg: the `seam.walk` section {"beta", "logt", "alpha"}."""
    require_keys(cfg, ("beta", "logt", "alpha"), "seam.walk")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_affinity(model_path, device)
    todo = [i for i in ids if not (out_dir / f"{i}.png").exists()]
    for image_id in track(todo, "seam_walk"):
        if image_id not in cam_files:
            raise ValueError(f"image id {image_id!r}: no CAM file")
        img = load_image(manifest.image_file(image_id))
        cam = load_cam(cam_files[image_id])
        keys = np.asarray(cam["keys"], dtype=np.int64)
        size = img.shape[:2]
        if cam["high_res"].shape[-2:] != size:
            raise ValueError(
                f"image id {image_id!r}: CAM {cam_files[image_id]} is {cam['high_res'].shape[-2:]}, the image {size}"
            )
        if model.scale != 1.0:  # the scale the AffinityNet was trained at (seam.aff.scale)
            img = pil_resize_image(img, scaled_size(size, model.scale))
        x = torch.from_numpy(normalize(img))[None].to(device)
        with torch.inference_mode():
            idx = walk_labels(
                model,
                x,
                torch.from_numpy(cam["high_res"]).to(device),
                float(cfg["beta"]),
                int(cfg["logt"]),
                float(cfg["alpha"]),
                out_size=size,
            )
        class_ids = np.concatenate([[0], keys + 1]).astype(np.uint8)
        save_label_png(out_dir / f"{image_id}.png", class_ids[idx.cpu().numpy()])
