"""Boundary-guided random walk: CAMs + IRNet boundaries -> pseudo-masks (IRNet semantics).

On the stride-4 grid of an image (N = h*w pixels) the affinity of two pixels within
`radius` is A_ij = (1 - max boundary on the path between them) ** beta (A symmetric,
A_ii = 1, 0 beyond the radius). The transition matrix is A with columns normalised to
sum 1, T_ij = A_ij / sum_k A_kj, and the seeds v = cam * (1 - boundary) are propagated
as rw = v T^(2^exp_times) (row vectors; IRNet squares a dense N x N matrix exp_times times).

`random_walk` applies the sparse T to the seeds 2^exp_times times instead, which is the
same maths in O(N * radius^2) memory; `random_walk_dense` is the small dense reference.
Pairs whose path would leave the image do not exist here; IRNet pads the boundary map with
1, which gives those pairs zero affinity, i.e. the same matrix.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import normalize
from conta_core.io import load_cam, load_image, save_label_png
from conta_core.irn import STRIDE, build_pair_index, pair_affinity, pair_offsets, path_cells
from conta_core.models.irn import EdgeNet, edge_net_from_checkpoint
from conta_core.runtime import progress_enabled

log = logging.getLogger("conta.random_walk")

RW_KEYS = ("radius", "beta", "exp_times", "bg_threshold")


def check_rw_config(cfg: dict) -> None:
    """ValueError naming the first missing `random_walk.*` key."""
    for key in RW_KEYS:
        if key not in cfg:
            raise ValueError(f"config key random_walk.{key} is missing")


def boundary_map(edge_net: EdgeNet, img_u8: np.ndarray, device: torch.device) -> np.ndarray:
    """Boundary probabilities float32[ceil(H/4), ceil(W/4)] of an image uint8[H, W, 3].

    sigmoid of the mean of the edge logits of the image and of its flip (flipped back).
    Any image size works (no padding).
    """
    x = torch.from_numpy(normalize(img_u8)).to(device)
    batch = torch.stack([x, x.flip(-1)])
    edge_net.eval()
    with torch.inference_mode():
        logits = edge_net(batch)[:, 0]
        mean = (logits[0] + logits[1].flip(-1)) / 2
        return torch.sigmoid(mean).float().cpu().numpy()


def _as_tensor(
    a: np.ndarray | torch.Tensor, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    t = torch.as_tensor(a, dtype=dtype)
    return t.to(device) if device is not None else t


def affinity_pairs(boundary: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half-plane pairs inside the image: (src int64[E], dst int64[E], affinity float32[E]).

    boundary: float32[h, w]; affinity = 1 - max boundary on the path (not raised to beta).
    """
    h, w = boundary.shape
    index = build_pair_index(h, w, radius).to(boundary.device)
    aff = pair_affinity(boundary[None], index)[0]
    src = torch.arange(h * w, device=boundary.device).expand_as(index.dst)
    valid = index.valid
    return src[valid], index.dst[valid], aff[valid]


