"""Training of the multi-label CAM classifier (IRNet train_cam), with CONTA context for t > 0.

Loss: multilabel soft-margin (paper Eq. 2). Optimiser: SGD with two groups, the backbone at
classifier.lr and the new layers (classifier, context module, block adapters) at
lr * lr_new_mult, momentum / weight_decay from the config, poly decay per iteration
lr = lr0 * (1 - step / max_step) ** poly_power. Batches drop_last, shuffled with a seeded
torch.Generator; the dataset's set_epoch(epoch) is called each epoch.

Context (round t > 0): active iff context.mode is "conta" or "placebo" (every image gets
another training image's X_m, conta_core.data.xm.placebo_partners) and a confounder file is
given. The per-iteration log then also holds the gradient norms reaching W_1, W_2 and the
classifier's weights on the M channel (block 5), for the context diagnostics.
The X_m label map of each image (previous round's segmentation predictions, or pseudo-masks
when context.confounder_source = pseudo) goes through the image's augmentation inside the
dataset, then `encode_xm` to context.size here.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from conta_core.data.manifest import Manifest
from conta_core.data.torch_datasets import ClassificationDataset
from conta_core.infra.checkpoint import save_model
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import write_csv
from conta_core.infra.training import Loop, Resume, fingerprint, fit, loader_options, poly_lr, shuffled_loader
from conta_core.models.classifier import CAMNet, build_classifier, context_active, context_xm_files
from conta_core.models.context import encode_xm_batch
from conta_core.steps.confounder import load_confounder

log = logging.getLogger("conta.train_cls")

GRAD_COLUMNS = ("grad_w1", "grad_w2", "grad_m_weight")  # train_log.csv columns of context rounds
CLS_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_new_mult",
    "momentum",
    "weight_decay",
    "poly_power",
    "crop_size",
    "scale_range",
)


def make_dataset(
    manifest: Manifest, ids: list[str], cls_cfg: dict, seed: int, xm_files: dict[str, Path] | None = None
) -> Dataset:
    """conta_core.data.torch_datasets.ClassificationDataset with the classifier augmentation."""
    return ClassificationDataset(
        manifest,
        ids,
        crop_size=int(cls_cfg["crop_size"]),
        scale_range=tuple(cls_cfg["scale_range"]),
        seed=seed,
        xm_files=xm_files,
    )


def _check_cfg(cls_cfg: dict) -> None:
    require_keys(cls_cfg, CLS_KEYS, "classifier")


def make_optimizer(model: CAMNet, cls_cfg: dict) -> torch.optim.SGD:
    """SGD, groups (backbone: lr, new layers: lr * lr_new_mult, context module W_1/W_2:
    lr * lr_new_mult * context.lr_mult); group["initial_lr"] kept for poly."""
    lr = float(cls_cfg["lr"])
    groups = model.optimizer_groups(lr, lr * float(cls_cfg["lr_new_mult"]))
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.SGD(
        groups, lr=lr, momentum=float(cls_cfg["momentum"]), weight_decay=float(cls_cfg["weight_decay"])
    )


def poly_step(optimizer: torch.optim.Optimizer, step: int, max_step: int, power: float) -> float:
    """Set every group's lr to poly_lr(initial_lr, ...); return the base-group lr."""
    for g in optimizer.param_groups:
        g["lr"] = poly_lr(g["initial_lr"], step, max_step, power)
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
    checkpoint: dict | None = None,
) -> None:
    """Train the CAM classifier on `ids` and save {"state_dict", "config", ...} to out_path.

    cls_cfg / context_cfg: the `classifier:` / `context:` config sections. xm_files: image id
    -> X_m label PNG and confounder_path: HDF5 of conta_core.steps.confounder (both for t > 0).
    log_csv: per-iteration table (epoch, iter, loss, lr). num_workers: DataLoader worker
    processes (config loader_workers; results do not depend on it). dataset: optional
    replacement of the manifest dataset with the same items (tests, custom data).
    checkpoint: the `checkpoint` config section (conta_core.infra.training: resumable checkpoints
    in <out_path>.resume/, resumed by a rerun).
    """
    _check_cfg(cls_cfg)
    active = context_active(context_cfg, xm_files, confounder_path, "train_classifier")
    confounder = load_confounder(confounder_path)[0] if active else None
    num_fg = manifest.num_fg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(cls_cfg, context_cfg if active else None, num_fg, confounder)
    model.to(device).train()
    if dataset is None:
        dataset = make_dataset(
            manifest, ids, cls_cfg, seed, context_xm_files(context_cfg, xm_files) if active else None
        )
    batch_size = int(cls_cfg["batch_size"])
    loader, batches = shuffled_loader(dataset, batch_size, loader_options(num_workers, device, seed))
    epochs = int(cls_cfg["epochs"])
    max_step = epochs * len(loader)
    if max_step == 0:
        raise config_error(
            "classifier.batch_size", f"{batch_size} exceeds the {len(dataset)} training images (drop_last)"
        )
    optimizer = make_optimizer(model, cls_cfg)
    ctx = context_cfg if active else None
    resume = Resume(
        out_path,
        checkpoint,
        fingerprint("train_cls", cls_cfg, ctx, list(ids), seed, len(dataset), str(confounder_path)),
    )
    step_fn = functools.partial(
        _step,
        model=model,
        optimizer=optimizer,
        max_step=max_step,
        power=float(cls_cfg["poly_power"]),
        context_cfg=ctx,
        device=device,
    )
    rows = fit(
        Loop(
            name="train_cls",
            model=model,
            optimizer=optimizer,
            max_step=max_step,
            steps_per_epoch=len(loader),
            batches=batches,
            step=step_fn,
            resume=resume,
            generators=[loader.generator],
            end_epoch=functools.partial(_end_epoch, epochs, model.num_fg),
        )
    )
    config = {"classifier": dict(cls_cfg), "context": dict(context_cfg) if active else None, "num_fg": num_fg}
    save_model(
        out_path,
        "classifier",
        model,
        config,
        class_names=list(manifest.class_names),
        seed=int(seed),
        num_images=len(dataset),
        final_loss=rows[-1]["loss"],
    )
    if log_csv is not None:
        columns = ["epoch", "iter", "loss", "lr"] + (list(GRAD_COLUMNS) if active else [])
        write_csv(log_csv, pd.DataFrame(rows, columns=columns))
    resume.finish()


