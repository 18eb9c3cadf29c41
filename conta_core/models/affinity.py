"""AffinityNet (Ahn and Kwak, CVPR 2018; https://github.com/jiwoon-ahn/psa) as SEAM uses it
(https://github.com/YudeWang/SEAM, network/resnet38_aff.py, infer_aff.py).

AffinityNet = ResNet-38 (conta_core.models.resnet38) + an embedding head:
    e = ELU(f9([ELU(f8_3(conv4)) (64), ELU(f8_4(conv5)) (128), ELU(f8_5(conv6)) (256)]))
                                                         float32[B, 448, H/8, W/8]
    affinity of a pixel pair (i, j) = exp(-mean_c |e_i - e_j|) in [0, 1].
Pairs (`pair_indices`, the official get_indices_of_pairs): every "from" pixel of the
(h - r + 1) x (w - 2r + 2) window [0, h - r + 1) x [r - 1, w - r + 1) with its D "to"
neighbours at offsets (0, 1..r-1) and (dy, dx), dy in 1..r-1, |dx| < r, dy^2 + dx^2 < r^2
(radius r = 5: D = 34). forward(x) -> float32[B, D, N_from]; forward(x, to_dense=True)
(B = 1) -> the symmetric dense float32[hw, hw] matrix with ones on the diagonal. A feature
map smaller than 2r + 1 on its short side uses radius (min side - 1) // 2 (official).

`random_walk` (infer_aff): T = A^beta / column sums, squared logt times (2^logt steps);
the scores [bg = (1 - max fg)^alpha, fg CAMs] at full size, zero-padded to a multiple of 8,
average-pooled by 8, are propagated as v T, upsampled bilinearly (align_corners=False)
to the padded size and the argmax is cropped to H x W.

[OURS] `scale` (seam.aff.scale, official 1): the AffinityNet sees the image rescaled by it, in
training and in the walk (the checkpoint records it; `walk_labels` takes the rescaled image,
resizes the CAMs to it and its scores back to `out_size` before the argmax), so that small
generated images get feature maps nearer VOC's (a 96 px image is 12 x 12 at stride 8, a
500 x 375 VOC image 63 x 47).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.infra.checkpoint import load_model
from conta_core.models.resnet38 import ResNet38, parameter_groups, scaled

STRIDE = 8
HEAD_WIDTHS = (64, 128, 256, 448)  # f8_3, f8_4, f8_5, f9 (official)


def search_offsets(radius: int) -> list[tuple[int, int]]:
    """The (dy, dx) neighbour offsets of the official pair order."""
    out = [(0, x) for x in range(1, radius)]
    out += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius) if x * x + y * y < radius * radius]
    return out


@functools.lru_cache(maxsize=32)
def pair_indices(radius: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(ind_from int64[N_from], ind_to int64[D * N_from]) of flat pixel indices (module docstring)."""
    h, w = size
    r1 = radius - 1
    full = np.arange(h * w, dtype=np.int64).reshape(h, w)
    ch, cw = h - r1, w - 2 * r1
    ind_from = full[: h - r1, r1 : w - r1].reshape(-1)
    ind_to = [full[dy : dy + ch, r1 + dx : r1 + dx + cw].reshape(-1) for dy, dx in search_offsets(radius)]
    return ind_from, np.concatenate(ind_to)


def effective_radius(radius: int, size: tuple[int, int]) -> int:
    """The official fallback for small feature maps."""
    m = min(size)
    return (m - 1) // 2 if m < radius * 2 + 1 else radius


class AffinityNet(ResNet38):
    """AffinityNet (module docstring). radius: the pair radius at stride 8 (SEAM: 5); scale:
    the image scale it works at ([OURS], official 1)."""

    def __init__(self, width: float = 1.0, radius: int = 5, scale: float = 1.0) -> None:
        super().__init__(width)
        self.radius = int(radius)
        self.scale = float(scale)  # the input scale it is trained and walked at (module docstring)
        self.f8_3 = nn.Conv2d(scaled(512, width), HEAD_WIDTHS[0], 1, bias=False)
        self.f8_4 = nn.Conv2d(scaled(1024, width), HEAD_WIDTHS[1], 1, bias=False)
        self.f8_5 = nn.Conv2d(scaled(4096, width), HEAD_WIDTHS[2], 1, bias=False)
        self.f9 = nn.Conv2d(sum(HEAD_WIDTHS[:3]), HEAD_WIDTHS[3], 1, bias=False)
        for conv in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        self.not_training = [self.conv1a, self.b2, self.b2_1, self.b2_2]
        self.from_scratch_layers = [self.f8_3, self.f8_4, self.f8_5, self.f9]

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """float32[B, 448, H/8, W/8]."""
        d = self.forward_as_dict(x)
        f = [F.elu(self.f8_3(d["conv4"])), F.elu(self.f8_4(d["conv5"])), F.elu(self.f8_5(d["conv6"]))]
        return F.elu(self.f9(torch.cat(f, dim=1)))

    def forward(self, x: torch.Tensor, to_dense: bool = False) -> torch.Tensor:
        e = self.embedding(x)
        size = (e.shape[2], e.shape[3])
        ind_from, ind_to = (
            torch.from_numpy(a).to(e.device) for a in pair_indices(effective_radius(self.radius, size), size)
        )
        flat = e.flatten(2)
        ff = flat.index_select(2, ind_from)[:, :, None]  # [B, C, 1, N_from]
        ft = flat.index_select(2, ind_to).view(flat.shape[0], flat.shape[1], -1, ff.shape[3])  # [B, C, D, N_from]
        aff = torch.exp(-(ft - ff).abs().mean(dim=1))  # [B, D, N_from]
        if not to_dense:
            return aff
        if aff.shape[0] != 1:
            raise ValueError(f"AffinityNet: to_dense needs a batch of 1, got {aff.shape[0]}")
        area = size[0] * size[1]
        frm = ind_from[None].expand(aff.shape[1], -1).reshape(-1)
        dense = torch.zeros(area, area, dtype=aff.dtype, device=aff.device)
        vals = aff.reshape(-1)
        dense[frm, ind_to] = vals
        dense[ind_to, frm] = vals
        idx = torch.arange(area, device=aff.device)
        dense[idx, idx] = 1.0
        return dense

    def get_parameter_groups(self) -> tuple[list, list, list, list]:
        return parameter_groups(self, self.from_scratch_layers)


