"""AMN as a second seed method: training on the CAM seeds, multi-scale AMN maps, their format.

AMN (Lee, Kim, Shim, CVPR 2022; https://github.com/gaviotas/AMN). Per round t (method: amn) the round's CAM classifier and its
CRF-refined IR labels (the "first-stage seeds") come first; then

1. `train_amn`: AMN (conta_core.models.amn) learns a per-pixel classification of the C + 1
   classes from those seeds: soft-target cross-entropy with label smoothing
   (target 1 - eps, every other class eps / C), averaged separately over the background-seed
   and the foreground-seed pixels, the two means weighted 1/2 each; seed pixels 255 ignored.
   The seeds are resized (nearest, pixel centres) from the crop to the logit size. Adam,
   backbone at amn.lr, new layers (label encoder, ASPP, context module) at
   amn.lr * amn.lr_new_mult, coupled weight decay, constant learning rate. For t > 0 the
   network has the round's CONTA context module (same X_m, confounder and `context:` config
   as the CAM classifier).
2. `compute_amn_cam` / `make_amn_cams`: per scale, the logits of the image and of its
   flip (flipped back) are averaged, resized bilinearly to stride 4 and to H x W, averaged
   over the scales; softmax over the C + 1 classes; the channels [background] + image
   classes are min-max normalised per channel, but only at pixels where the first-stage seed
   is not background (there the raw probability is kept). The K foreground maps are saved in
   the standard CAM format (conta_core.infra.fileio.save_cam), so eval_cam, make_ir_label and the
   random walk read them unchanged (the walk raises them to amn.rw_power).

[OURS] deviations, on purpose:
- A batch without background (or without foreground) seed pixels uses the other mean alone
  (the official code divides by zero).
- AMN's own background channel is not saved: every consumer drops it (eval and IR labels use
  a constant threshold plane, the walk propagates the foreground maps); it still takes part
  in the softmax and its normalisation, as in the official code. The saved maps lie in
  [0, 1] but are not divided by their max (a foreground-seed max is 1 up to 1e-5).
- The label conditioning at inference uses the image's GT tags, as in AMN.
- amn.backbone_init = classifier (default on CPU, no ImageNet weights) starts AMN from the
  round's CAM classifier (backbone and context module); AMN itself uses ImageNet weights
  (backbone_init = pretrained, config/voc12.yaml).
- Dropout at inference (the official code's quirk) is off unless amn.inference_dropout.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from conta_core.data.manifest import Manifest
from conta_core.data.torch_datasets import XM_PAD, ClassificationDataset
from conta_core.data.transforms import augment, resize_label
from conta_core.data.xm import load_xm
from conta_core.infra.checkpoint import load_model, save_model
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import CAM_SUFFIX, IGNORE_LABEL, load_image, load_map_for, save_cam, write_csv
from conta_core.infra.progress import track
from conta_core.infra.training import Loop, Resume, fingerprint, fit, loader_options, shuffled_loader
from conta_core.models.amn import AMNNet, build_amn, check_model_cfg, init_from_classifier, load_amn
from conta_core.models.classifier import context_active, context_xm_files
from conta_core.models.context import encode_xm_batch
from conta_core.steps.cam import NORM_EPS, context_batch, multiscale_sum
from conta_core.steps.confounder import load_confounder

log = logging.getLogger("conta.amn")

CAM_STRIDE = 4
TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_new_mult",
    "weight_decay",
    "crop_size",
    "scale_range",
    "label_smoothing",
)
INFER_KEYS = ("scales", "flip")
LOG_COLUMNS = ["epoch", "iter", "loss", "lr", "loss_bg", "loss_fg"]


# ----------------------------------------------------------------------------- data


class AMNDataset(ClassificationDataset):
    """Training items of AMN: the classifier's augmentation applied to image, seed and X_m.

    Item: {"image": float32[3, S, S], "label": float32[C] multi-hot, "ir_label": int64[S, S]
    (first-stage IR label, padded with 255), "id", and with xm_files "xm": uint8[S, S]}.
    """

    def __init__(
        self,
        manifest: Manifest,
        ids: list[str],
        ir_label_files: dict[str, Path],
        crop_size: int,
        scale_range: tuple[float, float],
        seed: int = 0,
        xm_files: dict[str, Path] | None = None,
    ):
        super().__init__(manifest, ids, crop_size, scale_range, seed, xm_files)
        self.ir_label_files = ir_label_files

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        img = load_image(self.manifest.image_file(image_id))
        maps = [load_map_for(self.ir_label_files, image_id, img.shape[:2], "IR label")]
        pads = [IGNORE_LABEL]
        if self.xm_files is not None:
            maps.append(load_xm(self.xm_files, image_id, img.shape[:2]))
            pads.append(XM_PAD)
        x, maps = augment(img, maps, self.rng(index), self.scale_range, self.crop_size, map_pad=pads)
        item = {
            "image": x,
            "label": self.manifest.label_vector(image_id),
            "ir_label": maps[0].astype(np.int64),
            "id": image_id,
        }
        if self.xm_files is not None:
            item["xm"] = maps[1].astype(np.uint8)
        return item


# ----------------------------------------------------------------------------- loss


def resize_ir_labels(ir_labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest (pixel-centre) resize of IR labels (the first-stage seeds) int64[B, S, S] -> int64[B, h, w]."""
    if tuple(ir_labels.shape[-2:]) == tuple(size):
        return ir_labels
    return F.interpolate(ir_labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()


def amn_loss(logits: torch.Tensor, ir_labels: torch.Tensor, eps: float) -> tuple[torch.Tensor, dict[str, float]]:
    """AMN's per-pixel classification loss (module docstring).

    logits: float32[B, C + 1, h, w]; ir_labels: int64[B, h, w] (0 bg, 1..C, 255 ignore);
    eps: label smoothing (amn.label_smoothing). Returns (loss, {"loss_bg", "loss_fg"}); a
    part without pixels is NaN in the dict and left out of the loss. Without any valid seed
    pixel the loss is 0 (with a graph, so backward() works).
    """
    n = logits.shape[1]
    if ir_labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"amn_loss: IR labels {tuple(ir_labels.shape)} do not match logits {tuple(logits.shape)}")
    valid = ir_labels != IGNORE_LABEL
    target = torch.where(valid, ir_labels, torch.zeros_like(ir_labels))
    if int(target.max()) >= n or int(target.min()) < 0:
        raise ValueError(f"amn_loss: IR labels must lie in 0..{n - 1} or be {IGNORE_LABEL}")
    logp = F.log_softmax(logits, dim=1)
    q = torch.full_like(logp, eps / (n - 1))
    q.scatter_(1, target[:, None], 1.0 - eps)
    ce = -(q * logp).sum(dim=1)
    parts, terms = {}, []
    for name, mask in (("loss_bg", valid & (ir_labels == 0)), ("loss_fg", valid & (ir_labels > 0))):
        if bool(mask.any()):
            term = ce[mask].mean()
            terms.append(term)
            parts[name] = float(term.detach())
        else:
            parts[name] = float("nan")
    loss = sum(terms) / len(terms) if terms else logits.sum() * 0.0
    return loss, parts


