"""SEAM's network (Wang et al., CVPR 2020; https://github.com/YudeWang/SEAM, network/resnet38_SEAM.py)
with CONTA's context at block 5.

SEAMNet = ResNet-38 (conta_core.models.resnet38) + a CAM head and the pixel correlation module:

    d = trunk.forward_as_dict(x)                     x: float32[B, 3, H, W]
    cam = fc8(dropout7(conv6))                        float32[B, C + 1, H/8, W/8], channel 0 background
    cam_d_norm (no gradient): ReLU(cam) / (max + 1e-5) per channel; background channel
        1 - max over foreground; foreground values below the per-pixel foreground max set to 0
    f = [x resized to H/8 x W/8 (bilinear, align_corners), ReLU(f8_3(conv4.detach())) (64),
         ReLU(f8_4(conv5.detach())) (128)]         195 channels
    cam_rv = PCM(cam_d_norm, f9(f))                 float32[B, C + 1, H/8, W/8]
    forward -> (cam, cam_rv), both resized bilinearly (align_corners=True) to H x W.

PCM (`pcm`): per-pixel L2-normalised embedding e = f9(f) / (|f9(f)| + 1e-5), affinity
A = ReLU(e^T e) normalised over its first index (sum + 1e-5), cam_rv = cam_d_norm A.
State-dict keys equal the official Net's at width 1.0 (trunk + fc8, f8_3, f8_4, f9); the
official `train()` freezing (every BN, conv1a, b2, b2_1, b2_2) is kept.

CONTA (context.mode conta / placebo, rounds t > 0): the map M of conta_core.models.context is
resized to the conv6 size, multiplied by the gain (context.m_scale) and concatenated after
dropout7 [OURS: M is not dropped], so fc8 sees 4096w + 1 channels (block 5, the last
ResNet-38 block; only block 5 is offered, config error otherwise). Adjustments:
- nwgm: the expected M fed once (the paper).
- exact [OURS]: SEAM's CAM is linear in M (no ReLU before the GAP), so the P(c)-weighted mean
  of the per-stratum CAMs W_F F + w_M g M_i is the NWGM CAM: cam and cam_rv are the same and
  only the classification differs: P = sum_i P(c_i) sigmoid(GAP(cam_i)), returned as the
  logit of P (so the multilabel soft-margin loss is the cross-entropy of the mixture).

[OURS] f8_3, f8_4 and f9 keep the official widths (64, 128, 192) at every trunk width.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.infra.checkpoint import load_model
from conta_core.infra.config import parse_blocks
from conta_core.models.classifier import ACTIVE_MODES, ContextMixin
from conta_core.models.resnet38 import ResNet38, parameter_groups, scaled

log = logging.getLogger("conta.seam")

NORM_EPS = 1e-5
PCM_WIDTHS = (64, 128, 192)  # f8_3, f8_4, f9 outputs (official)


def cam_d_norm(cam: torch.Tensor) -> torch.Tensor:
    """SEAM's detached, max-normalised CAM with the background channel 1 - max(fg) and the
    non-maximal foreground zeroed: float32[B, C + 1, h, w] -> same shape."""
    with torch.no_grad():
        c = F.relu(cam.detach())
        c_max = c.flatten(2).amax(dim=-1)[:, :, None, None] + NORM_EPS
        out = F.relu(c - NORM_EPS) / c_max
        fg = out[:, 1:]
        fg_max = fg.amax(dim=1, keepdim=True)
        fg = torch.where(fg < fg_max, torch.zeros_like(fg), fg)
        return torch.cat([1 - fg_max, fg], dim=1)


def pcm(cam: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Pixel correlation module: cam float32[B, K, h', w'] (resized to f's size, bilinear,
    align_corners) propagated by the affinity of the embedding f float32[B, D, h, w] (already
    through f9). Returns float32[B, K, h, w]."""
    n, _, h, w = f.shape
    cam = F.interpolate(cam, (h, w), mode="bilinear", align_corners=True).reshape(n, -1, h * w)
    f = f.reshape(n, -1, h * w)
    f = f / (torch.norm(f, dim=1, keepdim=True) + NORM_EPS)
    aff = F.relu(torch.matmul(f.transpose(1, 2), f))
    aff = aff / (aff.sum(dim=1, keepdim=True) + NORM_EPS)
    return torch.matmul(cam, aff).reshape(n, -1, h, w)


