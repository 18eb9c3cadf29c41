"""ResNet backbones (torchvision's layout, resnet.py) with IRNet / DeepLab strides and frozen BatchNorm.

The backbone is split into four stages, named after ResNet's conv blocks:
stage 0 = stem + layer1 ("block 2", stride 4), stage 1 = layer2 ("block 3", stride 8),
stage 2 = layer3 ("block 4", stride 16), stage 3 = layer4 ("block 5", the last stage).
The CONTA paper's "block-5" context injection point is the output of stage 3.

No weights are downloaded: `pretrained` is a local path to a torchvision-style ImageNet
state_dict (e.g. resnet50-19c8e357.pth; keys of the `fc` layer are ignored) or to a
caffe-layout deeplab-pytorch conversion of DeepLab's caffemodel (deeplabv1_resnet101-coco.pth,
the segmentation init of CONTA and AMN; see caffe_to_torchvision).

Dilation (DeepLab output stride 8/16) is applied to every 3x3 conv of every block of the
dilated stages, for BasicBlock and Bottleneck ResNets alike, as deeplab-pytorch does.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

from conta_core.infra.config import config_error
from conta_core.infra.fileio import load_torch
from conta_core.models.resnet import DEPTHS, ResNet, resnet

RESNETS = tuple(DEPTHS)  # resnet18, resnet34, resnet50, resnet101


RESNET_STYLES = ("torchvision", "caffe")  # segmentation.resnet_style


def _set_stride_one(layer: nn.Sequential) -> None:
    """Make a ResNet layer keep the resolution (stride 1), as IRNet's stage 5 / DeepLab's layer3-4."""
    block = layer[0]
    for conv in (getattr(block, "conv1", None), getattr(block, "conv2", None)):
        if conv is not None and conv.stride != (1, 1):
            conv.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def _dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Give every 3x3 conv of every block of `layer` dilation (and padding) `dilation`.

    deeplab-pytorch's `_ResLayer(..., dilation)` dilates all blocks of a stage, the first one
    included. torchvision's `replace_stride_with_dilation` does not: it gives the first block
    the previous dilation (1 in layer3, 2 in layer4), which is why it is not used here.
    """
    for m in layer.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            m.dilation, m.padding = (dilation, dilation), (dilation, dilation)


