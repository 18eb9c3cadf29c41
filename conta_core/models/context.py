"""CONTA's context adjustment (paper Eq. 3): X_m encoding and the attention over the confounder set.

M_{t+1} = sum_i alpha_i * c_i * P(c_i),
alpha_i = softmax_i( <W_1 x_m, W_2 c_i> / sqrt(n) ),
with x_m the image's segmentation mask of round t (hw vector), c_i the class-average mask of
class i (hw vector, see conta_core.steps.confounder), W_1, W_2 learnable n x hw projections and
P(c_i) = 1/n (the CONTA author in https://github.com/dongzhang89/CONTA issues #12 and #13).

[OURS] choices (the paper/author leave them open):
- X_m is one scalar per pixel (the author says "hw x 1"): `encode_xm` offers "foreground"
  (label > 0) and "label_index" (label / C); ignore (255) encodes as 0.
- h x w is a fixed canonical size (config context.size); the map M is resized bilinearly to
  whatever feature map it is concatenated to (conta_core.models.classifier).
- W_1, W_2 are nn.Linear(hw -> n), init N(0, 0.02) as in the inherited m_t.py, bias optional
  (config context.bias, default False) and zero-initialised when present.
- The prior is uniform, P(c_i) = 1/n, so M keeps the paper's 1/n factor (M values <= 1/n).
- `context.init_std` (default 0.02, the inherited m_t.py) sets the N(0, std) init of W_1, W_2;
  `context.lr_mult` scales their learning rate relative to the classifier's new layers;
  `context.m_scale` multiplies M where it is concatenated (models/classifier.py). The paper
  fixes none of them, and with 0.02 / 1 / 1 the attention never leaves uniform on the
  generated data (docs/context.md).

X_m loading and the placebo pairing (`context.mode: placebo`): conta_core.data.xm.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from conta_core.data.transforms import resize_label
from conta_core.infra.config import config_error
from conta_core.infra.fileio import IGNORE_LABEL

XM_ENCODINGS = ("foreground", "label_index")
WEIGHT_INIT_STD = 0.02  # N(0, 0.02) as W_y / W_z of the inherited m_t.py (context.init_std default)


def encode_xm(label: np.ndarray, encoding: str, num_fg: int, size: tuple[int, int]) -> np.ndarray:
    """Encode a label map as the single-channel context input X_m.

    label: uint8[H, W] (0 bg, 1..C fg, 255 ignore); resized with nearest neighbour to `size`.
    encoding: "foreground" -> 1.0 where label in 1..C; "label_index" -> label / num_fg.
    Ignore pixels (255) encode as 0 in both cases.
    Returns float32[h, w].
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"encode_xm: label map must be 2-D, got shape {label.shape}")
    if encoding not in XM_ENCODINGS:
        raise config_error("context.xm_encoding", f"expected one of {XM_ENCODINGS}, got {encoding!r}")
    small = resize_label(label, (int(size[0]), int(size[1])))
    valid = small != IGNORE_LABEL
    if encoding == "foreground":
        out = (small > 0) & valid
        return out.astype(np.float32)
    return np.where(valid, small.astype(np.float32) / float(num_fg), 0.0).astype(np.float32)


def encode_xm_batch(xm: torch.Tensor, context_cfg: dict, num_fg: int) -> torch.Tensor:
    """uint8[B, S, S] augmented X_m of a training batch -> float32[B, h, w] (`encode_xm` with
    context.xm_encoding at context.size), the context input of train_cls and train_amn."""
    size = (int(context_cfg["size"][0]), int(context_cfg["size"][1]))
    return torch.from_numpy(np.stack([encode_xm(m, context_cfg["xm_encoding"], num_fg, size) for m in xm.numpy()]))


class ContextModule(nn.Module):
    """Eq. 3 of CONTA: attention of the image's mask over the confounder set.

    num_fg: n, the number of confounder entries (foreground classes).
    size: (h, w) of x_m, c_i and M.
    bias: whether W_1, W_2 have a (zero-initialised) bias; init_std: their N(0, std) init.
    forward(xm: float32[B, h, w], confounder: float32[n, h, w])
        -> (M: float32[B, 1, h, w], alpha: float32[B, n]).
    """

    def __init__(
        self, num_fg: int, size: tuple[int, int], bias: bool = False, init_std: float = WEIGHT_INIT_STD
    ) -> None:
        super().__init__()
        self.num_fg = int(num_fg)
        self.size = (int(size[0]), int(size[1]))
        hw = self.size[0] * self.size[1]
        self.w1 = nn.Linear(hw, self.num_fg, bias=bias)
        self.w2 = nn.Linear(hw, self.num_fg, bias=bias)
        for lin in (self.w1, self.w2):
            nn.init.normal_(lin.weight, mean=0.0, std=float(init_std))
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        # Uniform prior P(c_i) = 1/n (context.prior = uniform).
        self.register_buffer("prior", torch.full((self.num_fg,), 1.0 / self.num_fg), persistent=False)

    def attention(self, xm: torch.Tensor, confounder: torch.Tensor) -> torch.Tensor:
        """alpha: float32[B, n] = softmax_i(<W_1 x_m, W_2 c_i> / sqrt(n))."""
        self._check(xm, confounder)
        query = self.w1(xm.flatten(1))  # [B, n]
        keys = self.w2(confounder.flatten(1))  # [n, n]: row i = W_2 c_i
        logits = query @ keys.t() / math.sqrt(self.num_fg)
        return torch.softmax(logits, dim=1)

    def forward(self, xm: torch.Tensor, confounder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.attention(xm, confounder)
        weights = alpha * self.prior.to(alpha.dtype)  # alpha_i P(c_i), [B, n]
        m = weights @ confounder.flatten(1)  # [B, hw]
        return m.view(-1, 1, *self.size), alpha

    def _check(self, xm: torch.Tensor, confounder: torch.Tensor) -> None:
        if xm.dim() != 3 or tuple(xm.shape[1:]) != self.size:
            raise ValueError(f"ContextModule: xm must be [B, {self.size[0]}, {self.size[1]}], got {tuple(xm.shape)}")
        expected = (self.num_fg, *self.size)
        if tuple(confounder.shape) != expected:
            raise ValueError(f"ContextModule: confounder must be {list(expected)}, got {list(confounder.shape)}")