def affinity_labels(label: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSA's ExtractAffinityLabelInRadius: (bg_pos, fg_pos, neg) float32[D, N_from] of a
    stride-8 label uint8[h, w] (0 bg, other ids fg, 255 unknown), pairs as `pair_indices`."""
    h, w = label.shape
    ind_from, ind_to = pair_indices(radius, (h, w))
    flat = label.reshape(-1)
    lf = flat[ind_from][None]
    lt = flat[ind_to].reshape(-1, len(ind_from))
    valid = (lt < 255) & (lf < 255)
    pos = lf == lt
    bg = (pos & (lf == 0)).astype(np.float32)
    fg = (pos & (lf != 0) & valid).astype(np.float32)
    neg = (~pos & valid).astype(np.float32)
    return bg, fg, neg


def random_walk(aff_dense: torch.Tensor, scores: torch.Tensor, beta: float, logt: int) -> torch.Tensor:
    """v T^(2^logt) with T = A^beta / column sums: scores float32[K, hw] -> float32[K, hw]."""
    a = aff_dense.pow(beta)
    trans = a / a.sum(dim=0, keepdim=True)
    for _ in range(int(logt)):
        trans = trans @ trans
    return scores @ trans


def walk_labels(
    model: AffinityNet,
    x: torch.Tensor,
    fg_cams: torch.Tensor,
    beta: float,
    logt: int,
    alpha: float,
    out_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """infer_aff for one image: x float32[1, 3, H, W] normalised; fg_cams float32[K, H', W'] in
    [0, 1] (the image's classes), resized bilinearly to H x W when H' x W' differs. Returns
    int64[out_size] (default [H, W]) indices into [background, fg_cams...]; with another
    out_size the walked scores are resized bilinearly to it before the argmax."""
    h, w = x.shape[-2:]
    if fg_cams.shape[-2:] != (h, w):
        resized = (
            F.interpolate(fg_cams[None], (h, w), mode="bilinear", align_corners=False)[0] if len(fg_cams) else None
        )
        fg_cams = fg_cams.new_zeros((0, h, w)) if resized is None else resized
    ph, pw = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    x = F.pad(x, (0, pw - w, 0, ph - h))
    bg = (
        (1 - fg_cams.amax(dim=0, keepdim=True)).pow(alpha)
        if len(fg_cams)
        else torch.ones((1, h, w), device=fg_cams.device)
    )
    scores = F.pad(torch.cat([bg.to(fg_cams.dtype), fg_cams]), (0, pw - w, 0, ph - h))
    scores = F.avg_pool2d(scores[None], STRIDE, STRIDE)[0]
    dense = model(x, to_dense=True)
    walked = random_walk(dense, scores.flatten(1).to(dense.dtype), beta, logt)
    walked = walked.view(1, -1, ph // STRIDE, pw // STRIDE)
    up = F.interpolate(walked, (ph, pw), mode="bilinear", align_corners=False)[0, :, :h, :w]
    if out_size is not None and tuple(out_size) != (h, w):
        up = F.interpolate(up[None], tuple(out_size), mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0)


def load_affinity(path: str | os.PathLike, device: torch.device | str = "cpu") -> AffinityNet:
    """Rebuild a trained AffinityNet (checkpoint kind "affinity"); eval mode, on `device`."""
    ckpt = load_model(path, "affinity")
    cfg = ckpt["config"]["affinity"]
    model = AffinityNet(float(cfg["width"]), int(cfg["radius"]), float(cfg.get("scale", 1.0)))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: state_dict does not match the configured AffinityNet ({e})") from e
    return model.to(device).eval()
