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

import functools
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import normalize
from conta_core.infra.config import require_keys
from conta_core.infra.device import inference_autocast, inference_model
from conta_core.infra.fileio import load_cam, save_label_png
from conta_core.infra.progress import Progress
from conta_core.models.irn import EdgeNet, edge_net_from_checkpoint
from conta_core.steps.cam import image_batches
from conta_core.steps.irn import STRIDE, build_pair_index, pair_offsets, path_cells

log = logging.getLogger("conta.random_walk")

RW_KEYS = ("radius", "beta", "exp_times", "bg_threshold")
PAIR_INDEX_CACHE = 4  # pair indices kept for reuse (grid size, radius, device): bounded memory
RW_WINDOW = 8  # make_pseudo_masks loads this many images at a time; same-size ones share the edge net pass


def check_rw_config(cfg: dict) -> None:
    """ValueError naming the first missing `random_walk.*` key."""
    require_keys(cfg, RW_KEYS, "random_walk")


def boundary_map(
    edge_net: EdgeNet, img_u8: np.ndarray, device: torch.device, pad_size: int | None = None
) -> np.ndarray:
    """Boundary probabilities float32[ceil(H/4), ceil(W/4)] of an image uint8[H, W, 3].

    sigmoid of the mean of the edge logits of the image and of its flip (flipped back).
    pad_size: None feeds the image as it is ([OURS], any size); an int pads the normalised
    image and its flip with zeros at the bottom/right to pad_size x pad_size before the edge
    network and crops the logits, as IRNet's EdgeDisplacement (crop_size 512). The padding
    changes the result: GroupNorm statistics and the border convolutions see the zeros.
    Sides above pad_size are padded to the next multiple of 16 (IRNet would fail there).
    """
    return boundary_maps(edge_net, [img_u8], device, pad_size)[0]


