"""IRNet boundary training: pixel pairs, affinity labels, the affinity loss and the training loop.

Pairs live on the stride-4 grid. A pair is a source pixel and a destination at an offset
(dy, dx) with dy^2 + dx^2 < radius^2 taken from one half-plane (dy > 0, or dy == 0 and
dx > 0), so each unordered pair appears once. The *path* of an offset is the set of grid
cells inside the bounding box of the segment from (0, 0) to (dy, dx) whose perpendicular
distance to that line is below one cell (IRNet's PathIndex rule); it contains both ends.
The affinity of a pair is 1 - (max boundary probability over its path).

Affinity labels come from an IR label map (0 bg, 1..C class, 255 uncertain) downsampled to
the stride-4 grid by nearest neighbour: bg-positive (both 0), fg-positive (same class > 0),
negative (different classes); pairs touching 255 are ignored. The loss is IRNet's:
(pos_bg / 2 + pos_fg / 2 + neg) / 2 with pos = mean -log(aff + eps) and
neg = mean -log(1 + eps - aff).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from conta_core.data.manifest import Manifest
from conta_core.data.transforms import augment, resize_label
from conta_core.infra.checkpoint import load_model, save_model
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import IGNORE_LABEL, load_image, load_label_png, write_csv
from conta_core.infra.training import Loop, Resume, fingerprint, fit, loader_options, poly_lr
from conta_core.models.backbone import check_backbone_init
from conta_core.models.irn import EdgeNet, load_backbone_from_classifier

log = logging.getLogger("conta.irn")

STRIDE = 4  # the boundary map and the pair grid are at stride 4
IRN_KEYS = (
    "backbone", "backbone_init", "pretrained", "freeze_bn", "radius", "epochs", "batch_size", "lr",
    "momentum", "weight_decay", "poly_power", "crop_size", "scale_range", "loss_eps",
)  # fmt: skip


# ----------------------------------------------------------------------------- pair indexing


def pair_offsets(radius: int) -> np.ndarray:
    """Directed half-plane offsets within `radius`: int64[P, 2] rows (dy, dx).

    (dy, dx) with dy^2 + dx^2 < radius^2 and (dy > 0 or (dy == 0 and dx > 0)), ordered by
    dy then dx. radius 5 -> 34 offsets, radius 10 -> 152 (half of the disc minus the centre).
    """
    if radius < 1:
        raise ValueError(f"pair radius must be >= 1, got {radius}")
    out = [
        (dy, dx)
        for dy in range(radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0)
    ]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def path_cells(dy: int, dx: int) -> np.ndarray:
    """Cells on the discretised segment (0, 0) -> (dy, dx): int64[L, 2] rows (y, x).

    A cell of the segment's bounding box is on the path when its perpendicular distance to
    the line through both ends is below 1 (squared: (dy*x - dx*y)^2 < dy^2 + dx^2).
    Both ends are included.
    """
    length_sq = dy * dy + dx * dx
    if length_sq == 0:
        return np.zeros((1, 2), dtype=np.int64)
    ys = np.arange(min(0, dy), max(0, dy) + 1)
    xs = np.arange(min(0, dx), max(0, dx) + 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    on = (dy * xx - dx * yy) ** 2 < length_sq
    return np.stack([yy[on], xx[on]], axis=1).astype(np.int64)


@dataclass(frozen=True)
class PairIndex:
    """All pairs of an h x w grid: source n (flattened y*w+x) and destination n + offset p.

    offsets: int64[P, 2]; dst: int64[P, N] flattened destination (clamped where invalid);
    valid: bool[P, N] the destination lies inside the grid;
    groups: offsets of equal path length L, as (offset ids int64[G], cells int64[G, L, N]
    flattened path cells per source, clamped where invalid).
    """

    height: int
    width: int
    radius: int
    offsets: torch.Tensor
    dst: torch.Tensor
    valid: torch.Tensor
    groups: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    group_order: torch.Tensor  # int64[P]: position of offset p in the concatenated groups

    @property
    def num_nodes(self) -> int:
        return self.height * self.width

    def to(self, device: torch.device) -> PairIndex:
        return PairIndex(
            self.height, self.width, self.radius, self.offsets.to(device), self.dst.to(device),
            self.valid.to(device), tuple((o.to(device), c.to(device)) for o, c in self.groups),
            self.group_order.to(device),
        )  # fmt: skip


def _flat_shifted(ys: np.ndarray, xs: np.ndarray, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    """Flattened index of (ys + dy, xs + dx), clamped into the h x w grid: int64[N]."""
    return np.clip(ys + dy, 0, h - 1) * w + np.clip(xs + dx, 0, w - 1)


def build_pair_index(height: int, width: int, radius: int) -> PairIndex:
    """Precompute pair destinations, validity and path cells for an h x w grid (CPU tensors)."""
    if height < 1 or width < 1:
        raise ValueError(f"pair grid must be non-empty, got {height}x{width}")
    offsets = pair_offsets(radius)
    ys, xs = np.divmod(np.arange(height * width, dtype=np.int64), width)
    dst, valid, cells_by_len = [], [], {}
    for p, (dy, dx) in enumerate(offsets):
        dst.append(_flat_shifted(ys, xs, dy, dx, height, width))
        valid.append((ys + dy < height) & (xs + dx >= 0) & (xs + dx < width))
        cells = np.stack([_flat_shifted(ys, xs, cy, cx, height, width) for cy, cx in path_cells(dy, dx)])
        cells_by_len.setdefault(len(cells), []).append((p, cells))
    groups, order = [], []
    for length in sorted(cells_by_len):
        members = cells_by_len[length]
        order += [p for p, _ in members]
        groups.append((torch.tensor([p for p, _ in members]), torch.from_numpy(np.stack([c for _, c in members]))))
    group_order = torch.empty(len(offsets), dtype=torch.int64)
    group_order[torch.tensor(order)] = torch.arange(len(offsets))
    return PairIndex(
        height, width, radius, torch.from_numpy(offsets), torch.from_numpy(np.stack(dst)),
        torch.from_numpy(np.stack(valid)), tuple(groups), group_order,
    )  # fmt: skip


def path_max(boundary: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """Max boundary probability along each pair's path.

    boundary: float32[B, h, w] in [0, 1] -> float32[B, P, N] (undefined where not index.valid).
    """
    b, h, w = boundary.shape
    if (h, w) != (index.height, index.width):
        raise ValueError(f"boundary map {h}x{w} does not match the pair grid {index.height}x{index.width}")
    flat = boundary.reshape(b, h * w)
    maxes = []
    for _, cells in index.groups:
        g, length, n = cells.shape
        vals = flat[:, cells.reshape(-1)].view(b, g, length, n)
        maxes.append(vals.max(dim=2).values)
    return torch.cat(maxes, dim=1)[:, index.group_order]


def pair_affinity(boundary: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """IRNet affinity 1 - max boundary on the path: float32[B, h, w] -> float32[B, P, N]."""
    return 1.0 - path_max(boundary, index)


# ----------------------------------------------------------------------------- labels and loss


def downsample_label(label: np.ndarray) -> np.ndarray:
    """IR label uint8[H, W] -> uint8[ceil(H/4), ceil(W/4)] by nearest neighbour (x0.25)."""
    h, w = label.shape
    return resize_label(label, (math.ceil(h / STRIDE), math.ceil(w / STRIDE)))


def affinity_labels(labels: torch.Tensor, index: PairIndex) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair classes from stride-4 labels int64[B, h, w] (0 bg, 1..C, 255 ignore).

    Returns bool[B, P, N] masks (bg_pos, fg_pos, neg): both 0; same class > 0; different
    classes. Pairs with a 255 end or a destination outside the grid are in none of them.
    """
    b = labels.shape[0]
    flat = labels.reshape(b, -1).long()
    src = flat[:, None, :]
    dst = flat[:, index.dst]
    known = index.valid[None] & (src != IGNORE_LABEL) & (dst != IGNORE_LABEL)
    bg_pos = known & (src == 0) & (dst == 0)
    fg_pos = known & (src == dst) & (src > 0)
    neg = known & (src != dst)
    return bg_pos, fg_pos, neg


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask`; 0 when the mask is empty (unmasked entries may be inf)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def affinity_loss(
    aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor, eps: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """IRNet's boundary loss: (pos_bg/2 + pos_fg/2 + neg) / 2.

    aff: float32[B, P, N] affinities in [0, 1]; masks: bool[B, P, N]; eps keeps the logs finite.
    Returns (scalar loss, {"pos_bg", "pos_fg", "neg"} plain floats).
    """
    pos_term = -torch.log(aff + eps)
    neg_term = -torch.log(1.0 + eps - aff)
    pos_bg = _masked_mean(pos_term, bg_pos)
    pos_fg = _masked_mean(pos_term, fg_pos)
    neg_l = _masked_mean(neg_term, neg)
    loss = (pos_bg / 2 + pos_fg / 2 + neg_l) / 2
    parts = {"pos_bg": pos_bg, "pos_fg": pos_fg, "neg": neg_l}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


# ----------------------------------------------------------------------------- training


def check_irn_config(cfg: dict) -> None:
    """ValueError naming the first missing or bad `irn.*` key."""
    require_keys(cfg, IRN_KEYS, "irn")
    check_backbone_init(cfg, "irn")


def build_edge_net(cfg: dict, init_state: dict | None, seed: int) -> EdgeNet:
    """EdgeNet per `cfg` (irn section), backbone initialised per irn.backbone_init.

    init_state: the CAM classifier's state_dict (required for backbone_init 'classifier').
    Random initialisation draws from a generator seeded with `seed` (global RNG untouched).
    """
    check_irn_config(cfg)
    init = cfg["backbone_init"]
    if init == "classifier" and init_state is None:
        raise config_error("irn.backbone_init", "is 'classifier' but no classifier checkpoint was given")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EdgeNet(cfg["backbone"], pretrained=cfg["pretrained"] if init == "pretrained" else None,
                      freeze_bn=cfg["freeze_bn"])  # fmt: skip
    if init == "classifier":
        load_backbone_from_classifier(net, init_state)
    return net


class IrnTrainSet(Dataset):
    """Images + IR labels with IRNet's augmentation; items are addressed by (epoch, i).

    Returns (float32[3, S, S] normalised crop, int64[ceil(S/4), ceil(S/4)] stride-4 labels).
    Each (epoch, i) draws from its own np.random.default_rng([seed, epoch, i]), so the
    result does not depend on worker processes or order.
    """

    def __init__(self, manifest: Manifest, ids: list[str], ir_label_files: dict, cfg: dict, seed: int) -> None:
        self.manifest, self.ids, self.files, self.cfg, self.seed = manifest, ids, ir_label_files, cfg, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        image_id = self.ids[i]
        img = load_image(self.manifest.image_file(image_id))
        label = load_label_png(self.files[image_id])
        if label.shape != img.shape[:2]:
            raise ValueError(
                f"image id {image_id!r}: IR label {label.shape} != image {img.shape[:2]} ({self.files[image_id]})"
            )
        rng = np.random.default_rng([self.seed, epoch, i])
        scale_range = tuple(self.cfg["scale_range"])
        x, (lab,) = augment(img, [label], rng, scale_range, self.cfg["crop_size"], map_pad=IGNORE_LABEL)
        return torch.from_numpy(x), torch.from_numpy(downsample_label(lab).astype(np.int64))


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int) -> list[list[tuple[int, int]]]:
    """Shuffled full batches of (epoch, index) keys; one batch of all items when n < batch_size."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    bs = min(batch_size, n)
    return [[(epoch, int(i)) for i in perm[k : k + bs]] for k in range(0, n - bs + 1, bs)]


def train_irn(
    manifest: Manifest,
    ids: list[str],
    ir_label_files: dict[str, Path],
    cfg: dict,
    device: torch.device,
    out_path: Path,
    init_state: dict | None,
    seed: int,
    log_csv: Path | None,
    num_workers: int = 0,
    checkpoint: dict | None = None,
) -> None:
    """Train the IRNet boundary branch on IR labels and save {"state_dict", "config", ...}.

    cfg: the `irn` config section. init_state: CAM classifier state_dict (backbone_init
    'classifier'). SGD with cfg momentum / weight decay, poly LR decay per iteration, random
    rescale / flip / crop (labels padded with 255). log_csv gets one row per iteration:
    epoch, iter, loss, lr, pos_bg, pos_fg, neg (rewritten after every epoch). num_workers:
    DataLoader worker processes (config loader_workers; results do not depend on it).
    checkpoint: the `checkpoint` config section (conta_core.infra.training: resumable checkpoints
    in <out_path>.resume/, resumed by a rerun).
    """
    check_irn_config(cfg)
    if not ids:
        raise ValueError("train_irn: no training image ids")
    missing = [i for i in ids if i not in ir_label_files]
    if missing:
        raise ValueError(f"image id {missing[0]!r}: no IR label file ({len(missing)} ids missing)")
    net = build_edge_net(cfg, init_state, seed).to(device).train()
    params = net.trainable_parameters()
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    dataset = IrnTrainSet(manifest, list(ids), ir_label_files, cfg, seed)
    grid = math.ceil(cfg["crop_size"] / STRIDE)
    index = build_pair_index(grid, grid, cfg["radius"]).to(device)
    steps_per_epoch = len(epoch_batches(len(ids), cfg["batch_size"], 0, seed))
    max_step = cfg["epochs"] * steps_per_epoch
    options = loader_options(num_workers, device, seed)

    def batches(epoch: int, skip: int) -> DataLoader:
        return DataLoader(dataset, batch_sampler=epoch_batches(len(ids), cfg["batch_size"], epoch, seed)[skip:],
                          **options)  # fmt: skip

    def end_epoch(epoch: int, rows: list[dict]) -> None:
        log.info("epoch %d: loss %.4f", epoch, float(np.mean([r["loss"] for r in rows if r["epoch"] == epoch])))
        if log_csv is not None:
            write_csv(log_csv, pd.DataFrame(rows, columns=LOG_COLUMNS))

    resume = Resume(out_path, checkpoint, fingerprint("train_irn", cfg, list(ids), seed))
    step_fn = functools.partial(_step, net=net, opt=opt, index=index, cfg=cfg, max_step=max_step, device=device)
    rows = fit(
        Loop(
            name="train_irn",
            model=net,
            optimizer=opt,
            max_step=max_step,
            steps_per_epoch=steps_per_epoch,
            batches=batches,
            step=step_fn,
            resume=resume,
            generators=[options["generator"]],
            end_epoch=end_epoch,
        )
    )
    save_model(out_path, "irn", net, dict(cfg), num_images=len(ids), iterations=len(rows), seed=seed)
    resume.finish()


LOG_COLUMNS = ["epoch", "iter", "loss", "lr", "pos_bg", "pos_fg", "neg"]  # train_irn's train_log.csv


def _step(
    batch: tuple[torch.Tensor, torch.Tensor],
    step: int,
    epoch: int,
    *,
    net: EdgeNet,
    opt: torch.optim.Optimizer,
    index: PairIndex,
    cfg: dict,
    max_step: int,
    device,
) -> dict:
    """One SGD step on the affinity loss; the row (epoch, iter, loss, lr, pos_bg, pos_fg, neg)."""
    lr = poly_lr(cfg["lr"], step, max_step, cfg["poly_power"])
    for group in opt.param_groups:
        group["lr"] = lr
    x, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    boundary = torch.sigmoid(net(x))[:, 0]
    aff = pair_affinity(boundary, index)
    loss, parts = affinity_loss(aff, *affinity_labels(labels, index), eps=cfg["loss_eps"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"epoch": epoch, "iter": step, "loss": float(loss.detach()), "lr": lr, **parts}


def load_classifier_state(path: str | Path) -> dict:
    """The state_dict of a CAM classifier checkpoint (conta_core.infra.checkpoint, kind classifier)."""
    return load_model(path, "classifier", required=())["state_dict"]
