"""IRNet's inter-pixel relation network, boundary (edge) branch only (Ahn et al., CVPR 2019).

A frozen ResNet (output stride 16, no dilation) provides five feature levels: the stem
(conv1+bn+relu+maxpool, stride 4), layer1 (stride 4), layer2 (stride 8), layer3 (stride 16)
and layer4 (stride 16). Each level goes through a 1x1 conv to 32 channels, GroupNorm(4, 32),
a bilinear upsampling by the FIXED factor 1, 1, 2, 4, 4 (align_corners=False), a crop to the
size of the layer1 map and a ReLU (IRNet's `fc_edge*` and `[..., :edge2.size(2), :edge2.size(3)]`);
the five maps are concatenated (5 x 32 = 160 channels) and a 1x1 conv with bias gives one
boundary logit per stride-4 pixel. Upsample-then-crop keeps every level aligned with the
stride-4 grid on any input size (resizing straight to the stride-4 size would stretch the
coarse levels whenever ceil(H/4) is not a multiple of 4). The displacement branch of IRNet is not needed for semantic pseudo-masks
and is left out.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.infra.checkpoint import load_model
from conta_core.models.backbone import ResNetBackbone

EDGE_CHANNELS = 32  # IRNet: each level is reduced to 32 channels
EDGE_GROUPS = 4  # IRNet: GroupNorm(4, 32)
STEM_CHANNELS = 64  # torchvision ResNet stem (conv1) width, all depths
BACKBONE_OUTPUT_STRIDE = 16  # IRNet: strides (2, 2, 2, 1), no dilation
CLASSIFIER_BACKBONE_PREFIX = "backbone."
NUM_BACKBONE_STAGES = 4  # ResNetBackbone stages; all frozen
LEVEL_UPSAMPLE = (1, 1, 2, 4, 4)  # IRNet fc_edge1..5: stride of each level / 4


def _edge_level(in_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) -> GroupNorm; upsampling and ReLU follow in EdgeNet.forward."""
    return nn.Sequential(
        nn.Conv2d(in_channels, EDGE_CHANNELS, kernel_size=1, bias=False),
        nn.GroupNorm(EDGE_GROUPS, EDGE_CHANNELS),
    )


class EdgeNet(nn.Module):
    """Frozen ResNet backbone + IRNet boundary branch.

    forward(x: float32[B, 3, H, W]) -> edge logits float32[B, 1, ceil(H/4), ceil(W/4)].
    The backbone never trains: its parameters have requires_grad=False, its features are
    computed without autograd, and with `freeze_bn` it stays in eval mode (running BN
    statistics) even under `train()`. With freeze_bn=False its BatchNorm layers follow
    train()/eval() (batch statistics while training) but still get no gradient.
    """

    def __init__(self, backbone_name: str, pretrained: str | Path | None = None, freeze_bn: bool = True) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(
            backbone_name,
            output_stride=BACKBONE_OUTPUT_STRIDE,
            dilate=False,
            pretrained=pretrained,
            freeze_bn=freeze_bn,
            frozen_stages=NUM_BACKBONE_STAGES,
        )
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.freeze_bn = freeze_bn
        level_channels = [STEM_CHANNELS] + list(self.backbone.channels)
        self.edge_levels = nn.ModuleList([_edge_level(c) for c in level_channels])
        self.edge_out = nn.Conv2d(EDGE_CHANNELS * len(level_channels), 1, kernel_size=1, bias=True)
        self.train()

    def train(self, mode: bool = True) -> EdgeNet:
        super().train(mode)
        if self.freeze_bn:
            self.backbone.eval()
        return self

    def backbone_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five IRNet levels [stem, layer1, layer2, layer3, layer4], detached."""
        stages = self.backbone.stages
        with torch.no_grad():
            stem = stages[0][:4](x)
            x2 = stages[0][4](stem)
            x3 = stages[1](x2)
            x4 = stages[2](x3)
            x5 = stages[3](x4)
        return [f.detach() for f in (stem, x2, x3, x4, x5)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone_features(x)
        h, w = feats[1].shape[-2:]
        maps = []
        for level, f, factor in zip(self.edge_levels, feats, LEVEL_UPSAMPLE):
            y = level(f)
            if factor != 1:
                y = F.interpolate(y, scale_factor=factor, mode="bilinear", align_corners=False)[..., :h, :w]
            maps.append(F.relu(y))
        return self.edge_out(torch.cat(maps, dim=1))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the edge branch (the backbone is frozen)."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]


def load_backbone_from_classifier(edge_net: EdgeNet, cls_state_dict: dict) -> None:
    """Copy the CAM classifier's backbone weights into `edge_net.backbone`.

    cls_state_dict: the classifier's state_dict (keys of its ResNetBackbone under
    "backbone."), or the whole checkpoint {"state_dict": ..., "config": ...}. The classifier
    must use the same backbone name; other keys (classifier head, context module) are ignored.
    """
    if "state_dict" in cls_state_dict and isinstance(cls_state_dict["state_dict"], dict):
        cls_state_dict = cls_state_dict["state_dict"]
    prefix = CLASSIFIER_BACKBONE_PREFIX
    state = {k[len(prefix) :]: v for k, v in cls_state_dict.items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"classifier state_dict has no keys under {prefix!r}; cannot initialise the IRN backbone")
    own = edge_net.backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"classifier backbone does not match irn.backbone (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ValueError(f"classifier backbone key {k}: shape {tuple(v.shape)} != IRN {tuple(own[k].shape)}")
    edge_net.backbone.load_state_dict(state)


def edge_net_from_checkpoint(path: str | Path, device: torch.device) -> EdgeNet:
    """Rebuild an EdgeNet from an IRN checkpoint (conta_core.infra.checkpoint, kind irn); eval mode, on device."""
    ckpt = load_model(path, "irn")
    cfg = ckpt["config"]
    for key in ("backbone", "freeze_bn"):
        if key not in cfg:
            raise ValueError(f"{path}: checkpoint config has no {key!r} key")
    net = EdgeNet(cfg["backbone"], pretrained=None, freeze_bn=cfg["freeze_bn"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match EdgeNet({cfg['backbone']}): {e}") from e
    return net.to(device).eval()
