"""ResNet backbones from torchvision with IRNet / DeepLab strides and frozen BatchNorm.

The backbone is split into four stages, named after ResNet's conv blocks:
stage 0 = stem + layer1 ("block 2", stride 4), stage 1 = layer2 ("block 3", stride 8),
stage 2 = layer3 ("block 4", stride 16), stage 3 = layer4 ("block 5", the last stage).
The CONTA paper's "block-5" context injection point is the output of stage 3.

No weights are downloaded: `pretrained` is a local path to a torchvision-style ImageNet
state_dict (e.g. resnet50-19c8e357.pth); keys of the `fc` layer are ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from conta_core.io import load_torch

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def _set_stride_one(layer: nn.Sequential) -> None:
    """Make a ResNet layer keep the resolution (stride 1, no dilation), as IRNet's stage 5."""
    block = layer[0]
    for conv in (getattr(block, "conv1", None), getattr(block, "conv2", None)):
        if conv is not None and conv.stride != (1, 1):
            conv.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def build_torchvision_resnet(name: str, output_stride: int, dilate: bool) -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet with the requested output stride.

    output_stride 32: stock. 16: layer4 stride 1 (dilation 2 if `dilate`, IRNet: no dilation).
    8: layer3 and layer4 stride 1 (dilations 2 and 4 if `dilate`, DeepLab-v2).
    """
    if name not in RESNETS:
        raise ValueError(f"backbone: unknown {name!r}, expected one of {RESNETS}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    fn = getattr(torchvision.models, name)
    if dilate and name in ("resnet50", "resnet101"):
        rsd = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
        return fn(weights=None, replace_stride_with_dilation=rsd)
    net = fn(weights=None)
    if output_stride <= 16:
        _set_stride_one(net.layer4)
    if output_stride == 8:
        _set_stride_one(net.layer3)
    if dilate and output_stride < 32:
        # BasicBlock ResNets refuse replace_stride_with_dilation: dilate by hand.
        for layer, d in ((net.layer3, 2), (net.layer4, 4 if output_stride == 8 else 2)):
            if layer is net.layer3 and output_stride != 8:
                continue
            for m in layer.modules():
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                    m.dilation, m.padding = (d, d), (d, d)
    return net


BACKBONE_INITS = ("classifier", "pretrained", "random")  # irn.backbone_init, amn.backbone_init


def check_backbone_init(cfg: dict, section: str) -> None:
    """ValueError unless `<section>.backbone_init` is one of BACKBONE_INITS and
    `<section>.pretrained` names weights when it is 'pretrained'."""
    if cfg["backbone_init"] not in BACKBONE_INITS:
        raise ValueError(
            f"config key {section}.backbone_init: expected one of {BACKBONE_INITS}, got {cfg['backbone_init']!r}"
        )
    if cfg["backbone_init"] == "pretrained" and not cfg["pretrained"]:
        raise ValueError(f"config key {section}.pretrained: required when {section}.backbone_init is 'pretrained'")


def load_pretrained(net: nn.Module, path: str | Path) -> None:
    """Load a local ImageNet state_dict into `net` (fc keys ignored); names the file on error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = load_torch(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the backbone (missing {missing[:5]}, unexpected {unexpected[:5]})")


class ResNetBackbone(nn.Module):
    """Four-stage ResNet feature extractor.

    forward(x: float32[B, 3, H, W]) -> list of 4 feature maps, stage i with
    `channels[i]` channels at strides (4, 8, 16 or 8, output_stride).
    freeze_bn: BatchNorm uses running statistics and gets no gradient, also in train().
    frozen_stages: the first k stages (0..4) get no gradient (IRNet: 2 = stem+layer1+layer2).
    """

    def __init__(
        self,
        name: str = "resnet50",
        output_stride: int = 16,
        dilate: bool = False,
        pretrained: str | Path | None = None,
        freeze_bn: bool = True,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        net = build_torchvision_resnet(name, output_stride, dilate)
        if pretrained:
            load_pretrained(net, pretrained)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
                net.layer2,
                net.layer3,
                net.layer4,
            ]
        )
        expansion = 4 if name in ("resnet50", "resnet101") else 1
        self.channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.freeze_bn = freeze_bn
        if not 0 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4, got {frozen_stages}")
        self.frozen_stages = frozen_stages
        for i in range(frozen_stages):
            for p in self.stages[i].parameters():
                p.requires_grad_(False)
        if freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < self.frozen_stages:
                x = x.detach()
            feats.append(x)
        return feats
