"""Training of the multi-label CAM classifier (IRNet train_cam), with CONTA context for t > 0.

Loss: multilabel soft-margin (paper Eq. 2). Optimiser: SGD with two groups, the backbone at
classifier.lr and the new layers (classifier, context module, block adapters) at
lr * lr_new_mult, momentum / weight_decay from the config, poly decay per iteration
lr = lr0 * (1 - step / max_step) ** poly_power. Batches drop_last, shuffled with a seeded
torch.Generator; the dataset's set_epoch(epoch) is called each epoch.

Context (round t > 0): active iff context.mode is "conta" or "placebo" (every image gets
another training image's X_m, conta_core.context.placebo_partners) and a confounder file is
given. The per-iteration log then also holds the gradient norms reaching W_1, W_2 and the
classifier's weights on the M channel (block 5), for the context diagnostics.
The X_m label map of each image (previous round's segmentation predictions, or pseudo-masks
when context.confounder_source = pseudo) goes through the image's augmentation inside the
dataset, then `encode_xm` to context.size here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from conta_core.confounder import load_confounder
from conta_core.context import encode_xm
from conta_core.data.manifest import Manifest
from conta_core.data.torch_datasets import ClassificationDataset
from conta_core.io import save_torch, write_csv
from conta_core.models.classifier import ACTIVE_MODES, CAMNet, build_classifier, context_xm_files
from conta_core.runtime import loader_options, progress_enabled

log = logging.getLogger("conta.train_cls")

GRAD_COLUMNS = ("grad_w1", "grad_w2", "grad_m_weight")  # train_log.csv columns of context rounds
CLS_KEYS = ("epochs", "batch_size", "lr", "lr_new_mult", "momentum", "weight_decay", "poly_power",
            "crop_size", "scale_range")


def make_dataset(manifest: Manifest, ids: list[str], cls_cfg: dict, seed: int,
                 xm_files: dict[str, Path] | None = None) -> Dataset:
    """conta_core.data.torch_datasets.ClassificationDataset with the classifier augmentation."""
    return ClassificationDataset(manifest, ids, crop_size=int(cls_cfg["crop_size"]),
                                 scale_range=tuple(cls_cfg["scale_range"]), seed=seed, xm_files=xm_files)


def _check_cfg(cls_cfg: dict) -> None:
    for key in CLS_KEYS:
        if key not in cls_cfg:
            raise ValueError(f"classifier.{key}: missing from the classifier config")


def _context_active(context_cfg: dict | None, xm_files, confounder_path) -> bool:
    """Context on iff mode is conta or placebo and a confounder is given (round t > 0)."""
    mode = (context_cfg or {}).get("mode", "none")
    if mode not in ACTIVE_MODES:
        if confounder_path is not None or xm_files is not None:
            log.warning("context.mode = %s: ignoring the given X_m files / confounder", mode)
        return False
    if confounder_path is None:
        if xm_files is not None:
            raise ValueError("train_classifier: X_m files given without a confounder file")
        log.info("context.mode = %s but no confounder: training the plain (round-0) classifier", mode)
        return False
    if xm_files is None:
        raise ValueError(f"train_classifier: confounder {confounder_path} given without X_m files")
    return True


def _encode_batch(xm: torch.Tensor, context_cfg: dict, num_fg: int) -> torch.Tensor:
    """uint8[B, S, S] augmented X_m -> float32[B, h, w] (context.xm_encoding, context.size)."""
    size = (int(context_cfg["size"][0]), int(context_cfg["size"][1]))
    enc = [encode_xm(m, context_cfg["xm_encoding"], num_fg, size) for m in xm.numpy()]
    return torch.from_numpy(np.stack(enc))


def make_optimizer(model: CAMNet, cls_cfg: dict) -> torch.optim.SGD:
    """SGD, groups (backbone: lr, new layers: lr * lr_new_mult, context module W_1/W_2:
    lr * lr_new_mult * context.lr_mult); group["initial_lr"] kept for poly."""
    lr = float(cls_cfg["lr"])
    groups = model.optimizer_groups(lr, lr * float(cls_cfg["lr_new_mult"]))
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.SGD(groups, lr=lr, momentum=float(cls_cfg["momentum"]),
                           weight_decay=float(cls_cfg["weight_decay"]))


def poly_step(optimizer: torch.optim.Optimizer, step: int, max_step: int, power: float) -> float:
    """Set lr = initial_lr * (1 - step / max_step) ** power in every group; return the base-group lr."""
    factor = (1.0 - step / max_step) ** power
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def train_classifier(
    manifest: Manifest,
    ids: list[str],
    cls_cfg: dict,
    context_cfg: dict | None,
    device: torch.device | str,
    out_path: str | os.PathLike,
    seed: int,
    log_csv: str | os.PathLike | None = None,
    xm_files: dict[str, Path] | None = None,
    confounder_path: str | os.PathLike | None = None,
    num_workers: int = 0,
    dataset: Dataset | None = None,
) -> None:
    """Train the CAM classifier on `ids` and save {"state_dict", "config", ...} to out_path.

    cls_cfg / context_cfg: the `classifier:` / `context:` config sections. xm_files: image id
    -> X_m label PNG and confounder_path: HDF5 of conta_core.confounder (both for t > 0).
    log_csv: per-iteration table (epoch, iter, loss, lr). num_workers: DataLoader worker
    processes (config loader_workers; results do not depend on it). dataset: optional
    replacement of the manifest dataset with the same items (tests, custom data).
    """
    _check_cfg(cls_cfg)
    active = _context_active(context_cfg, xm_files, confounder_path)
    confounder = load_confounder(confounder_path)[0] if active else None
    num_fg = manifest.num_fg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(cls_cfg, context_cfg if active else None, num_fg, confounder)
    model.to(device).train()
    if dataset is None:
        dataset = make_dataset(manifest, ids, cls_cfg, seed, context_xm_files(context_cfg, xm_files) if active else None)
    batch_size = int(cls_cfg["batch_size"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        **loader_options(num_workers, device, seed))
    epochs = int(cls_cfg["epochs"])
    max_step = epochs * len(loader)
    if max_step == 0:
        raise ValueError(f"classifier.batch_size: {batch_size} exceeds the {len(dataset)} training images (drop_last)")
    optimizer = make_optimizer(model, cls_cfg)
    rows = _train_loop(model, loader, optimizer, epochs, max_step, cls_cfg, context_cfg if active else None, device)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = {"classifier": dict(cls_cfg), "context": dict(context_cfg) if active else None, "num_fg": num_fg}
    save_torch(out_path, {"state_dict": state, "config": config, "class_names": list(manifest.class_names),
                          "seed": int(seed), "num_images": len(dataset), "final_loss": rows[-1]["loss"]})
    if log_csv is not None:
        columns = ["epoch", "iter", "loss", "lr"] + (list(GRAD_COLUMNS) if active else [])
        write_csv(log_csv, pd.DataFrame(rows, columns=columns))


def context_grad_norms(model: CAMNet) -> dict[str, float]:
    """L2 norms of this step's gradients reaching W_1, W_2 and the classifier's M-channel weights."""
    def norm(t: torch.Tensor | None) -> float:
        return 0.0 if t is None else float(t.detach().norm())

    grad_m = model.classifier.weight.grad
    m_channel = None if grad_m is None or 5 not in model.blocks else grad_m[:, -1]
    return {"grad_w1": norm(model.context.w1.weight.grad), "grad_w2": norm(model.context.w2.weight.grad),
            "grad_m_weight": norm(m_channel)}


def _train_loop(model: CAMNet, loader: DataLoader, optimizer: torch.optim.Optimizer, epochs: int, max_step: int,
                cls_cfg: dict, context_cfg: dict | None, device) -> list[dict]:
    """Run the epochs; returns the per-iteration log rows."""
    rows, step = [], 0
    bar = tqdm(total=max_step, desc="train_cls", disable=not progress_enabled())
    for epoch in range(epochs):
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, 0.0, 0
        for batch in loader:
            lr = poly_step(optimizer, step, max_step, float(cls_cfg["poly_power"]))
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            xm = None
            if context_cfg is not None:
                xm = _encode_batch(batch["xm"], context_cfg, model.num_fg).to(device, non_blocking=True)
            logits = model(x, xm)
            loss = F.multilabel_soft_margin_loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            row = {"epoch": epoch, "iter": step, "loss": float(loss.detach()), "lr": lr}
            if context_cfg is not None:
                row.update(context_grad_norms(model))
            optimizer.step()
            loss_value = row["loss"]
            rows.append(row)
            loss_sum += loss_value * len(y)
            correct += float(((logits.detach() > 0).float() == y).float().sum())
            seen += len(y)
            step += 1
            bar.update(1)
        # accuracy: fraction of (image, class) decisions right at sigmoid 0.5
        log.info("epoch %d/%d: loss %.4f, label accuracy %.4f", epoch + 1, epochs, loss_sum / seen,
                 correct / (seen * model.num_fg))
    bar.close()
    return rows
