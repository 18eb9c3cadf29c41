"""AMN (Lee, Kim, Shim, CVPR 2022): ResNet + label conditioning + per-pixel classification head.

AMN (Lee, Kim, Shim, CVPR 2022; https://github.com/gaviotas/AMN, net/resnet50_amn.py). The network is the CAM classifier's (conta_core.models.
classifier.CAMNet: ResNet backbone at output stride 16 without dilation, and for rounds t > 0
the CONTA context module with its block adapters and confounder buffer) with the classifier
replaced by AMN's head:

    F  = layer-4 features of the backbone                       float32[B, C_last, h, w]
    F' = F * label_enc(y)   (channel-wise, label_enc = Linear(C -> C_last) with bias)
    (context, block 5: F' = cat(F', M) as in CAMNet; blocks 2-4 inject M inside the backbone)
    logits = ASPP(Dropout(F'))                                   float32[B, C + 1, h, w]

with y the image's multi-hot label vector float32[B, C] and channel 0 of the logits AMN's own
background class. The ASPP is DeepLab-v2's sum of dilated 3x3 convs (conta_core.models.deeplab).

[OURS] choices:
- Label conditioning multiplies the backbone channels only; the block-5 context channel M is
  appended after it unchanged (the map is not gated by the labels).
- The backbone freezes whole stages (amn.frozen_stages; AMN freezes only conv1/bn1, which
  the stage-wise ResNetBackbone cannot express: 0 = train everything, AMN's closest setting).
- Dropout at inference (the official code never leaves train mode) is off
  by default; `set_inference_dropout(True)` reproduces the quirk.
- State-dict names match CAMNet (backbone.*, context.*, adapters.*, confounder), so a round's
  CAM classifier can initialise the backbone and the context module (amn.backbone_init).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from conta_core.infra.checkpoint import load_model
from conta_core.infra.config import config_error, require_keys
from conta_core.models.backbone import check_backbone_init
from conta_core.models.classifier import CAMNet
from conta_core.models.deeplab import ASPP

log = logging.getLogger("conta.amn")

MODEL_KEYS = ("backbone", "backbone_init", "pretrained", "freeze_bn", "frozen_stages", "aspp_rates", "dropout")
CLASSIFIER_HEAD_PREFIX = "classifier."  # the CAM net's 1x1 classifier: not part of AMN


class AMNNet(CAMNet):
    """AMN: label-conditioned per-pixel classifier over C + 1 classes (module docstring).

    forward(x: float32[B, 3, H, W], y: float32[B, C], xm: float32[B, h', w'] | None)
        -> logits float32[B, C + 1, ceil-ish(H/16), ceil-ish(W/16)]  (channel 0 = background).
    xm is the encoded X_m (encode_xm), required iff the context is active.
    """

    def __init__(
        self,
        num_fg: int,
        backbone: str = "resnet50",
        pretrained: str | Path | None = None,
        freeze_bn: bool = True,
        frozen_stages: int = 0,
        context: dict | None = None,
        aspp_rates: tuple[int, ...] = (6, 12, 18, 24),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(
            num_fg,
            backbone=backbone,
            pretrained=pretrained,
            freeze_bn=freeze_bn,
            frozen_stages=frozen_stages,
            context=context,
        )
        del self.classifier  # replaced by the label conditioning + ASPP head
        channels = self.backbone.channels[-1]
        extra = 1 if 5 in self.blocks else 0
        self.label_enc = nn.Linear(self.num_fg, channels)
        self.dropout = nn.Dropout(float(dropout))
        self.head = ASPP(channels + extra, self.num_fg + 1, list(aspp_rates))
        self.inference_dropout = False

    def set_inference_dropout(self, on: bool) -> None:
        """Keep Dropout active in eval mode (the official AMN behaviour) or not."""
        self.inference_dropout = bool(on)
        if not self.training:
            self.dropout.train(self.inference_dropout)

    def train(self, mode: bool = True) -> AMNNet:
        super().train(mode)
        if not mode and self.inference_dropout:
            self.dropout.train(True)
        return self

    def condition(self, feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F' = F * label_enc(y) on the backbone channels (a trailing context channel is kept).

        feats: float32[B, C_last (+1), h, w]; y: float32[B, C] multi-hot.
        """
        if y.dim() != 2 or y.shape[1] != self.num_fg or y.shape[0] != feats.shape[0]:
            raise ValueError(f"AMNNet: label vectors must be [{feats.shape[0]}, {self.num_fg}], got {tuple(y.shape)}")
        channels = self.backbone.channels[-1]
        gate = self.label_enc(y.to(feats.dtype))[:, :, None, None]
        gated = feats[:, :channels] * gate
        return torch.cat([gated, feats[:, channels:]], dim=1) if feats.shape[1] > channels else gated

    def forward(self, x: torch.Tensor, y: torch.Tensor, xm: torch.Tensor | None = None) -> torch.Tensor:
        ctx = self.context_map(xm)
        feats = self.features(x, None if ctx is None else ctx[0])
        return self.head(self.dropout(self.condition(feats, y)))

    def cam_maps(self, x: torch.Tensor, xm: torch.Tensor | None = None) -> torch.Tensor:
        raise TypeError("AMNNet has no label-free CAMs: call forward(x, y, xm) (conta_core.steps.amn.compute_amn_cam)")


