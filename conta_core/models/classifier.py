"""The multi-label CAM classifier (IRNet's ResNet CAM net) with CONTA's context injection.

Round 0 is IRNet's network: ResNet backbone at output stride 16 (no dilation), GAP and a
bias-free 1x1 conv classifier over the last stage. Rounds t > 0 (context.mode = conta or
placebo) add the context module of conta_core.models.context: the map M (float32[B, 1, h, w]) is
resized bilinearly to the feature size of the chosen block, multiplied by a gain
(context.m_scale [OURS]: a number, 1 = the paper's Eq. 3 as written, or "auto" = the RMS of
that block's features over the RMS of M on the first training batch, then fixed and saved
as the buffer m_gain) and concatenated channel-wise.

Blocks (ResNet naming, see conta_core.models.backbone): block 2/3/4/5 = output of stage
0/1/2/3. Block 5 (paper default): the classifier sees C_last + 1 channels. Blocks 2/3/4:
the concatenation is followed by a bias-free 1x1 conv (C_k + 1 -> C_k) initialised as the
identity on the feature channels and zero on M, so the network starts as the plain one.
"dense" = all of 2..5 with one shared M.

Adjustment (context.adjustment): the paper's Eq. 1 is the backdoor sum
P(Y|do(X)) = sum_i P(Y | X, M = f(X, c_i)) P(c_i), and its implementation feeds the expected
context once (the normalised weighted geometric mean, NWGM: M = sum_i P(c_i) alpha_i c_i,
conta_core.models.context.ContextModule). "nwgm" is that approximation (the paper's setting).
"exact" [OURS: the paper states the sum but never runs it] evaluates the head once per
stratum with M_i = f(X, c_i) = alpha_i c_i (so E_c[M_i] is the NWGM map): block-5 features
F are computed once, logit_i = W_F GAP(F) + w_M GAP(g M_i), and the prediction is the
P(c)-weighted mixture P = sum_i P(c_i) sigmoid(logit_i), returned as the logit of P so the
multilabel soft-margin loss is the cross-entropy of the mixture. CAMs are the same mixture,
CAM = sum_i P(c_i) ReLU(W_F F + w_M g M_i). Cost: one [B, n, C, h, w] tensor for the CAMs
(n = C strata); the backbone runs once, so training and CAM time grow by a few percent.
Only block 5 (the head is then linear in M; at earlier blocks every stratum would need its
own pass through the later stages). Because the head is linear and the logit sees M only
through its spatial mean, the two adjustments differ only by the sigmoid of the mixture:
docs/context.md measures whether that matters.

What is concatenated (context.inject [OURS] key for the paper's Table 1 Q1): "m" (default) is
M; "xm" is the image's encoded X_m itself (float32[B, 1, h, w], the paper's "Seg. mask" row),
through the same resize, gain and block; the attention and C are then unused, and alpha is
reported as the prior. nwgm only.

[OURS] frozen stages: the backbone detaches the outputs of frozen stages (IRNet); once M has
been injected before a frozen stage, that stage's output is no longer detached so that the
gradient reaches the context module (the stage's own parameters stay frozen).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.data.xm import placebo_xm_files
from conta_core.infra.checkpoint import load_model
from conta_core.infra.config import config_error, context_adjustment, context_inject, parse_blocks, require_keys
from conta_core.infra.fileio import load_torch
from conta_core.infra.methods import ACTIVE_MODES, CONTEXT_MODES
from conta_core.models.backbone import ResNetBackbone
from conta_core.models.context import WEIGHT_INIT_STD, XM_ENCODINGS, ContextModule, encode_xm

log = logging.getLogger("conta.classifier")

OUTPUT_STRIDE = 16  # IRNet CAM net: strides (2, 2, 2, 1), no dilation
CONTEXT_PRIORS = ("uniform",)


def validate_context_cfg(context: dict) -> None:
    """Raise ValueError naming the context.* key that is missing or invalid."""
    require_keys(context, ("mode", "block", "size", "xm_encoding"), "context")
    if context["mode"] not in CONTEXT_MODES:
        raise config_error("context.mode", f"expected one of {CONTEXT_MODES}, got {context['mode']!r}")
    parse_blocks(context["block"])
    size = context["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(s) > 0 for s in size)):
        raise config_error("context.size", f"expected [h, w] of positive ints, got {size!r}")
    if context["xm_encoding"] not in XM_ENCODINGS:
        raise config_error("context.xm_encoding", f"expected one of {XM_ENCODINGS}, got {context['xm_encoding']!r}")
    scale = context.get("m_scale", 1.0)
    if scale != "auto" and not (isinstance(scale, (int, float)) and scale > 0):
        raise config_error("context.m_scale", f"expected a positive number or 'auto', got {scale!r}")
    if context.get("prior", "uniform") not in CONTEXT_PRIORS:
        raise config_error("context.prior", f"only {CONTEXT_PRIORS} is implemented, got {context['prior']!r}")
    context_adjustment(context)
    context_inject(context)


def context_active(context_cfg: dict | None, xm_files, confounder_path, step: str) -> bool:
    """Whether a training step uses the context module: context.mode conta or placebo and a
    confounder file (round t > 0). Inconsistent inputs (X_m without confounder or the reverse)
    raise ValueError naming the step; inputs given under mode none are ignored with a warning."""
    mode = (context_cfg or {}).get("mode", "none")
    if mode not in ACTIVE_MODES:
        if confounder_path is not None or xm_files is not None:
            log.warning("%s: context.mode = %s: ignoring the given X_m files / confounder", step, mode)
        return False
    if confounder_path is None:
        if xm_files is not None:
            raise ValueError(f"{step}: X_m files given without a confounder file")
        log.info("%s: context.mode = %s but no confounder: the plain (round-0) model", step, mode)
        return False
    if xm_files is None:
        raise ValueError(f"{step}: confounder {confounder_path} given without X_m files")
    return True


def context_xm_files(context: dict | None, xm_files: dict | None) -> dict | None:
    """The X_m file of each image as the context mode sees it: its own (conta) or its placebo
    partner's (placebo, conta_core.data.xm.placebo_xm_files)."""
    if xm_files is None or context is None or context.get("mode") != "placebo":
        return xm_files
    return placebo_xm_files(xm_files)