# ----------------------------------------------------------------------------- training


def check_train_cfg(cfg: dict) -> None:
    """ValueError naming the first missing or invalid amn.* training key."""
    check_model_cfg(cfg)
    require_keys(cfg, TRAIN_KEYS, "amn")
    if not 0.0 <= float(cfg["label_smoothing"]) < 1.0:
        raise config_error("amn.label_smoothing", f"expected [0, 1), got {cfg['label_smoothing']!r}")


def make_optimizer(model: AMNNet, cfg: dict) -> torch.optim.Adam:
    """Adam: backbone at amn.lr, new layers at amn.lr * amn.lr_new_mult, coupled weight decay."""
    lr = float(cfg["lr"])
    groups = model.optimizer_groups(lr, lr * float(cfg["lr_new_mult"]))
    return torch.optim.Adam(groups, lr=lr, weight_decay=float(cfg["weight_decay"]))


def _build_for_training(
    manifest: Manifest,
    cfg: dict,
    context_cfg: dict | None,
    confounder: np.ndarray | None,
    classifier_path: str | os.PathLike | None,
    seed: int,
) -> AMNNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_amn(cfg, context_cfg, manifest.num_fg, confounder)
    if cfg["backbone_init"] == "classifier":
        if classifier_path is None:
            raise config_error("amn.backbone_init", "is 'classifier' but no classifier checkpoint was given")
        state = load_model(classifier_path, "classifier", required=())["state_dict"]
        copied = init_from_classifier(model, state, str(classifier_path))
        log.info("initialised %d tensors from the CAM classifier %s", len(copied), classifier_path)
    return model


