"""Does the context carry signal? Diagnostics of a round's context classifier (CONTA / placebo).

For up to `max_images` images with an X_m (sorted ids of the evaluated split), with the X_m
each image is given by its context mode (its own for conta, its partner's for placebo) and,
as the swap, another image's X_m (conta_core.data.xm.placebo_xm_files applied once more):

- attention alpha float32[N, n]: normalised entropy H(alpha) / log n per image (1 = uniform),
  its mean and std over images, the mean max alpha, and the spread of each alpha_i over
  images (std over images, averaged over i);
- M float32[N, h, w]: std across images per pixel (averaged over pixels), spatial std within
  an image (averaged over images), mean value; `m_cv` = across-image std / mean;
- block 5 only: the classifier's weight share on the M channel (|w_cM| / mean_k |w_ck|,
  averaged over classes) and M's share of the CAM logits (mean |w_cM M| over
  mean(|sum_k w_ck F_k| + |w_cM M|), the image's classes, all pixels);
- `cam_change`: relative L1 change of the image's CAMs (scale 1, no flip) when its M is
  replaced by the swap's, mean over images: the direct test that the context matters. An
  image whose CAMs of its classes are zero everywhere changes by 0 when the swap's are zero
  too; when they are not, its relative change is undefined (it divided by zero: one such image
  put 2e11 into the mean of a SEAM run). [OURS] It is left out of the mean and counted in
  `cam_change_undefined` (cam_change None when every image is, an inert reason);
- from train_log.csv (train_cls): mean gradient norms reaching W_1, W_2 and the M-channel
  weights, first and last epoch.

`inert` is true when any of: alpha entropy > 0.999, m_cv < 0.01 or cam_change < 0.001
([OURS] thresholds; each is reported in `inert_reasons`). With `context.inject: xm` the
concatenated map is X_m itself and the attention is unused (alpha is the prior): the entropy
criterion is skipped, "M" in the measures is X_m, and `inject` says so. Output: one JSON dict per round,
round<t>/context_diagnostics.json.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import normalize
from conta_core.data.xm import load_xm, placebo_xm_files
from conta_core.infra.fileio import load_image, write_json
from conta_core.models.classifier import context_xm_files, load_classifier
from conta_core.steps.train_cls import GRAD_COLUMNS

log = logging.getLogger("conta.context_diagnostics")

INERT_ENTROPY = 0.999  # normalised alpha entropy above this: attention is uniform
INERT_M_CV = 0.01  # across-image std of M / mean M below this: the same M for every image
INERT_CAM_CHANGE = 0.001  # relative CAM change under the swap below this: CAMs ignore M


def _entropy(alpha: np.ndarray) -> np.ndarray:
    """Normalised entropy H / log n of each row of alpha float[N, n] (1 = uniform)."""
    a = np.clip(alpha, 1e-12, 1.0)
    return -(a * np.log(a)).sum(axis=1) / math.log(alpha.shape[1])


def _grad_summary(train_log: str | os.PathLike | None) -> dict:
    if train_log is None or not Path(train_log).is_file():
        return {}
    df = pd.read_csv(train_log)
    out = {}
    for col in GRAD_COLUMNS:
        if col in df:
            first, last = df[df["epoch"] == df["epoch"].min()], df[df["epoch"] == df["epoch"].max()]
            out[f"{col}_first_epoch"] = float(first[col].mean())
            out[f"{col}_last_epoch"] = float(last[col].mean())
    return out


def relative_change(cam: torch.Tensor, swapped: torch.Tensor) -> float | None:
    """sum |cam - swapped| / sum |cam| of cam, swapped float32[K, h, w] (one image's `cam_change`):
    0 when both are zero everywhere, None (undefined) when only cam is."""
    diff, denom = (cam - swapped).abs().sum(), cam.abs().sum()
    if float(denom) > 0:
        return float(diff / denom)
    return 0.0 if float(diff) == 0 else None


def inert_reasons(d: dict) -> list[str]:
    """Which of the inert criteria a diagnostics dict meets (empty: the context carries signal).
    With inject xm the attention is unused, so its entropy is no criterion."""
    reasons = []
    if d.get("inject", "m") == "m" and d["alpha_entropy_mean"] > INERT_ENTROPY:
        reasons.append(f"attention is uniform (normalised entropy {d['alpha_entropy_mean']:.4f} > {INERT_ENTROPY})")
    if d["m_cv"] < INERT_M_CV:
        reasons.append(f"M is the same for every image (across-image std / mean {d['m_cv']:.2e} < {INERT_M_CV})")
    if d["cam_change"] is None:
        reasons.append(
            f"CAM change undefined for all {d.get('num_images', '?')} images (their CAMs are zero, the swap's are not)"
        )
    elif d["cam_change"] < INERT_CAM_CHANGE:
        reasons.append(
            f"CAMs ignore M (relative change under another image's M {d['cam_change']:.2e} < {INERT_CAM_CHANGE})"
        )
    return reasons


def context_diagnostics(
    model_path: str | os.PathLike,
    manifest: Manifest,
    ids: list[str],
    xm_files: dict[str, Path],
    device: torch.device | str,
    train_log: str | os.PathLike | None = None,
    max_images: int = 64,
) -> dict:
    """The diagnostics dict of a context classifier (module docstring) on `ids`."""
    model = load_classifier(model_path, device)
    if not model.uses_context:
        raise ValueError(f"{model_path}: the classifier has no context module (context.mode none or round 0)")
    used = context_xm_files(model.context_cfg, xm_files)
    swap = placebo_xm_files(used)
    todo = sorted(i for i in ids if i in used)[: int(max_images)]
    if len(todo) < 2:
        raise ValueError(f"context diagnostics: need >= 2 images with an X_m, got {len(todo)} of {len(ids)} ids")
    alphas, maps, changes, shares = [], [], [], []
    block5 = 5 in model.blocks
    w = model.fg_head_weight().detach()  # [C, C_last (+1)]
    with torch.inference_mode():
        for image_id in todo:
            img = load_image(manifest.image_file(image_id))
            keys = torch.as_tensor(np.asarray(manifest.labels[image_id], dtype=np.int64) - 1, device=device)
            x = torch.from_numpy(normalize(img))[None].to(device)
            enc = [
                torch.from_numpy(model.encode_xm(load_xm(f, image_id, img.shape[:2])))[None].to(device)
                for f in (used, swap)
            ]
            m, alpha = model.context_map(enc[0])
            alphas.append(alpha[0].cpu().numpy())
            maps.append(m[0, 0].cpu().numpy())
            cams = [model.cam_maps(x, e)[0, keys] for e in enc]
            changes.append(relative_change(cams[0], cams[1]))
            if block5 and len(keys):
                feats = model.features(x, m)[0]  # [C_last + 1, h, w]; last channel = M * m_scale
                wk = w[keys]
                from_m = (wk[:, -1:, None] * feats[-1:]).abs()  # [K, h, w]
                from_f = torch.einsum("kc,chw->khw", wk[:, :-1], feats[:-1]).abs()
                shares.append(float(from_m.mean() / (from_f.mean() + from_m.mean()).clamp(min=1e-12)))
    alpha, m = np.stack(alphas), np.stack(maps)
    defined = [c for c in changes if c is not None]
    ent = _entropy(alpha)
    m_std = float(m.std(axis=0).mean())
    m_mean = float(m.mean())
    out = {
        "model": str(model_path),
        "mode": model.context_cfg["mode"],
        "inject": model.inject,
        "num_images": len(todo),
        "n": int(alpha.shape[1]),
        "alpha_entropy_mean": float(ent.mean()),
        "alpha_entropy_std": float(ent.std()),
        "alpha_max_mean": float(alpha.max(axis=1).mean()),
        "alpha_std_across_images": float(alpha.std(axis=0).mean()),
        "m_mean": m_mean,
        "m_std_across_images": m_std,
        "m_cv": m_std / max(m_mean, 1e-12),
        "m_spatial_std": float(m.reshape(len(m), -1).std(axis=1).mean()),
        "cam_change": float(np.mean(defined)) if defined else None,
        "cam_change_undefined": len(changes) - len(defined),
        "m_weight_share": float((w[:, -1].abs() / w[:, :-1].abs().mean(dim=1)).mean()) if block5 else None,
        "m_logit_share": float(np.mean(shares)) if shares else None,
        "w1_std": float(model.context.w1.weight.detach().std()),
        "w2_std": float(model.context.w2.weight.detach().std()),
        **_grad_summary(train_log),
    }
    out["inert_reasons"] = inert_reasons(out)
    out["inert"] = bool(out["inert_reasons"])
    return out


def write_context_diagnostics(out_path: str | os.PathLike, **kwargs) -> dict:
    """context_diagnostics(**kwargs) written atomically as JSON to out_path; returns the dict."""
    d = context_diagnostics(**kwargs)
    write_json(out_path, d)
    level = logging.WARNING if d["inert"] else logging.INFO
    log.log(
        level,
        "context diagnostics (%s, %d images): alpha entropy %.4f, M cv %.3g, CAM change %s (%d undefined)%s",
        d["mode"],
        d["num_images"],
        d["alpha_entropy_mean"],
        d["m_cv"],
        "undefined" if d["cam_change"] is None else f"{d['cam_change']:.4f}",
        d["cam_change_undefined"],
        " -> INERT: " + "; ".join(d["inert_reasons"]) if d["inert"] else "",
    )
    return d
