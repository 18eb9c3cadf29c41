"""ResNet-38 ("model A1" of Wu, Shen, van den Hengel, *Wider or Deeper*, 2019) at output stride 8.

The backbone of SEAM (https://github.com/YudeWang/SEAM, network/resnet38d.py) and of
AffinityNet (https://github.com/jiwoon-ahn/psa). Pre-activation residual blocks; blocks b5
(dilation 2), b6 and b7 (dilation 4, bottleneck) keep stride 8. At `width` 1.0 the parameter
names and shapes equal the official `Net` (conv1a, b2, b2_1, ..., b7, bn7 with the sub-names
bn_branch2a, conv_branch2a, bn_branch2b1, conv_branch2b1, [bn_branch2b2, conv_branch2b2,]
conv_branch1), so the official weights load without renaming.

Shapes (width w, input float32[B, 3, H, W]; channels are multiplied by w, rounded, >= 4):
    conv1a 64 @ H          b2* 128 @ H/2     b3* 256 @ H/4    b4* 512 @ H/8
    b5* 1024 @ H/8 (dil 2) b6 2048 @ H/8     b7 4096 @ H/8 (dil 4), bn7
`forward_as_dict(x)` -> {"conv3": b4's BN-ReLU input [B, 256w, H/4, W/4],
"conv4": b5's BN-ReLU input [B, 512w, H/8, W/8], "conv5": b6's [B, 1024w, H/8, W/8],
"conv6": ReLU(bn7(b7)) [B, 4096w, H/8, W/8]} (official keys).

Frozen parts as the official `Net.train()`: every BatchNorm stays in eval mode with frozen
affine parameters; the modules listed in `not_training` (conv1a; SEAM and AffinityNet add
b2, b2_1, b2_2) have requires_grad False.

[OURS] `width` < 1 is a narrow stand-in for the generated data on a CPU (the official
network is width 1.0 only); dropout rates of b6 / b7 (0.3 / 0.5) are the official ones.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the official Normalize (RGB, /255)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDE = 8
CHANNELS = {"conv1a": 64, "b2": 128, "b3": 256, "b4": 512, "b5": 1024, "b6": 2048, "b7": 4096}


def scaled(channels: int, width: float) -> int:
    """Channels at `width` (rounded, >= 4; channels itself at width 1.0)."""
    return max(4, int(round(channels * float(width))))


class ResBlock(nn.Module):
    """Pre-activation block of two 3x3 convs (official ResBlock): BN-ReLU feeds both branches."""

    def __init__(self, cin: int, cmid: int, cout: int, stride: int = 1, first_dilation=None, dilation: int = 1):
        super().__init__()
        self.same_shape = cin == cout and stride == 1
        first_dilation = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(
            cin, cmid, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(cmid)
        self.conv_branch2b1 = nn.Conv2d(cmid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        pre = F.relu(self.bn_branch2a(x))
        branch1 = x if self.same_shape else self.conv_branch1(pre)
        out = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        out = branch1 + out
        return (out, pre) if get_x_bn_relu else out


class ResBlockBot(nn.Module):
    """Pre-activation bottleneck 1x1-3x3-1x1 with Dropout2d (official ResBlock_bot); the
    1x1 shortcut conv is always used (as the official forward)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        pre = F.relu(self.bn_branch2a(x))
        branch1 = self.conv_branch1(pre)
        out = self.dropout_2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        out = self.dropout_2b2(F.relu(self.bn_branch2b2(self.conv_branch2b1(out))))
        out = branch1 + self.conv_branch2b2(out)
        return (out, pre) if get_x_bn_relu else out


class ResNet38(nn.Module):
    """ResNet-38 trunk (module docstring); `width` scales every channel count."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.width = float(width)
        c = {k: scaled(v, width) for k, v in CHANNELS.items()}
        self.channels = c
        self.conv1a = nn.Conv2d(3, c["conv1a"], 3, padding=1, bias=False)
        self.b2 = ResBlock(c["conv1a"], c["b2"], c["b2"], stride=2)
        self.b2_1 = ResBlock(c["b2"], c["b2"], c["b2"])
        self.b2_2 = ResBlock(c["b2"], c["b2"], c["b2"])
        self.b3 = ResBlock(c["b2"], c["b3"], c["b3"], stride=2)
        self.b3_1 = ResBlock(c["b3"], c["b3"], c["b3"])
        self.b3_2 = ResBlock(c["b3"], c["b3"], c["b3"])
        self.b4 = ResBlock(c["b3"], c["b4"], c["b4"], stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", ResBlock(c["b4"], c["b4"], c["b4"]))
        self.b5 = ResBlock(c["b4"], c["b4"], c["b5"], stride=1, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(c["b5"], c["b4"], c["b5"], dilation=2)
        self.b5_2 = ResBlock(c["b5"], c["b4"], c["b5"], dilation=2)
        self.b6 = ResBlockBot(c["b5"], c["b6"], stride=1, dilation=4, dropout=0.3)
        self.b7 = ResBlockBot(c["b6"], c["b7"], dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(c["b7"])
        self.not_training: list[nn.Module] = [self.conv1a]
        self.freeze_bn = True  # official; [OURS] False for a randomly initialised stand-in
        self.freeze_early = True  # not_training frozen (official)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_as_dict(x)["conv6"]

    def forward_as_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1a(x)
        for name in ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2"):
            x = getattr(self, name)(x)
        x, conv3 = self.b4(x, get_x_bn_relu=True)
        for i in range(1, 6):
            x = getattr(self, f"b4_{i}")(x)
        x, conv4 = self.b5(x, get_x_bn_relu=True)
        x = self.b5_2(self.b5_1(x))
        x, conv5 = self.b6(x, get_x_bn_relu=True)
        conv6 = F.relu(self.bn7(self.b7(x)))
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6}

    def train(self, mode: bool = True) -> ResNet38:
        """nn.Module.train, then the official freezing: not_training modules and every BN
        (each unless its flag freeze_early / freeze_bn is False)."""
        super().train(mode)
        for module in self.not_training:
            for p in module.parameters():
                p.requires_grad_(not self.freeze_early)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                if self.freeze_bn:
                    m.eval()
                m.weight.requires_grad_(not self.freeze_bn)
                m.bias.requires_grad_(not self.freeze_bn)
        return self


def trunk_keys(width: float = 1.0) -> list[str]:
    """state_dict keys of the plain trunk (the official resnet38d.Net's)."""
    return list(ResNet38(width).state_dict())


def parameter_groups(model: nn.Module, scratch: list[nn.Module]) -> tuple[list, list, list, list]:
    """The official get_parameter_groups: (trunk conv weights, trunk conv biases, new-layer
    weights, new-layer biases), trainable Conv2d / GroupNorm parameters only. BatchNorm's weight
    and bias are in no group, so they keep their loaded values also with freeze_bn False, which
    changes only the statistics (batch statistics in training, running statistics updated).
    [OURS: kept as the official groups; config/README.md says so]"""
    groups: tuple[list, list, list, list] = ([], [], [], [])
    ids = {id(m) for m in scratch}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.GroupNorm)):
            new = id(m) in ids
            if m.weight.requires_grad:
                groups[2 if new else 0].append(m.weight)
            if m.bias is not None and m.bias.requires_grad:
                groups[3 if new else 1].append(m.bias)
    return groups