def train_amn(
    manifest: Manifest,
    ids: list[str],
    ir_label_files: dict[str, Path],
    cfg: dict,
    context_cfg: dict | None,
    device: torch.device | str,
    out_path: str | os.PathLike,
    seed: int,
    log_csv: str | os.PathLike | None = None,
    classifier_path: str | os.PathLike | None = None,
    xm_files: dict[str, Path] | None = None,
    confounder_path: str | os.PathLike | None = None,
    num_workers: int = 0,
    checkpoint: dict | None = None,
) -> None:
    """Train AMN on `ids` from the first-stage seeds and save {"state_dict", "config", ...}.

    ir_label_files: image id -> IR label PNG of the round's CAMs. cfg: the `amn:` section;
    context_cfg: the `context:` section (active with xm_files + confounder_path, t > 0).
    classifier_path: the round's cls/model.pth (amn.backbone_init = classifier).
    log_csv: one row per iteration (epoch, iter, loss, lr, loss_bg, loss_fg).
    num_workers: DataLoader worker processes (config loader_workers; results do not depend on it).
    checkpoint: the `checkpoint` config section (conta_core.infra.training: resumable checkpoints
    in <out_path>.resume/, resumed by a rerun).
    """
    check_train_cfg(cfg)
    missing = [i for i in ids if i not in ir_label_files]
    if missing:
        raise ValueError(f"train_amn: image id {missing[0]!r} has no IR label ({len(missing)} ids missing)")
    active = context_active(context_cfg, xm_files, confounder_path, "train_amn")
    confounder = load_confounder(confounder_path)[0] if active else None
    ctx = context_cfg if active else None
    model = _build_for_training(manifest, cfg, ctx, confounder, classifier_path, seed).to(device).train()
    dataset = AMNDataset(
        manifest,
        ids,
        ir_label_files,
        int(cfg["crop_size"]),
        tuple(cfg["scale_range"]),
        seed,
        context_xm_files(ctx, xm_files) if active else None,
    )
    batch_size = int(cfg["batch_size"])
    loader, batches = shuffled_loader(dataset, batch_size, loader_options(num_workers, device, seed))
    if len(loader) == 0:
        raise config_error("amn.batch_size", f"{batch_size} exceeds the {len(dataset)} training images")
    optimizer = make_optimizer(model, cfg)
    epochs = int(cfg["epochs"])
    resume = Resume(out_path, checkpoint, fingerprint("train_amn", cfg, ctx, list(ids), seed, str(confounder_path)))
    step_fn = functools.partial(
        _step, model=model, optimizer=optimizer, eps=float(cfg["label_smoothing"]), context_cfg=ctx, device=device
    )

    def end_epoch(epoch: int, rows: list[dict]) -> None:
        log.info(
            "epoch %d/%d: loss %.4f",
            epoch + 1,
            epochs,
            float(np.mean([r["loss"] for r in rows if r["epoch"] == epoch])),
        )

    cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # dropout masks from `seed`, global RNG untouched
        torch.manual_seed(seed)
        rows = fit(
            Loop(
                name="train_amn",
                model=model,
                optimizer=optimizer,
                max_step=epochs * len(loader),
                steps_per_epoch=len(loader),
                batches=batches,
                step=step_fn,
                resume=resume,
                generators=[loader.generator],
                end_epoch=end_epoch,
            )
        )
    config = {"amn": dict(cfg), "context": dict(ctx) if ctx else None, "num_fg": manifest.num_fg}
    save_model(
        out_path,
        "amn",
        model,
        config,
        class_names=list(manifest.class_names),
        seed=int(seed),
        num_images=len(dataset),
        final_loss=rows[-1]["loss"],
    )
    if log_csv is not None:
        write_csv(log_csv, pd.DataFrame(rows, columns=LOG_COLUMNS))
    resume.finish()