def _caffe_style(net: ResNet) -> None:
    """MSRA/caffe ResNet conventions (deeplab-pytorch `libs/models/resnet.py`), in place.

    The stride of a downsampling bottleneck sits in its first 1x1 conv (`reduce`), not in the
    3x3 conv (torchvision's "v1.5"), and the stem max-pool uses ceil mode. Only for
    Bottleneck ResNets (50/101): the caffe DeepLab weights exist for those only.
    """
    net.maxpool.ceil_mode = True
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        block = layer[0]
        if block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def build_torchvision_resnet(name: str, output_stride: int, dilate: bool, style: str = "torchvision") -> ResNet:
    """A randomly initialised ResNet (torchvision's names and initialisation, resnet.py) with the requested output stride.

    output_stride 32: stock. 16: layer4 stride 1 (dilation 2 in every block if `dilate`;
    IRNet: no dilation). 8: layer3 and layer4 stride 1 (dilations 2 and 4 in every block if
    `dilate`, as DeepLab-v2). style "caffe": stride in the 1x1 conv and a ceil-mode stem
    max-pool (deeplab-pytorch's ResNet; resnet50/101 only); "torchvision": as shipped.
    Module names stay torchvision's, so both styles load the same state_dict layout.
    """
    if name not in RESNETS:
        raise ValueError(f"backbone: unknown {name!r}, expected one of {RESNETS}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if style not in RESNET_STYLES:
        raise ValueError(f"resnet_style: expected one of {RESNET_STYLES}, got {style!r}")
    if style == "caffe" and name not in ("resnet50", "resnet101"):
        raise ValueError(f"resnet_style 'caffe' needs a bottleneck ResNet (resnet50/resnet101), got {name!r}")
    net = resnet(name)
    if style == "caffe":
        _caffe_style(net)
    if output_stride <= 16:
        _set_stride_one(net.layer4)
    if output_stride == 8:
        _set_stride_one(net.layer3)
    if dilate and output_stride < 32:
        if output_stride == 8:
            _dilate_layer(net.layer3, 2)
        _dilate_layer(net.layer4, 4 if output_stride == 8 else 2)
    return net


BACKBONE_INITS = ("classifier", "pretrained", "random")  # irn.backbone_init, amn.backbone_init


def check_backbone_init(cfg: dict, section: str) -> None:
    """ValueError unless `<section>.backbone_init` is one of BACKBONE_INITS and
    `<section>.pretrained` names weights when it is 'pretrained'."""
    if cfg["backbone_init"] not in BACKBONE_INITS:
        raise config_error(
            f"{section}.backbone_init", f"expected one of {BACKBONE_INITS}, got {cfg['backbone_init']!r}"
        )
    if cfg["backbone_init"] == "pretrained" and not cfg["pretrained"]:
        raise config_error(f"{section}.pretrained", f"required when {section}.backbone_init is 'pretrained'")


CAFFE_BRANCHES = {  # deeplab-pytorch _Bottleneck module -> torchvision Bottleneck module
    "reduce.conv": "conv1", "reduce.bn": "bn1",
    "conv3x3.conv": "conv2", "conv3x3.bn": "bn2",
    "increase.conv": "conv3", "increase.bn": "bn3",
    "shortcut.conv": "downsample.0", "shortcut.bn": "downsample.1",
}  # fmt: skip
_CAFFE_BLOCK = re.compile(r"^layer([2-5])\.block(\d+)\.(reduce|conv3x3|increase|shortcut)\.(conv|bn)\.(.+)$")
_CAFFE_STEM = re.compile(r"^layer1\.conv1\.(conv|bn)\.(.+)$")
CAFFE_HEAD_PREFIXES = ("fc.", "aspp.")  # DeepLab-v1 COCO classifier / DeepLab-v2 ASPP: not backbone weights


def is_caffe_layout(state: dict) -> bool:
    """True for a deeplab-pytorch state_dict converted from DeepLab's caffemodel
    (`layer1.conv1.conv.weight`, `layer2.block1.reduce.conv.weight`, ...; "base." prefix allowed)."""
    return any(_CAFFE_STEM.match(k.removeprefix("base.")) for k in state)


def caffe_to_torchvision(state: dict) -> dict:
    """Rename a caffe-layout (deeplab-pytorch) ResNet state_dict to torchvision's key names.

    The documented mapping (convert.py names on the left):
      layer1.conv1.conv.*              -> conv1.*
      layer1.conv1.bn.*                -> bn1.*
      layer{L}.block{b}.reduce.conv.*  -> layer{L-1}.{b-1}.conv1.*   (L = 2..5)
      ...reduce.bn / conv3x3.conv / conv3x3.bn / increase.conv / increase.bn -> bn1 / conv2 / bn2 / conv3 / bn3
      ...shortcut.conv / shortcut.bn   -> downsample.0 / downsample.1
    A leading "base." (the VOC-trained MSC checkpoint) is dropped; fc.* (DeepLab-v1's COCO
    classifier) and aspp.* are not backbone weights and are left out. Any other key is an error.
    The weights keep their meaning only in a backbone with resnet_style "caffe" (stride in the
    1x1 conv, ceil-mode max-pool) fed with caffe input normalisation (BGR, mean subtracted).
    """
    out = {}
    for key, value in state.items():
        k = key.removeprefix("base.")
        if k.startswith(CAFFE_HEAD_PREFIXES):
            continue
        m = _CAFFE_STEM.match(k)
        if m:
            out[f"{'conv1' if m[1] == 'conv' else 'bn1'}.{m[2]}"] = value
            continue
        m = _CAFFE_BLOCK.match(k)
        if not m:
            raise ValueError(f"caffe-layout weights: unexpected key {key!r}")
        layer, block, branch, kind, rest = m.groups()
        out[f"layer{int(layer) - 1}.{int(block) - 1}.{CAFFE_BRANCHES[branch + '.' + kind]}.{rest}"] = value
    return out


def load_pretrained(net: nn.Module, path: str | Path, style: str = "torchvision") -> str:
    """Load local ImageNet/COCO weights into the torchvision ResNet `net`; names the file on error.

    Accepts a torchvision state_dict (fc keys ignored; "module." prefixes and a
    {"state_dict": ...} wrapper allowed) or a caffe-layout deeplab-pytorch file such as
    deeplabv1_resnet101-coco.pth (caffe_to_torchvision), which needs style "caffe".
    Returns the layout found: "torchvision" or "caffe".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = load_torch(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    layout = "caffe" if is_caffe_layout(state) else "torchvision"
    if layout == "caffe":
        if style != "caffe":
            raise ValueError(
                f"{path}: caffe-layout DeepLab weights (stride in the 1x1 conv) need resnet_style: caffe, got {style!r}"
            )
        try:
            state = caffe_to_torchvision(state)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the backbone ({e})") from e
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the backbone (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return layout


class ResNetBackbone(nn.Module):
    """Four-stage ResNet feature extractor.

    forward(x: float32[B, 3, H, W]) -> list of 4 feature maps, stage i with
    `channels[i]` channels at strides (4, 8, 16 or 8, output_stride).
    freeze_bn: BatchNorm uses running statistics and gets no gradient, also in train().
    frozen_stages: the first k stages (0..4) get no gradient (IRNet: 2 = stem+layer1+layer2).
    style: "torchvision" or "caffe" (build_torchvision_resnet).
    """

    def __init__(
        self,
        name: str = "resnet50",
        output_stride: int = 16,
        dilate: bool = False,
        pretrained: str | Path | None = None,
        freeze_bn: bool = True,
        frozen_stages: int = 0,
        style: str = "torchvision",
    ) -> None:
        super().__init__()
        net = build_torchvision_resnet(name, output_stride, dilate, style)
        self.weights_layout = load_pretrained(net, pretrained, style) if pretrained else None
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

    def train(self, mode: bool = True) -> ResNetBackbone:
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