def padded_size(h: int, w: int, pad_size: int | None) -> tuple[int, int]:
    """The edge-network input size for an h x w image (see boundary_map)."""
    if pad_size is None:
        return h, w
    return max(int(pad_size), -(-h // 16) * 16), max(int(pad_size), -(-w // 16) * 16)


def boundary_maps(
    edge_net: EdgeNet, imgs: list[np.ndarray], device: torch.device, pad_size: int | None = None
) -> np.ndarray:
    """`boundary_map` of B images of one size in one pass: float32[B, ceil(H/4), ceil(W/4)].

    The batch is [img_1..img_B, flipped img_1..img_B] (on the CPU, inputs of >= 256 x 256 px
    through the BN-folded channels_last copy: device.inference_model); on CUDA it runs channels_last under
    bf16/fp16 autocast (logits averaged in fp32), on the CPU in fp32 (equal to per-image
    calls up to float32 rounding of the batched convolutions).
    """
    dev, b = torch.device(device), len(imgs)
    h, w = imgs[0].shape[:2]
    x = torch.from_numpy(np.stack([normalize(im) for im in imgs])).to(dev)
    batch = torch.cat([x, x.flip(-1)])
    ph, pw = padded_size(h, w, pad_size)
    if (ph, pw) != (h, w):
        batch = F.pad(batch, (0, pw - w, 0, ph - h))
    edge_net.eval()
    net, batch = inference_model(edge_net, batch)
    with torch.inference_mode():
        with inference_autocast(dev):
            logits = net(batch)[:, 0]
        logits = logits.float()[:, : -(-h // STRIDE), : -(-w // STRIDE)]
        mean = (logits[:b] + logits[b:].flip(-1)) / 2
        return torch.sigmoid(mean).cpu().numpy()


def _as_tensor(
    a: np.ndarray | torch.Tensor, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    t = torch.as_tensor(a, dtype=dtype)
    return t.to(device) if device is not None else t


@functools.lru_cache(maxsize=PAIR_INDEX_CACHE)
def _pair_index(height: int, width: int, radius: int, device: torch.device):
    """(conta_core.steps.irn.build_pair_index on `device`, its path cells per group as int64[G, N, L]),
    cached: images of one size share them."""
    index = build_pair_index(height, width, radius).to(device)
    return index, tuple(cells.permute(0, 2, 1).contiguous() for _, cells in index.groups)


def _path_affinity(boundary: torch.Tensor, index, cells_last: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """conta_core.steps.irn.pair_affinity of one map float32[h, w] -> [P, N], bit-identical: the same
    maxima, gathered with the path axis last so that the max reduces a contiguous axis."""
    flat = boundary.reshape(-1)
    maxes = torch.cat([flat[cells].amax(dim=-1) for cells in cells_last], dim=0)
    return 1.0 - maxes[index.group_order]


def affinity_pairs(boundary: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half-plane pairs inside the image: (src int64[E], dst int64[E], affinity float32[E]).

    boundary: float32[h, w]; affinity = 1 - max boundary on the path (not raised to beta).
    """
    h, w = boundary.shape
    index, cells_last = _pair_index(h, w, radius, boundary.device)
    aff = _path_affinity(boundary, index, cells_last)
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
    The steps run in scipy CSR on the CPU (`_walk_cpu`), in torch sparse CSR elsewhere.
    """
    b = _as_tensor(boundary, dtype=dtype)
    v = _seeds(cams, b)
    if b.device.type == "cpu":
        return _walk_cpu(b, v, beta, 2**exp_times if v.shape[1] else 0, radius).T.reshape(-1, *b.shape)
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


def _affinity_pairs_numpy(boundary: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`affinity_pairs` in numpy for the CPU: torch's parallel gathers on these small arrays
    cost ~30x more when the cores are shared (benchmarks/RESULTS.md). Same values."""
    h, w = boundary.shape
    index, cells_last = _pair_index(h, w, radius, torch.device("cpu"))
    flat = np.ascontiguousarray(boundary).reshape(-1)
    maxes = np.concatenate([flat[cells.numpy()].max(axis=-1) for cells in cells_last])[index.group_order.numpy()]
    valid = index.valid.numpy()
    src = np.broadcast_to(np.arange(h * w), valid.shape)[valid]
    return src, index.dst.numpy()[valid], (1.0 - maxes[valid]).astype(boundary.dtype, copy=False)


def _walk_cpu(b: torch.Tensor, v: torch.Tensor, beta: float, steps: int, radius: int) -> torch.Tensor:
    """CPU walk: `steps` products with the step matrix D^-1 A in scipy CSR: seeds v [N, P] -> [N, P].

    Same matrix as the torch path; scipy's single-threaded CSR product avoids torch's
    per-call parallel overhead (~2 ms per step when the cores are shared) and the COO
    coalesce. Column sums are accumulated in float64.
    """
    n = b.numel()
    src, dst, aff = _affinity_pairs_numpy(b.detach().numpy(), radius)
    w = np.power(aff, beta, dtype=aff.dtype)
    diag = np.arange(n)
    rows, cols = np.concatenate([src, dst, diag]), np.concatenate([dst, src, diag])
    vals = np.concatenate([w, w, np.ones(n, dtype=w.dtype)])
    col_sum = np.bincount(cols, weights=vals, minlength=n).astype(w.dtype)  # A symmetric: = row sums
    step = scipy.sparse.csr_matrix((vals / col_sum[rows], (rows, cols)), shape=(n, n))
    out = v.detach().numpy()
    for _ in range(steps):
        out = step @ out
    return torch.from_numpy(np.ascontiguousarray(out, dtype=w.dtype))


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
    img_u8: np.ndarray,
    cam_dict: dict,
    edge_net: EdgeNet,
    cfg: dict,
    device: torch.device,
    boundary: np.ndarray | None = None,
) -> np.ndarray:
    """IRNet semantic pseudo-mask uint8[H, W] (0 bg, keys+1 fg) from an image and its CAM dict.

    The stride-4 `cam` planes are propagated by the random walk, upsampled x4 (bilinear),
    cropped to H x W and divided by their global max; a constant background plane
    cfg["bg_threshold"] is prepended (the background is not propagated, as in IRNet) and the
    argmax is mapped to class ids. cfg: the `random_walk` section, optionally with
    "cam_power": the walk starts from cam ** cam_power (AMN: amn.rw_power = 1.3; default 1).
    boundary: the image's `boundary_map` float32[ceil(H/4), ceil(W/4)] if already computed.
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
    cams = cams ** float(cfg.get("cam_power", 1.0))
    if boundary is None:
        boundary = boundary_map(edge_net, img_u8, device, cfg.get("pad_size"))
    boundary = torch.from_numpy(np.ascontiguousarray(boundary, dtype=np.float32)).to(device)
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

    cam_files: image id -> CAM .npz; irn_checkpoint: train_irn's model.pth;
    cfg: the `random_walk` section.
    """
    check_rw_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in ids if not (out_dir / f"{i}.png").exists()]
    log.info("%d of %d pseudo-masks to make in %s", len(todo), len(ids), out_dir)
    if not todo:
        return
    missing = [i for i in todo if i not in cam_files]
    if missing:
        raise ValueError(f"image id {missing[0]!r}: no CAM file ({len(missing)} ids without one)")
    edge_net = edge_net_from_checkpoint(irn_checkpoint, device)
    if torch.device(device).type == "cuda":
        edge_net = edge_net.to(memory_format=torch.channels_last)
    bar = Progress("random_walk", len(todo), unit="img")
    for batch_ids, imgs in image_batches(manifest, todo, RW_WINDOW, [1.0], flip=True):
        for image_id, img, boundary in zip(batch_ids, imgs, boundary_maps(edge_net, imgs, device, cfg.get("pad_size"))):
            cam_path = cam_files[image_id]
            try:
                mask = pseudo_mask_from_cam(img, load_cam(cam_path), edge_net, cfg, device, boundary)
            except ValueError as e:
                raise ValueError(f"image id {image_id!r} ({cam_path}): {e}") from e
            save_label_png(out_dir / f"{image_id}.png", mask)
        bar.update(n=len(batch_ids))
    bar.close()