def _step(
    batch: dict,
    step: int,
    epoch: int,
    *,
    model: AMNNet,
    optimizer: torch.optim.Optimizer,
    eps: float,
    context_cfg: dict | None,
    device,
) -> dict:
    """One Adam step at the constant learning rate; the row (epoch, iter, loss, lr, loss_bg, loss_fg)."""
    x = batch["image"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    xm = None
    if context_cfg is not None:
        xm = encode_xm_batch(batch["xm"], context_cfg, model.num_fg).to(device, non_blocking=True)
    logits = model(x, y, xm)
    ir_labels = resize_ir_labels(batch["ir_label"].to(device, non_blocking=True), tuple(logits.shape[-2:]))
    loss, parts = amn_loss(logits, ir_labels, eps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"epoch": epoch, "iter": step, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"], **parts}


# ----------------------------------------------------------------------------- inference


def masked_minmax(probs: torch.Tensor, ir_bg: torch.Tensor) -> torch.Tensor:
    """AMN's normalisation: per channel (x - min) / (max - min + 1e-5) over the whole map,
    applied only where the first-stage seed is not background (raw values where it is).

    probs: float32[P, h, w]; ir_bg: bool[h, w] (IR label == 0). Returns float32[P, h, w].
    """
    if len(probs) == 0:
        return probs
    flat = probs.flatten(1)
    lo = flat.amin(dim=1)[:, None, None]
    hi = flat.amax(dim=1)[:, None, None]
    norm = (probs - lo) / (hi - lo + NORM_EPS)
    return torch.where(ir_bg[None], probs, norm)


def compute_amn_cam(
    model: AMNNet,
    img_u8: np.ndarray,
    keys: np.ndarray,
    ir_label: np.ndarray,
    scales: list[float],
    flip: bool,
    device: torch.device | str,
    xm: np.ndarray | None = None,
    resize: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """AMN maps of one image (module docstring, step 2).

    img_u8: uint8[H, W, 3]; keys: int[K] 0-based foreground classes of the image (the label
    vector given to AMN and the channels kept); ir_label: uint8[H, W] the first-stage IR label (seed);
    xm: uint8[H, W] X_m for context models; resize: `cam.resize` (per-scale image rescaling).
    high_res is resized straight to H x W, as make_amn_cam does (IRNet's make_cam aligns to 16).
    Returns (cam float32[K, ceil(H/4), ceil(W/4)], high_res float32[K, H, W]) in [0, 1].
    """
    h, w = img_u8.shape[:2]
    if ir_label.shape != (h, w):
        raise ValueError(f"compute_amn_cam: IR label {ir_label.shape} != image size {(h, w)}")
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    strided_size = (math.ceil(h / CAM_STRIDE), math.ceil(w / CAM_STRIDE))
    if len(keys) == 0:
        return np.zeros((0, *strided_size), np.float32), np.zeros((0, h, w), np.float32)
    if keys.min() < 0 or keys.max() >= model.num_fg:
        raise ValueError(f"compute_amn_cam: keys {keys.tolist()} outside 0..{model.num_fg - 1}")
    y = torch.zeros(1, model.num_fg, device=device)
    y[0, torch.as_tensor(keys, device=device)] = 1.0
    xm_batch = context_batch(model, xm, (h, w), flip, device)
    channels = torch.as_tensor(np.concatenate([[0], keys + 1]), device=device)
    runs = len(scales) * (2 if flip else 1)
    with torch.inference_mode():
        sums = multiscale_sum(
            lambda b: model(b, y.expand(len(b), -1), xm_batch), img_u8, scales, flip, device, resize, high_res_align=1
        )
        out = []
        for total, size in zip(sums, (strided_size, (h, w))):
            probs = torch.softmax(total / runs, dim=0)[channels]
            ir_bg = torch.from_numpy(resize_label(ir_label, size) == 0).to(device)
            out.append(masked_minmax(probs, ir_bg)[1:].float().cpu().numpy())
    return out[0], out[1]


def check_infer_cfg(cfg: dict) -> None:
    require_keys(cfg, INFER_KEYS, "cam", why="make_amn_cam uses the cam scales and flip")


def make_amn_cams(
    manifest: Manifest,
    ids: list[str],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: dict,
    device: torch.device | str,
    ir_label_files: dict[str, Path],
    xm_files: dict[str, Path] | None = None,
) -> None:
    """Write out_dir/<id>.npz (conta_core.infra.fileio.save_cam format) of the AMN maps; resumes.

    cfg: {"scales", "flip"} (the cam section's) and optional "inference_dropout" (amn's).
    ir_label_files: image id -> first-stage IR label PNG (normalisation mask); xm_files: image
    id -> X_m label PNG, required for context models.
    """
    check_infer_cfg(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_amn(model_path, device)
    model.set_inference_dropout(bool(cfg.get("inference_dropout", False)))
    if model.uses_context and xm_files is None:
        raise ValueError(f"{model_path}: context AMN but no X_m files (--xm-dir) given")
    if model.uses_context:
        xm_files = context_xm_files(model.context_cfg, xm_files)  # placebo: the partner's X_m
    todo = [i for i in ids if not (out_dir / f"{i}{CAM_SUFFIX}").exists()]
    log.info("make_amn_cams: %d of %d images to do -> %s", len(todo), len(ids), out_dir)
    for image_id in track(todo, "amn_cam"):
        img = load_image(manifest.image_file(image_id))
        keys = np.asarray(manifest.labels[image_id], dtype=np.int64) - 1
        ir_label = load_map_for(ir_label_files, image_id, img.shape[:2], "IR label")
        xm = load_xm(xm_files, image_id, img.shape[:2]) if model.uses_context else None
        cam, high_res = compute_amn_cam(
            model, img, keys, ir_label, cfg["scales"], bool(cfg["flip"]), device, xm, str(cfg.get("resize", "bilinear"))
        )
        save_cam(out_dir / f"{image_id}{CAM_SUFFIX}", keys, cam, high_res)
