"""DeepLab-v2 (ResNet + ASPP, output stride 8) with multi-scale (MSC) training/inference.

Follows deeplab-pytorch as shipped with CONTA:
- backbone: ResNet with layer3/layer4 at stride 1, dilations 2 and 4 -> output stride 8;
- ASPP: parallel 3x3 convs (last-stage channels -> num_classes) with dilations
  `aspp_rates`, whose outputs are SUMMED (DeepLab-v2, not v3's concatenation);
  weights N(0, 0.01), biases 0;
- MSC: the input plus bilinearly downscaled copies (default 0.75 and 0.5) go through the
  same network; training returns every scale's logits plus their pixel-wise max (all
  upsampled to the 1.0 logits' size), evaluation returns only the max.

Backbone conventions (`segmentation.resnet_style`):
- "caffe" (the VOC/COCO overlays): deeplab-pytorch's MSRA ResNet exactly: the stride-2
  convolution in the first 1x1 conv of a bottleneck, a ceil-mode stem max-pool, dilation 2
  and 4 in every block of layer3/layer4. Loads torchvision ImageNet weights and the
  caffe-layout DeepLab init (deeplabv1_resnet101-coco.pth; backbone.caffe_to_torchvision);
  with `input_norm: caffe` the MSC logits equal deeplab-pytorch's (tests/test_parity.py).
- "torchvision" ([OURS] default on the generated data, and the only style for ResNet-18/34):
  the stride in the 3x3 conv and a floor-mode max-pool; the logits of an H x W input have
  size ceil(H/8) x ceil(W/8) (caffe: one more for some sizes).
Input normalisation (`segmentation.input_norm`, transforms.normalize): "imagenet" or "caffe"
(BGR minus the caffe mean); the model records it (MSC.input_norm) and inference uses it.

Deviation from deeplab-pytorch:
- MSC training outputs are ordered [1.0, *scales, max] with scales as given (default
  (0.75, 0.5)); deeplab-pytorch orders [1.0, 0.5, 0.75, max]. The loss sums them, so the
  order does not matter for training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.data.transforms import INPUT_NORMS
from conta_core.infra.checkpoint import load_model, model_checkpoint
from conta_core.infra.config import config_error, require_keys
from conta_core.models.backbone import ResNetBackbone

log = logging.getLogger("conta.deeplab")

ASPP_INIT_STD = 0.01  # deeplab-pytorch: ASPP conv weights ~ N(0, 0.01), biases 0
ASPP_BIAS_LR_FACTOR = 2  # deeplab-pytorch: ASPP biases get 2x the ASPP weight learning rate

_MODEL_KEYS = ("backbone", "pretrained", "output_stride", "aspp_rates", "freeze_bn", "msc_scales")


class ASPP(nn.Module):
    """DeepLab-v2 atrous spatial pyramid pooling: a sum of parallel dilated 3x3 convs.

    forward(x: float32[B, in_channels, h, w]) -> float32[B, num_classes, h, w].
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        if not rates:
            raise ValueError("ASPP: aspp_rates must list at least one dilation rate")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=int(r), dilation=int(r), bias=True)
            for r in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=ASPP_INIT_STD)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """ResNet backbone (dilated, output stride 8 by default) + summed ASPP.

    forward(x: float32[B, 3, H, W]) -> logits float32[B, num_classes, ceil(H/s), ceil(W/s)]
    with s = output_stride.
    freeze_bn: BatchNorm in inference mode and without gradient (deeplab-pytorch with
    pretrained weights); use False for a randomly initialised backbone.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        pretrained: str | Path | None = None,
        output_stride: int = 8,
        aspp_rates: Sequence[int] = (6, 12, 18, 24),
        freeze_bn: bool = True,
        resnet_style: str = "torchvision",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"DeepLabV2: num_classes must be >= 2 (background + classes), got {num_classes}")
        self.backbone = ResNetBackbone(
            backbone,
            output_stride=output_stride,
            dilate=True,
            pretrained=pretrained,
            freeze_bn=freeze_bn,
            style=resnet_style,
        )
        self.aspp = ASPP(self.backbone.channels[-1], num_classes, aspp_rates)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(x)[-1])


class MSC(nn.Module):
    """Multi-scale wrapper: the base network on the input and on rescaled copies of it.

    forward(x: float32[B, 3, H, W]):
      training -> [logits(1.0), logits(s_1), ..., logits(s_n), max] where logits(s) has the
        base network's output size for the input rescaled by s (bilinear) and max is the
        pixel-wise maximum of all of them upsampled (bilinear) to the size of logits(1.0);
      eval -> the max-fused logits float32[B, K, h, w] only.
    """

    def __init__(self, base: nn.Module, scales: Sequence[float] = (0.75, 0.5), input_norm: str = "imagenet") -> None:
        super().__init__()
        self.base = base
        self.scales = tuple(float(s) for s in scales)
        self.input_norm = input_norm  # the normalisation the model expects (segment.predict_batch reads it)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        logits = self.base(x)
        size = logits.shape[-2:]
        outputs = [logits]
        for s in self.scales:
            xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            outputs.append(self.base(xs))
        fused = logits
        for out in outputs[1:]:
            fused = torch.maximum(fused, F.interpolate(out, size=size, mode="bilinear", align_corners=False))
        if self.training:
            return outputs + [fused]
        return fused


def msc_extra_scales(cfg_seg: dict) -> tuple[float, ...]:
    """The MSC input scales besides 1.0, from `segmentation.msc_scales` (which must contain 1.0)."""
    scales = [float(s) for s in cfg_seg["msc_scales"]]
    if 1.0 not in scales:
        raise config_error("segmentation.msc_scales", f"must contain 1.0, got {cfg_seg['msc_scales']}")
    extra = [s for s in scales if s != 1.0]
    bad = [s for s in extra if s <= 0]
    if bad:
        raise config_error("segmentation.msc_scales", f"must be positive, got {cfg_seg['msc_scales']}")
    return tuple(extra)


def build_deeplab(cfg_seg: dict, num_classes: int, load_pretrained: bool = True) -> MSC:
    """MSC(DeepLabV2) from the `segmentation` config section.

    num_classes: C + 1 (background included). load_pretrained=False skips the
    `segmentation.pretrained` file (the weights come from a checkpoint instead).
    """
    require_keys(cfg_seg, _MODEL_KEYS, "segmentation")
    style = str(cfg_seg.get("resnet_style", "torchvision"))  # absent in checkpoints made before the key
    norm = str(cfg_seg.get("input_norm", "imagenet"))
    if norm not in INPUT_NORMS:
        raise config_error("segmentation.input_norm", f"expected one of {INPUT_NORMS}, got {norm!r}")
    base = DeepLabV2(
        num_classes,
        backbone=cfg_seg["backbone"],
        pretrained=cfg_seg["pretrained"] if load_pretrained else None,
        output_stride=int(cfg_seg["output_stride"]),
        aspp_rates=[int(r) for r in cfg_seg["aspp_rates"]],
        freeze_bn=bool(cfg_seg["freeze_bn"]),
        resnet_style=style,
    )
    if base.backbone.weights_layout == "caffe" and norm != "caffe":
        log.warning(
            "segmentation.pretrained %s is a caffe-layout DeepLab model, trained on BGR mean-subtracted input; "
            "segmentation.input_norm is %r (set it to 'caffe' to feed it what it was trained on)",
            cfg_seg["pretrained"],
            norm,
        )
    return MSC(base, msc_extra_scales(cfg_seg), input_norm=norm)


def checkpoint_dict(model: MSC, cfg_seg: dict, num_classes: int, **meta: Any) -> dict:
    """The segmentation checkpoint (conta_core.infra.checkpoint layout, kind segmentation, num_classes in meta)."""
    return model_checkpoint("segmentation", model, cfg_seg, num_classes=int(num_classes), **meta)


def load_deeplab(path: str | Path, device: torch.device) -> MSC:
    """Rebuild the MSC(DeepLabV2) saved at `path` from its own config; returned in eval mode on `device`."""
    return deeplab_from_checkpoint(load_model(path, "segmentation", required=("config", "num_classes")), path, device)


def deeplab_from_checkpoint(ckpt: dict, path: str | Path, device: torch.device) -> MSC:
    """`load_deeplab` of a checkpoint dict already read (and checked) by load_model from `path`."""
    model = build_deeplab(ckpt["config"], int(ckpt["num_classes"]), load_pretrained=False)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the configured model ({e})") from e
    return model.to(device).eval()


def param_groups(model: MSC | DeepLabV2, cfg_seg: dict) -> list[dict]:
    """SGD parameter groups as in deeplab-pytorch; frozen parameters are left out.

    - backbone (all trainable parameters: conv weights, and BN affine parameters when BN
      is not frozen): lr, weight_decay;
    - ASPP weights: lr * lr_aspp_mult, weight_decay;
    - ASPP biases: lr * 2 * lr_aspp_mult, weight decay 0.
    Each group carries "lr_mult" (its multiple of segmentation.lr) for the poly schedule.
    """
    require_keys(cfg_seg, ("lr", "lr_aspp_mult", "weight_decay"), "segmentation")
    base = model.base if isinstance(model, MSC) else model
    lr, mult, wd = float(cfg_seg["lr"]), float(cfg_seg["lr_aspp_mult"]), float(cfg_seg["weight_decay"])
    trainable = lambda params: [p for p in params if p.requires_grad]  # noqa: E731
    aspp_w = trainable(conv.weight for conv in base.aspp.branches)
    aspp_b = trainable(conv.bias for conv in base.aspp.branches)
    groups = [
        {"params": trainable(base.backbone.parameters()), "lr_mult": 1.0, "weight_decay": wd},
        {"params": aspp_w, "lr_mult": mult, "weight_decay": wd},
        {"params": aspp_b, "lr_mult": ASPP_BIAS_LR_FACTOR * mult, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    return groups