def affinity_matrix_sparse(
    boundary: np.ndarray | torch.Tensor, beta: float, radius: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A^beta as a sparse COO float32[N, N] (N = h*w): symmetric, diagonal 1, pairs within radius.

    boundary: float32[h, w] in [0, 1] (torch tensors keep their device); dtype of the result.
    """
    b = _as_tensor(boundary, dtype=dtype)
    n = b.numel()
    src, dst, aff = affinity_pairs(b, radius)
    diag = torch.arange(n, device=b.device)
    rows = torch.cat([src, dst, diag])
    cols = torch.cat([dst, src, diag])
    vals = torch.cat([aff.pow(beta), aff.pow(beta), torch.ones(n, device=b.device, dtype=dtype)])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()


def _seeds(cams: np.ndarray | torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """Seed matrix [N, P] = cams * (1 - boundary), pixels as rows (boundary's dtype and device)."""
    c = _as_tensor(cams, boundary.device, boundary.dtype)
    if c.ndim != 3 or c.shape[1:] != boundary.shape:
        raise ValueError(f"random walk: cams {tuple(c.shape)} do not match the boundary map {tuple(boundary.shape)}")
    return (c * (1.0 - boundary)).reshape(c.shape[0], -1).T


def random_walk(
    cams: np.ndarray | torch.Tensor,
    boundary: np.ndarray | torch.Tensor,
    beta: float,
    exp_times: int,
    radius: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Propagate score planes along boundary-aware affinities (sparse, IRNet semantics).

    cams: float32[P, h, w] planes to propagate (IRNet: the K foreground CAMs at stride 4);
    boundary: float32[h, w]. Returns [P, h, w] = v T^(2^exp_times) in `dtype` on boundary's
    device. The 2^exp_times float32 steps drift ~1e-4 relative from exact arithmetic.
    """
    b = _as_tensor(boundary, dtype=dtype)
    v = _seeds(cams, b)
    a = affinity_matrix_sparse(b, beta, radius, dtype)
    col_sum = torch.sparse.sum(a, dim=0).to_dense()  # A symmetric: column sums = row sums
    rows = a.indices()[0]
    # (v T)^T = D^-1 A v^T with D = diag(column sums): one sparse matvec per walk step.
    step = torch.sparse_coo_tensor(a.indices(), a.values() / col_sum[rows], a.shape, check_invariants=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"; CSR is ~25x faster than COO here
        warnings.simplefilter("ignore", UserWarning)
        step = step.coalesce().to_sparse_csr()
    for _ in range(2**exp_times if v.shape[1] else 0):
        v = torch.sparse.mm(step, v)
    return v.T.reshape(-1, *b.shape)


def random_walk_dense(
    cams: np.ndarray | torch.Tensor,
    boundary: np.ndarray | torch.Tensor,
    beta: float,
    exp_times: int,
    radius: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dense reference of `random_walk` for small grids (IRNet's literal N x N computation).

    Builds A pixel pair by pixel pair, T = column-normalised A^beta, squares T exp_times
    times and returns v T as [P, h, w] in `dtype`.
    """
    b = _as_tensor(boundary, dtype=dtype)
    h, w = b.shape
    a = torch.eye(h * w, dtype=dtype, device=b.device)
    for dy, dx in pair_offsets(radius).tolist():
        cells = path_cells(dy, dx)
        for y in range(h):
            for x in range(w):
                if not (0 <= y + dy < h and 0 <= x + dx < w):
                    continue
                m = max(float(b[y + cy, x + cx]) for cy, cx in cells)
                i, j = y * w + x, (y + dy) * w + x + dx
                a[i, j] = a[j, i] = (1.0 - m) ** beta
    t = a / a.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    v = _seeds(cams, b).T
    return (v @ t).reshape(-1, h, w)


def pseudo_mask_from_cam(
    img_u8: np.ndarray, cam_dict: dict, edge_net: EdgeNet, cfg: dict, device: torch.device
) -> np.ndarray:
    """IRNet semantic pseudo-mask uint8[H, W] (0 bg, keys+1 fg) from an image and its CAM dict.

    The stride-4 `cam` planes are propagated by the random walk, upsampled x4 (bilinear),
    cropped to H x W and divided by their global max; a constant background plane
    cfg["bg_threshold"] is prepended (the background is not propagated, as in IRNet) and the
    argmax is mapped to class ids. cfg: the `random_walk` section.
    """
    check_rw_config(cfg)
    h, w = img_u8.shape[:2]
    for key in ("keys", "cam"):
        if key not in cam_dict:
            raise ValueError(f"CAM dict has no {key!r} entry")
    keys = np.asarray(cam_dict["keys"], dtype=np.int64).reshape(-1)
    cams = np.asarray(cam_dict["cam"], dtype=np.float32)
    grid = (math.ceil(h / STRIDE), math.ceil(w / STRIDE))
    if cams.shape != (len(keys), *grid):
        raise ValueError(f"CAM 'cam' has shape {cams.shape}, expected {(len(keys), *grid)} for a {h}x{w} image")
    if len(keys) == 0:
        return np.zeros((h, w), dtype=np.uint8)
    boundary = torch.from_numpy(boundary_map(edge_net, img_u8, device)).to(device)
    with torch.inference_mode():
        rw = random_walk(torch.from_numpy(cams).to(device), boundary, cfg["beta"], cfg["exp_times"], cfg["radius"])
        up = F.interpolate(rw[None], scale_factor=STRIDE, mode="bilinear", align_corners=False)[0, :, :h, :w]
        up = up / up.max().clamp(min=torch.finfo(up.dtype).tiny)
        scores = torch.cat([torch.full_like(up[:1], cfg["bg_threshold"]), up])
    class_ids = np.concatenate([[0], keys + 1])
    return class_ids[scores.argmax(dim=0).cpu().numpy()].astype(np.uint8)


def make_pseudo_masks(
    manifest: Manifest,
    ids: list[str],
    cam_files: dict[str, Path],
    irn_checkpoint: Path,
    out_dir: Path,
    cfg: dict,
    device: torch.device,
) -> None:
    """Write out_dir/<id>.png (VOC palette) pseudo-masks for `ids`; existing files are kept.

    cam_files: image id -> CAM .npy; irn_checkpoint: train_irn's model.pth;
    cfg: the `random_walk` section.
    """
    check_rw_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in ids if not (out_dir / f"{i}.png").exists()]
    log.info("%d of %d pseudo-masks to make in %s", len(todo), len(ids), out_dir)
    if not todo:
        return
    edge_net = edge_net_from_checkpoint(irn_checkpoint, device)
    for image_id in tqdm(todo, desc="random_walk", disable=not progress_enabled()):
        img = load_image(manifest.image_file(image_id))
        if image_id not in cam_files:
            raise ValueError(f"image id {image_id!r}: no CAM file")
        cam_path = cam_files[image_id]
        try:
            mask = pseudo_mask_from_cam(img, load_cam(cam_path), edge_net, cfg, device)
        except ValueError as e:
            raise ValueError(f"image id {image_id!r} ({cam_path}): {e}") from e
        save_label_png(out_dir / f"{image_id}.png", mask)