def _adapter(channels: int) -> nn.Conv2d:
    """1x1 conv (channels + 1 -> channels), identity on the features, zero on M."""
    conv = nn.Conv2d(channels + 1, channels, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :channels, 0, 0] = torch.eye(channels)
    return conv


class ContextMixin:
    """CONTA's context input of a CAM network (CAMNet here, models.seam.SEAMNet): the context
    module, the M gain (context.m_scale) and the confounder buffer; needs `num_fg`."""

    def init_context(self, context: dict | None) -> None:
        """Register the context module, m_gain and the confounder buffer for an active
        `context:` section (mode conta / placebo); None: a plain network."""
        if context is not None:
            validate_context_cfg(context)
        self.context_cfg: dict | None = dict(context) if context is not None else None
        self.exact = context is not None and context.get("adjustment", "nwgm") == "exact"
        if context is None:
            return
        size = (int(context["size"][0]), int(context["size"][1]))
        self.context_size = size
        self.context = ContextModule(
            self.num_fg,
            size,
            bias=bool(context.get("bias", False)),
            init_std=float(context.get("init_std", WEIGHT_INIT_STD)),
        )
        # M x m_gain at the concatenation: context.m_scale, or for "auto" (0 until then)
        # RMS(features) / RMS(M) of the first training batch, then fixed and saved.
        scale = context.get("m_scale", 1.0)
        self.register_buffer("m_gain", torch.tensor(0.0 if scale == "auto" else float(scale)))
        self._register_load_state_dict_pre_hook(self._default_m_gain)
        self.register_buffer("confounder", torch.zeros(self.num_fg, *size))

    def _default_m_gain(self, state_dict, prefix, *args) -> None:
        """Checkpoints from before m_gain existed: use the configured (numeric) m_scale."""
        state_dict.setdefault(prefix + "m_gain", self.m_gain.detach().clone())

    def _gain(self, feats: torch.Tensor, mk: torch.Tensor) -> torch.Tensor:
        """m_gain; with context.m_scale "auto", calibrated on the first training batch so that
        M has the RMS of the feature channels it joins."""
        if float(self.m_gain) <= 0.0:
            if not self.training:
                raise ValueError(
                    "context.m_scale auto: M's gain is calibrated on the first training batch; "
                    "this model was never trained"
                )
            with torch.no_grad():
                rms_f = feats.detach().float().pow(2).mean().sqrt()
                rms_m = mk.detach().float().pow(2).mean().sqrt().clamp(min=1e-12)
                self.m_gain.fill_(float(rms_f / rms_m))
            log.info("context.m_scale auto: M x %.4g (RMS of the block's features / RMS of M)", float(self.m_gain))
        return self.m_gain.to(mk.dtype)

    @property
    def uses_context(self) -> bool:
        return self.context_cfg is not None

    @property
    def inject(self) -> str:
        """context.inject: "m" (M is concatenated) or "xm" (X_m itself)."""
        return (self.context_cfg or {}).get("inject", "m")

    def set_confounder(self, confounder: torch.Tensor | np.ndarray) -> None:
        """Copy the confounder set C: float32[n, h, w] into the model buffer."""
        if not self.uses_context:
            raise ValueError("set_confounder: this classifier has no context module (context.mode is none)")
        c = torch.as_tensor(np.asarray(confounder), dtype=torch.float32)
        if tuple(c.shape) != tuple(self.confounder.shape):
            raise ValueError(f"confounder: expected shape {list(self.confounder.shape)}, got {list(c.shape)}")
        self.confounder.copy_(c.to(self.confounder.device))

    def encode_xm(self, label: np.ndarray) -> np.ndarray:
        """uint8[H, W] label map -> float32[h, w] context input with this model's settings."""
        if not self.uses_context:
            raise ValueError("encode_xm: this classifier has no context module")
        return encode_xm(label, self.context_cfg["xm_encoding"], self.num_fg, self.context_size)

    def context_map(self, xm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(M float32[B, 1, h, w], alpha float32[B, n]) or None without context."""
        if not self.uses_context:
            if xm is not None:
                raise ValueError(f"{type(self).__name__}: xm given but the classifier has no context module")
            return None
        if xm is None:
            raise ValueError(f"{type(self).__name__}: the context classifier needs xm (the encoded X_m map)")
        if self.inject == "xm":
            # context.inject xm (Table 1 Q1, "Seg. mask"): X_m itself in M's place; the
            # attention is not used, alpha is reported as the prior
            self.context._check(xm, self.confounder)
            alpha = self.context.prior.to(xm.dtype)[None].expand(xm.shape[0], -1)
            return xm[:, None], alpha
        return self.context(xm, self.confounder)


class CAMNet(ContextMixin, nn.Module):
    """ResNet CAM classifier, optionally with CONTA context.

    forward(x: float32[B, 3, H, W], xm: float32[B, h, w] | None) -> logits float32[B, C].
    cam_maps(x, xm) -> float32[B, C, H/16, W/16] (ReLU of the classifier applied densely).
    xm is the encoded X_m (see `encode_xm`), required iff the context is active.
    """

    def __init__(
        self,
        num_fg: int,
        backbone: str = "resnet50",
        pretrained: str | Path | None = None,
        freeze_bn: bool = True,
        frozen_stages: int = 2,
        context: dict | None = None,
        output_stride: int = OUTPUT_STRIDE,
    ) -> None:
        super().__init__()
        self.num_fg = int(num_fg)
        self.backbone = ResNetBackbone(
            backbone,
            output_stride=output_stride,
            dilate=False,
            pretrained=pretrained,
            freeze_bn=freeze_bn,
            frozen_stages=frozen_stages,
        )
        active = context is not None and context.get("mode") in ACTIVE_MODES
        self.blocks: tuple[int, ...] = parse_blocks(context["block"]) if active else ()
        extra = 1 if 5 in self.blocks else 0
        self.classifier = nn.Conv2d(self.backbone.channels[-1] + extra, self.num_fg, kernel_size=1, bias=False)
        self.init_context(context if active else None)
        if active:
            self.adapters = nn.ModuleDict(
                {str(b): _adapter(self.backbone.channels[b - 2]) for b in self.blocks if b != 5}
            )

    def features(self, x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """Final features float32[B, C_last (+1 for block 5), h, w] with M injected."""
        injected = False
        for i, stage in enumerate(self.backbone.stages):
            x = stage(x)
            if i < self.backbone.frozen_stages and not injected:
                x = x.detach()
            block = i + 2
            if m is not None and block in self.blocks:
                mk = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = torch.cat([x, (mk * self._gain(x, mk)).to(x.dtype)], dim=1)
                if block != 5:
                    x = self.adapters[str(block)](x)
                injected = True
        return x

    def forward(self, x: torch.Tensor, xm: torch.Tensor | None = None) -> torch.Tensor:
        if self.exact:
            return self._exact_logits(x, xm)
        ctx = self.context_map(xm)
        feats = self.features(x, None if ctx is None else ctx[0])
        pooled = feats.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def cam_maps(self, x: torch.Tensor, xm: torch.Tensor | None = None) -> torch.Tensor:
        if self.exact:
            return self._exact_cams(x, xm)
        ctx = self.context_map(xm)
        feats = self.features(x, None if ctx is None else ctx[0])
        return F.relu(self.classifier(feats))

    # --- context.adjustment: exact (the backdoor sum over the confounder strata) ---------------

    def _strata(self, x: torch.Tensor, xm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(block-5 features F: float32[B, C_last, h, w], g * M_i: float32[B, n, h, w]) with
        M_i = alpha_i c_i resized to the feature size and g the M gain (context.m_scale). With
        m_scale auto, g is calibrated on the expected map E_c[M_i] = sum_i P(c_i) M_i, the M that
        nwgm feeds, so both adjustments get the same gain from the same first batch."""
        if xm is None:
            raise ValueError("CAMNet: the context classifier needs xm (the encoded X_m map)")
        alpha = self.context.attention(xm, self.confounder)  # [B, n]
        strata = alpha[:, :, None, None] * self.confounder[None]  # [B, n, h', w']
        feats = self.features(x, None)
        mk = F.interpolate(strata, size=feats.shape[-2:], mode="bilinear", align_corners=False)
        expected = (self.context.prior.to(mk.dtype)[None, :, None, None] * mk).sum(dim=1, keepdim=True)
        return feats, (mk * self._gain(feats, expected)).to(feats.dtype)

    def fg_head_weight(self) -> torch.Tensor:
        """float32[C, C_last (+1 for block 5: M's weight last)] of the foreground classes
        (the context diagnostics read it; SEAMNet has the same method)."""
        return self.classifier.weight[:, :, 0, 0]

    def _head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_F: [C, C_last], w_M: [C]) of the bias-free 1x1 classifier over [F; M]."""
        w = self.classifier.weight[:, :, 0, 0]
        return w[:, :-1], w[:, -1]

    def _exact_logits(self, x: torch.Tensor, xm: torch.Tensor | None) -> torch.Tensor:
        """logit of P = sum_i P(c_i) sigmoid(logit_i): float32[B, C] (log P - log(1 - P), stable)."""
        feats, gm = self._strata(x, xm)
        w_f, w_m = self._head_weights()
        base = feats.mean(dim=(2, 3)) @ w_f.t()  # [B, C]
        logits = base[:, None, :] + gm.mean(dim=(2, 3))[:, :, None] * w_m  # [B, n, C]
        log_prior = torch.log(self.context.prior.to(logits.dtype))[None, :, None]
        log_p = torch.logsumexp(log_prior + F.logsigmoid(logits), dim=1)
        log_q = torch.logsumexp(log_prior + F.logsigmoid(-logits), dim=1)
        return log_p - log_q

    def _exact_cams(self, x: torch.Tensor, xm: torch.Tensor | None) -> torch.Tensor:
        """sum_i P(c_i) ReLU(W_F F + w_M g M_i): float32[B, C, h, w]."""
        feats, gm = self._strata(x, xm)
        w_f, w_m = self._head_weights()
        base = torch.einsum("kc,bchw->bkhw", w_f, feats)  # [B, C, h, w]
        prior = self.context.prior.to(base.dtype)
        out = torch.zeros_like(base)
        for i in range(gm.shape[1]):  # one stratum at a time: [B, C, h, w] of memory, not n times that
            out = out + prior[i] * F.relu(base + w_m[None, :, None, None] * gm[:, i : i + 1])
        return out

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, new layers: classifier + adapters, context module W_1/W_2), trainable only."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [
            p
            for name, p in self.named_parameters()
            if not name.startswith(("backbone.", "context.")) and p.requires_grad
        ]
        context = [p for name, p in self.named_parameters() if name.startswith("context.") and p.requires_grad]
        return backbone, new, context

    def optimizer_groups(self, lr: float, new_lr: float) -> list[dict]:
        """Optimizer parameter groups: backbone at lr, new layers at new_lr and, with a context
        module, W_1/W_2 at new_lr * context.lr_mult (train_cls and AMN share this)."""
        backbone, new, context = self.param_groups()
        groups = [{"params": backbone, "lr": lr}, {"params": new, "lr": new_lr}]
        if context:
            groups.append({"params": context, "lr": new_lr * float(self.context_cfg.get("lr_mult", 1.0))})
        return groups


def _require(cfg: dict, key: str, section: str):
    require_keys(cfg, (key,), section)
    return cfg[key]


def build_classifier(
    cfg_classifier: dict,
    cfg_context: dict | None,
    num_fg: int,
    confounder: torch.Tensor | np.ndarray | None = None,
) -> CAMNet:
    """CAMNet from the `classifier:` and `context:` config sections.

    The context is active iff cfg_context["mode"] is "conta" or "placebo"; then `confounder`
    (float32[n, h, w]) fills the buffer (zeros when None, e.g. before loading a checkpoint).
    """
    model = CAMNet(
        num_fg,
        backbone=_require(cfg_classifier, "backbone", "classifier"),
        pretrained=cfg_classifier.get("pretrained"),
        freeze_bn=bool(_require(cfg_classifier, "freeze_bn", "classifier")),
        frozen_stages=int(_require(cfg_classifier, "frozen_stages", "classifier")),
        context=cfg_context,
        output_stride=int(cfg_classifier.get("output_stride", OUTPUT_STRIDE)),
    )
    if model.uses_context:
        ctx = model.context_cfg
        log.info(
            "CONTA context: block %s, size %s, X_m encoding %s, prior uniform, W bias %s",
            ctx["block"],
            list(model.context_size),
            ctx["xm_encoding"],
            bool(ctx.get("bias", False)),
        )
    if confounder is not None:
        model.set_confounder(confounder)
    return model


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> CAMNet:
    """Rebuild a CAMNet from a checkpoint written by train_classifier; eval mode, on `device`.
    A SEAM checkpoint (kind "seam", method seam's round<t>/cls/model.pth) gives its SEAMNet,
    which has the same context interface (uses_context, context_map, cam_maps, features)."""
    if load_torch(path).get("kind") == "seam":
        from conta_core.models.seam import load_seam

        return load_seam(path, device)
    ckpt = load_model(path, "classifier")
    cfg = ckpt["config"]
    # The ImageNet weights are superseded by the state_dict: do not read them again.
    cls_cfg = {**cfg["classifier"], "pretrained": None}
    model = build_classifier(cls_cfg, cfg.get("context"), int(cfg["num_fg"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match the configured classifier ({e})") from e
    return model.to(device).eval()