def context_grad_norms(model: CAMNet) -> dict[str, float]:
    """L2 norms of this step's gradients reaching W_1, W_2 and the classifier's M-channel weights."""

    def norm(t: torch.Tensor | None) -> float:
        return 0.0 if t is None else float(t.detach().norm())

    grad_m = model.classifier.weight.grad
    m_channel = None if grad_m is None or 5 not in model.blocks else grad_m[:, -1]
    return {
        "grad_w1": norm(model.context.w1.weight.grad),
        "grad_w2": norm(model.context.w2.weight.grad),
        "grad_m_weight": norm(m_channel),
    }


def _step(
    batch: dict,
    step: int,
    epoch: int,
    *,
    model: CAMNet,
    optimizer: torch.optim.Optimizer,
    max_step: int,
    power: float,
    context_cfg: dict | None,
    device,
) -> dict:
    """One SGD step (`fit` calls it with the batch, the 0-based step and the epoch); the row
    (epoch, iter, loss, lr, [grad norms], _correct, _n)."""
    lr = poly_step(optimizer, step, max_step, power)
    x = batch["image"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    xm = None
    if context_cfg is not None:
        xm = encode_xm_batch(batch["xm"], context_cfg, model.num_fg).to(device, non_blocking=True)
    logits = model(x, xm)
    loss = F.multilabel_soft_margin_loss(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    row = {"epoch": epoch, "iter": step, "loss": float(loss.detach()), "lr": lr}
    if context_cfg is not None:
        row.update(context_grad_norms(model))
    optimizer.step()
    row["_correct"] = float(((logits.detach() > 0).float() == y).float().sum())
    row["_n"] = len(y)
    return row


def _end_epoch(epochs: int, num_fg: int, epoch: int, rows: list[dict]) -> None:
    """Log the epoch's mean loss and label accuracy (fraction of (image, class) decisions right at 0.5)."""
    mine = [r for r in rows if r["epoch"] == epoch]
    seen = sum(r["_n"] for r in mine)
    loss = sum(r["loss"] * r["_n"] for r in mine) / seen
    log.info(
        "epoch %d/%d: loss %.4f, label accuracy %.4f",
        epoch + 1,
        epochs,
        loss,
        sum(r["_correct"] for r in mine) / (seen * num_fg),
    )