def check_model_cfg(cfg: dict) -> None:
    """ValueError naming the first missing or invalid amn.* model key."""
    require_keys(cfg, MODEL_KEYS, "amn")
    check_backbone_init(cfg, "amn")
    if not 0.0 <= float(cfg["dropout"]) < 1.0:
        raise config_error("amn.dropout", f"expected a probability in [0, 1), got {cfg['dropout']!r}")


def build_amn(
    cfg_amn: dict,
    cfg_context: dict | None,
    num_fg: int,
    confounder: torch.Tensor | np.ndarray | None = None,
    load_pretrained: bool = True,
) -> AMNNet:
    """AMNNet from the `amn:` and `context:` sections (context active iff mode is conta or placebo).

    load_pretrained: read amn.pretrained when amn.backbone_init == pretrained (False when a
    checkpoint's state_dict will replace the weights anyway).
    """
    check_model_cfg(cfg_amn)
    use_imagenet = load_pretrained and cfg_amn["backbone_init"] == "pretrained"
    model = AMNNet(
        num_fg,
        backbone=cfg_amn["backbone"],
        pretrained=cfg_amn["pretrained"] if use_imagenet else None,
        freeze_bn=bool(cfg_amn["freeze_bn"]),
        frozen_stages=int(cfg_amn["frozen_stages"]),
        context=cfg_context,
        aspp_rates=tuple(int(r) for r in cfg_amn["aspp_rates"]),
        dropout=float(cfg_amn["dropout"]),
    )
    if confounder is not None:
        model.set_confounder(confounder)
    return model


def init_from_classifier(model: AMNNet, cls_state: dict, source: str = "classifier") -> list[str]:
    """Copy a CAM classifier's backbone (and, when both have one, context module and adapters).

    cls_state: the classifier checkpoint's state_dict. The classifier head and the confounder
    buffer are skipped. Raises ValueError naming `source` when a backbone key is missing or
    differs in shape (e.g. amn.backbone != classifier.backbone). Returns the copied keys.
    """
    own = model.state_dict()
    take = {k: v for k, v in cls_state.items()
            if not k.startswith(CLASSIFIER_HEAD_PREFIX) and k != "confounder" and k in own}  # fmt: skip
    missing = [k for k in own if k.startswith("backbone.") and k not in take]
    unexpected = [k for k in cls_state if k.startswith("backbone.") and k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{source}: classifier backbone does not match AMN's (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}): amn.backbone must equal classifier.backbone with "
            "amn.backbone_init = classifier"
        )
    for k, v in take.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{source}: key {k} has shape {tuple(v.shape)}, AMN expects {tuple(own[k].shape)}")
    model.load_state_dict(take, strict=False)
    return sorted(take)


def load_amn(path: str | Path, device: torch.device | str = "cpu") -> AMNNet:
    """Rebuild an AMNNet from a train_amn checkpoint; eval mode, on `device`."""
    ckpt = load_model(path, "amn")
    cfg = ckpt["config"]
    if "amn" not in cfg or "num_fg" not in cfg:
        raise ValueError(f"{path}: AMN checkpoint config lacks 'amn' / 'num_fg'")
    model = build_amn(cfg["amn"], cfg.get("context"), int(cfg["num_fg"]), load_pretrained=False)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match the configured AMN ({e})") from e
    return model.to(device).eval()
