"""ResNet-18/34/50/101 with torchvision's module names, construction order and initialisation.

Why not `torchvision.models.resnet50`: importing torchvision imports torch._dynamo (through
torchvision.ops), about 1.7 s per process on a 2-core CPU, paid by every Snakemake job that builds
a model; a round of the default run has about 25 such jobs. This module builds the same network
without that import: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
in torchvision's "v1.5" form (the stride of a downsampling bottleneck in its 3x3 conv), see
https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py.

Kept equal to torchvision (tests/test_resnet.py checks all four depths against torchvision):
- the state_dict keys (conv1, bn1, layer1..layer4 with conv1/bn1.. and downsample.0/.1, fc), so
  torchvision ImageNet files (resnet50-19c8e357.pth) load unchanged;
- the order in which modules are created and registered, and the initialisation (He normal,
  fan_out, on every conv; BatchNorm weight 1, bias 0; the fc layer's PyTorch default), so the
  same seed gives bit-identical random weights and a run's results do not depend on which
  module built its network;
- forward(x: float32[B, 3, H, W]) -> float32[B, num_classes] (stem, layer1..4, global average
  pool, fc). The backbones in backbone.py use the stages, not the head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

DEPTHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3))}  # fmt: skip


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); output channels = planes."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand (ResNet-50/101); output channels = 4 * planes."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem (7x7 conv stride 2, 3x3 max-pool stride 2), four layers (strides 1, 2, 2, 2), head."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:  # created before the block, as torchvision
            downsample = nn.Sequential(
                _conv(self.inplanes, planes * block.expansion, 1, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        blocks = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(name: str, num_classes: int = 1000) -> ResNet:
    """A randomly initialised ResNet by torchvision name ("resnet18", "resnet34", "resnet50", "resnet101")."""
    if name not in DEPTHS:
        raise ValueError(f"backbone: unknown {name!r}, expected one of {tuple(DEPTHS)}")
    kind, layers = DEPTHS[name]
    return ResNet(BasicBlock if kind == "basic" else Bottleneck, layers, num_classes)