class SEAMNet(ContextMixin, ResNet38):
    """SEAM (module docstring). num_classes counts the background (VOC: 21).

    forward(x, xm=None) -> (cam, cam_rv) float32[B, num_classes, H, W];
    forward(x, xm, with_logits=True) -> (cam, cam_rv, logits float32[B, num_classes]): the GAP
    of cam (nwgm) or the mixture logit (exact, foreground channels).
    """

    def __init__(self, width: float = 1.0, num_classes: int = 21, context: dict | None = None) -> None:
        super().__init__(width)
        self.num_fg = int(num_classes) - 1
        active = context is not None and context.get("mode") in ACTIVE_MODES
        if active and parse_blocks(context["block"]) != (5,):
            from conta_core.infra.config import config_error

            raise config_error("context.block", f"method seam injects M at block 5 only, got {context['block']!r}")
        self.blocks: tuple[int, ...] = (5,) if active else ()
        c6 = scaled(4096, width)
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(c6 + (1 if active else 0), int(num_classes), 1, bias=False)
        self.f8_3 = nn.Conv2d(scaled(512, width), PCM_WIDTHS[0], 1, bias=False)
        self.f8_4 = nn.Conv2d(scaled(1024, width), PCM_WIDTHS[1], 1, bias=False)
        self.f9 = nn.Conv2d(PCM_WIDTHS[0] + PCM_WIDTHS[1] + 3, PCM_WIDTHS[2], 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        self.from_scratch_layers = [self.f8_3, self.f8_4, self.f9, self.fc8]
        self.not_training = [self.conv1a, self.b2, self.b2_1, self.b2_2]
        self.init_context(context if active else None)

    # --- the CAM head ------------------------------------------------------------------------

    def features(self, x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """conv6 after dropout7 (+ g M as the last channel with context): float32[B, 4096w (+1), H/8, W/8]."""
        return self._head_input(self.forward_as_dict(x)["conv6"], m)

    def _head_input(self, conv6: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        feats = self.dropout7(conv6)
        if m is None:
            return feats
        mk = F.interpolate(m, size=feats.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([feats, (mk * self._gain(conv6, mk)).to(feats.dtype)], dim=1)

    def fg_head_weight(self) -> torch.Tensor:
        """float32[C, 4096w (+1: M's weight last)]: fc8's foreground rows (the diagnostics read it)."""
        return self.fc8.weight[1:, :, 0, 0]

    def cam_maps(self, x: torch.Tensor, xm: torch.Tensor | None = None) -> torch.Tensor:
        """ReLU of the foreground CAM at stride 8: float32[B, C, H/8, W/8] (diagnostics)."""
        ctx = self.context_map(xm)
        return F.relu(self.fc8(self.features(x, None if ctx is None else ctx[0]))[:, 1:])

    def forward(self, x: torch.Tensor, xm: torch.Tensor | None = None, with_logits: bool = False):
        size = x.shape[-2:]
        ctx = self.context_map(xm)
        d = self.forward_as_dict(x)
        cam = self.fc8(self._head_input(d["conv6"], None if ctx is None else ctx[0]))
        h, w = cam.shape[-2:]
        f8_3 = F.relu(self.f8_3(d["conv4"].detach()))
        f8_4 = F.relu(self.f8_4(d["conv5"].detach()))
        x_s = F.interpolate(x, (h, w), mode="bilinear", align_corners=True)
        f = self.f9(torch.cat([x_s, f8_3, f8_4], dim=1))
        cam_rv = F.interpolate(pcm(cam_d_norm(cam), f), size, mode="bilinear", align_corners=True)
        cam = F.interpolate(cam, size, mode="bilinear", align_corners=True)
        if not with_logits:
            return cam, cam_rv
        logits = cam.mean(dim=(2, 3))
        if self.exact:
            logits = torch.cat([logits[:, :1], self._exact_logits(logits[:, 1:], xm, (h, w), size)], dim=1)
        return cam, cam_rv, logits

    def _exact_logits(self, expected: torch.Tensor, xm: torch.Tensor, feat_size, size) -> torch.Tensor:
        """Logit of sum_i P(c_i) sigmoid(GAP(cam_i)) from GAP(cam) of the expected M (module docstring)."""
        alpha = self.context.attention(xm, self.confounder)  # [B, n]
        strata = alpha[:, :, None, None] * self.confounder[None]  # M_i = alpha_i c_i
        mk = F.interpolate(strata, size=feat_size, mode="bilinear", align_corners=False) * self.m_gain
        s = F.interpolate(mk, size, mode="bilinear", align_corners=True).mean(dim=(2, 3))  # [B, n]
        prior = self.context.prior.to(s.dtype)
        w_m = self.fc8.weight[1:, -1, 0, 0]  # [C]
        base = expected - (s @ prior)[:, None] * w_m  # GAP of W_F F
        logits = base[:, None, :] + s[:, :, None] * w_m  # [B, n, C]
        log_prior = torch.log(prior)[None, :, None]
        return torch.logsumexp(log_prior + F.logsigmoid(logits), 1) - torch.logsumexp(
            log_prior + F.logsigmoid(-logits), 1
        )

    # --- optimisation ------------------------------------------------------------------------

    def get_parameter_groups(self) -> tuple[list, list, list, list]:
        """The official four groups (trunk weights, trunk biases, new weights, new biases),
        without the context module (context_parameter_groups)."""
        return parameter_groups(self, self.from_scratch_layers)

    def context_parameter_groups(self) -> tuple[list, list]:
        """The context module's (W_1, W_2 weights, their biases), trainable only; empty without
        context. make_optimizer gives them the new layers' lr times context.lr_mult, as IRNet's
        classifier does (CAMNet.optimizer_groups)."""
        if not self.uses_context:
            return [], []
        named = [(n, p) for n, p in self.context.named_parameters() if p.requires_grad]
        return [p for n, p in named if not n.endswith("bias")], [p for n, p in named if n.endswith("bias")]


def seam_config(cfg: dict, context: dict | None, num_fg: int) -> dict:
    """The `config` of a SEAM checkpoint: what load_seam needs to rebuild the network."""
    return {
        "seam": {"width": float(cfg["width"])},
        "context": dict(context) if context else None,
        "num_fg": int(num_fg),
    }


def build_seam(cfg: dict, context: dict | None, num_fg: int, confounder=None) -> SEAMNet:
    """SEAMNet from the `seam:` (width) and `context:` sections; confounder float32[n, h, w]."""
    model = SEAMNet(float(cfg["width"]), int(num_fg) + 1, context)
    if confounder is not None:
        model.set_confounder(confounder)
    return model


def load_seam(path: str | os.PathLike, device: torch.device | str = "cpu") -> SEAMNet:
    """Rebuild a trained SEAMNet (checkpoint kind "seam"); eval mode, on `device`."""
    ckpt = load_model(path, "seam")
    cfg = ckpt["config"]
    model = build_seam(cfg["seam"], cfg.get("context"), int(cfg["num_fg"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match the configured SEAM network ({e})") from e
    return model.to(device).eval()
