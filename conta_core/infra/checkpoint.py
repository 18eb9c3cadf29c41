"""Final model files: one layout, one save/load pair, a kind tag.

Every trained model (`<round>/cls/model.pth`, `irn/model.pth`, `amn/model.pth`,
`seg/model.pth`, `pretrain/<backbone>.pth`) is a torch file of plain containers, read with
`torch.load(weights_only=True)` (no pickle of classes):

    {"kind": str,                         # one of KINDS
     "state_dict": {name: Tensor},        # on the CPU
     "config": dict,                      # what the loader needs to rebuild the network
     **meta}                              # plain values: seed, num_images, final_loss, ...

| kind | written by | config holds | loaded by |
| --- | --- | --- | --- |
| classifier | train_cls | classifier, context, num_fg | models.classifier.load_classifier, irn/amn init |
| irn | train_irn | the `irn` section | models.irn.edge_net_from_checkpoint |
| amn | train_amn | amn, context, num_fg | models.amn.load_amn |
| seam | train_cls (method seam: steps.seam.train_seam) | seam (width), context, num_fg | models.seam.load_seam (via load_classifier) |
| affinity | train_aff (method seam: steps.seam.train_affinity) | affinity (width, radius) | models.affinity.load_affinity |
| segmentation | train_seg | the `segmentation` section (+ num_classes in meta) | models.deeplab.load_deeplab, conta predict |
| pretrain | pretrain | the `pretrain` section | models.backbone.load_pretrained, steps.seam.load_trunk (as `pretrained:` weights) |

Resumable training checkpoints (`<model>.resume/step_N.pth`, conta_core.infra.training) are a
different, internal layout. Files written before the kind tag existed (no "kind") still
load when their structure fits [OURS: kept so that finished runs stay usable].
"""

from __future__ import annotations

import os
from typing import Any

import torch

from conta_core.infra.fileio import load_torch, save_torch

KINDS = ("classifier", "irn", "amn", "segmentation", "pretrain", "seam", "affinity")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r} (one of {', '.join(KINDS)})")


def cpu_state(model: torch.nn.Module | dict, drop_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state_dict (or of a state_dict), without keys under drop_prefix."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    return {k: v.detach().cpu() for k, v in state.items() if drop_prefix is None or not k.startswith(drop_prefix)}


def model_checkpoint(kind: str, model: torch.nn.Module | dict, config: dict, **meta: Any) -> dict:
    """The checkpoint dict of the layout above (state_dict copied to the CPU)."""
    _check_kind(kind)
    clash = {"kind", "state_dict", "config"} & set(meta)
    if clash:
        raise ValueError(f"checkpoint metadata may not be named {sorted(clash)}")
    return {"kind": kind, "state_dict": cpu_state(model), "config": config, **meta}


def save_model(path: str | os.PathLike, kind: str, model: torch.nn.Module | dict, config: dict, **meta: Any) -> None:
    """Write a final model file atomically (tmp + rename) in the layout above."""
    save_torch(path, model_checkpoint(kind, model, config, **meta))


def load_model(path: str | os.PathLike, kind: str, required: tuple[str, ...] = ("config",)) -> dict:
    """Read a final model file and check it: a dict with a state_dict, the `required` keys
    and, when tagged, the expected kind. Errors name the file and what is wrong."""
    _check_kind(kind)
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a {kind} checkpoint (no 'state_dict')")
    found = ckpt.get("kind")
    if found is not None and found != kind:
        raise ValueError(f"{path}: a {found} checkpoint, expected a {kind} checkpoint")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a {kind} checkpoint (needs {', '.join(repr(k) for k in missing)})")
    return ckpt
