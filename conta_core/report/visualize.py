"""Per-image overview grids of a run's artifacts (one PNG per image, rows = rounds).

Columns of a grid (every row = one round t):
    image | GT | CAM <class> (one per image-level class) | IR label | pseudo-mask |
    seg prediction | M_t (only when some round > 0)
- CAMs: the `high_res` map of the class (conta_core.infra.fileio.load_cam), jet colour map blended
  over the image;
- label maps (GT, IR label, pseudo-mask, prediction): VOC palette, 255 (ignore /
  uncertain) white;
- M_t: the context map of round t > 0, computed on the fly from round t's classifier
  checkpoint (its context module and confounder buffer) and X_m = round t-1's mask of the
  image (seg_pred, or pseudo_mask when the checkpoint's context.confounder_source is
  "pseudo"), upsampled bilinearly to the image size; the title names the class with the
  largest attention weight alpha.
Any artifact that is absent or unreadable becomes a grey tile saying why; rendering never
fails because a step has not run yet.

Drawing uses matplotlib's object API (matplotlib.figure.Figure, Agg canvas): no pyplot
state, no global backend switch. Every tile is resized to tile_px x tile_px beforehand, so
a grid of R rows and K columns is exactly `grid_pixel_size(R, K, tile_px)` pixels.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.infra.fileio import (
    CAM_SUFFIX,
    IGNORE_LABEL,
    atomic_path,
    load_cam,
    load_image,
    load_label_png,
    voc_palette,
)
from conta_core.infra.layout import RunLayout
from conta_core.infra.progress import track

log = logging.getLogger("conta.visualize")

DEFAULT_TILE_PX = 128  # report.tile_px
DEFAULT_DPI = 100  # report.dpi
TITLE_FRACTION = 6  # title band height = tile_px // TITLE_FRACTION
LABEL_FRACTION = 4  # left row-label band width = tile_px // LABEL_FRACTION
FONT_FILL = 0.55  # font height as a fraction of the title band
POINTS_PER_INCH = 72.0
CAM_ALPHA = 0.5  # weight of the CAM colour map over the image
OVERLAY_ALPHA = 0.5  # weight of label colours over the image (conta predict overlays)
MISSING_GREY = 160  # grey level of a "missing" tile
PAD_GREY = 230  # letterbox padding of non-square tiles (light grey: white means "ignore")
GAP_FRACTION = 32  # white gap around each tile's content = max(1, tile_px // GAP_FRACTION)
CAM_COLORMAP = "jet"
CONTEXT_COLORMAP = "viridis"
SAMPLE_SPLITS = ("train_eval", "train")  # split that render_samples draws ids from (first present)

_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(-1, 3)


# ----------------------------------------------------------------------------- colouring


def colorize_label(label: np.ndarray) -> np.ndarray:
    """label: uint8[H, W] class indices -> uint8[H, W, 3] VOC colours (255 white)."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"colorize_label: label map must be 2-D, got shape {label.shape}")
    return _PALETTE[label.astype(np.uint8)]


def overlay_label(img: np.ndarray, label: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend VOC label colours over an image: uint8[H, W, 3] (ignore pixels keep the image)."""
    _check_same_size(img, label, "overlay_label")
    colours = colorize_label(label).astype(np.float32)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * colours
    out = np.where((np.asarray(label) == IGNORE_LABEL)[..., None], img.astype(np.float32), out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heatmap(values: np.ndarray, colormap: str, vmax: float | None = None) -> np.ndarray:
    """values: float[H, W] >= 0 -> uint8[H, W, 3] through `colormap` scaled to [0, vmax]."""
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max(initial=0.0)) if vmax is None else float(vmax)
    scaled = np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)
    rgba = colormaps[colormap](scaled)
    return np.rint(rgba[..., :3] * 255).astype(np.uint8)


def cam_overlay(img: np.ndarray | None, cam: np.ndarray, alpha: float = CAM_ALPHA) -> np.ndarray:
    """A CAM float32[H, W] in [0, 1] as jet colours blended over img uint8[H, W, 3] (or alone)."""
    colours = heatmap(cam, CAM_COLORMAP, vmax=1.0)
    if img is None or img.shape[:2] != cam.shape:
        return colours
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _check_same_size(img: np.ndarray, label: np.ndarray, what: str) -> None:
    if img.ndim != 3 or img.shape[:2] != np.asarray(label).shape:
        raise ValueError(f"{what}: image {img.shape} and label map {np.asarray(label).shape} differ in size")


# ----------------------------------------------------------------------------- artifacts


def find_artifact(round_dir: Path, what: str, image_id: str, suffix: str) -> Path | None:
    """round_dir/<what>/<shard>/<image_id><suffix> for whichever shard holds it, else None."""
    pattern = os.path.join(glob.escape(str(round_dir / what)), "*", glob.escape(image_id) + suffix)
    hits = sorted(glob.glob(pattern))
    return Path(hits[0]) if hits else None


def find_prediction(round_dir: Path, image_id: str) -> Path | None:
    """The segmentation prediction of an image in seg_pred/train or seg_pred/val."""
    for split in ("train", "val"):
        hit = find_artifact(round_dir, f"seg_pred/{split}", image_id, ".png")
        if hit is not None:
            return hit
    return None


# ----------------------------------------------------------------------------- tiles


@dataclass
class Tile:
    """One grid cell: rgb uint8[h, w, 3] with a title, or None for a grey tile showing `note`."""

    title: str
    rgb: np.ndarray | None = None
    note: str = "missing"
    nearest: bool = False  # label maps: resize with nearest neighbour


def _fit(tile: Tile, tile_px: int) -> np.ndarray:
    """The tile as uint8[tile_px, tile_px, 3]: a white gap around the content, which keeps
    its aspect ratio (letterboxed light grey) or is uniform grey for a missing artifact."""
    gap = max(1, tile_px // GAP_FRACTION)
    inner = tile_px - 2 * gap
    out = np.full((tile_px, tile_px, 3), 255, dtype=np.uint8)
    if tile.rgb is None:
        out[gap : gap + inner, gap : gap + inner] = MISSING_GREY
        return out
    h, w = tile.rgb.shape[:2]
    scale = inner / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if tile.nearest else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(np.ascontiguousarray(tile.rgb)).resize(size, resample))
    out[gap : gap + inner, gap : gap + inner] = PAD_GREY
    y0, x0 = gap + (inner - size[1]) // 2, gap + (inner - size[0]) // 2
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return out


def _label_tile(title: str, path: Path | None) -> Tile:
    if path is None:
        return Tile(title)
    try:
        return Tile(title, colorize_label(load_label_png(path)), nearest=True)
    except ValueError as e:
        log.warning("%s", e)
        return Tile(title, note="unreadable")


def _cam_tiles(path: Path | None, img: np.ndarray | None, classes: list[int], names: list[str]) -> list[Tile]:
    """One tile per foreground class (1..C) of the image from a CAM file (keys 0-based)."""
    titles = [names[k] if k < len(names) else f"class {k}" for k in classes]
    if path is None:
        return [Tile(f"CAM {n}") for n in titles]
    try:
        cam = load_cam(path)
        keys = [int(k) for k in np.asarray(cam["keys"]).ravel()]
        high_res = np.asarray(cam["high_res"], dtype=np.float32)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: unreadable CAM (%s)", path, e)
        return [Tile(f"CAM {n}", note="unreadable") for n in titles]
    tiles = []
    for k, name in zip(classes, titles):
        if k - 1 in keys:
            tiles.append(Tile(f"CAM {name}", cam_overlay(img, high_res[keys.index(k - 1)])))
        else:
            tiles.append(Tile(f"CAM {name}", note="no CAM"))
    return tiles


# ----------------------------------------------------------------------------- context map


@functools.lru_cache(maxsize=4)
def _classifier(path: str, mtime: float, device: str) -> torch.nn.Module:
    from conta_core.models.classifier import load_classifier

    return load_classifier(path, torch.device(device))


def context_map(model: torch.nn.Module, xm_label: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """M and alpha of one image from a context classifier and its X_m label map.

    xm_label: uint8[H, W] (0 bg, 1..C, 255 ignore). Returns (M float32[h, w], alpha float32[n]).
    """
    xm = torch.from_numpy(model.encode_xm(xm_label))[None].to(device)
    with torch.inference_mode():
        m, alpha = model.context_map(xm)
    return m[0, 0].float().cpu().numpy(), alpha[0].float().cpu().numpy()


def _context_tile(
    layout: RunLayout, image_id: str, t: int, names: list[str], size: tuple[int, int] | None, device: torch.device
) -> Tile:
    """The M_t tile of round t > 0 (see module docstring); a note tile when it cannot be computed."""
    title = f"M_{t}"
    ckpt = Path(layout.model(t, "cls"))
    if not ckpt.is_file():
        return Tile(title, note="no classifier")
    try:
        model = _classifier(str(ckpt), ckpt.stat().st_mtime, str(device))
    except ImportError:
        return Tile(title, note="no classifier module")
    except (ValueError, RuntimeError, KeyError) as e:
        log.warning("%s: cannot load the classifier for M_%d (%s)", ckpt, t, e)
        return Tile(title, note="unloadable")
    if not getattr(model, "uses_context", False):
        return Tile(title, note="no context")
    prev = Path(layout.round_dir(t - 1))
    source = (model.context_cfg or {}).get("confounder_source", "seg")
    if source == "pseudo":
        xm_path = find_artifact(prev, "pseudo_mask", image_id, ".png")
    else:
        xm_path = find_prediction(prev, image_id)
    if xm_path is None:
        return Tile(title, note=f"no X_m (round {t - 1})")
    try:
        m, alpha = context_map(model, load_label_png(xm_path), device)
    except (ValueError, RuntimeError) as e:
        log.warning("M_%d of %s: %s", t, image_id, e)
        return Tile(title, note="error")
    if size is not None:
        m = torch.nn.functional.interpolate(
            torch.from_numpy(m)[None, None], size=size, mode="bilinear", align_corners=False
        )[0, 0].numpy()
    if model.inject == "xm":  # X_m itself in M's place, no attention
        return Tile(f"X_m ({t - 1})", heatmap(m, CONTEXT_COLORMAP))
    top = int(np.argmax(alpha))
    top_name = names[top + 1] if top + 1 < len(names) else f"c{top}"
    return Tile(f"{title} α→{top_name}", heatmap(m, CONTEXT_COLORMAP))


# ----------------------------------------------------------------------------- grid


def grid_columns(manifest: Manifest, image_id: str, rounds: list[int]) -> list[str]:
    """Column titles of the grid of `image_id` (see module docstring)."""
    names = [manifest.class_names[k] for k in manifest.labels.get(image_id, [])]
    cols = ["image", "GT", *[f"CAM {n}" for n in names], "IR label", "pseudo-mask", "seg pred"]
    return cols + (["M_t"] if any(t > 0 for t in rounds) else [])


def grid_pixel_size(num_rows: int, num_cols: int, tile_px: int = DEFAULT_TILE_PX) -> tuple[int, int]:
    """(width, height) in pixels of a grid with num_rows rounds and num_cols columns."""
    return (tile_px // LABEL_FRACTION + num_cols * tile_px, num_rows * (tile_px + tile_px // TITLE_FRACTION))


def _row_tiles(
    layout: RunLayout,
    manifest: Manifest,
    image_id: str,
    t: int,
    img: np.ndarray | None,
    gt: Tile,
    with_context: bool,
    device: torch.device,
) -> list[Tile]:
    rd = Path(layout.round_dir(t))
    classes = list(manifest.labels.get(image_id, []))
    image_tile = Tile("image", img) if img is not None else Tile("image")
    row = [image_tile, gt]
    row += _cam_tiles(find_artifact(rd, "cam", image_id, CAM_SUFFIX), img, classes, manifest.class_names)
    row += [
        _label_tile("IR label", find_artifact(rd, "ir_label", image_id, ".png")),
        _label_tile("pseudo-mask", find_artifact(rd, "pseudo_mask", image_id, ".png")),
        _label_tile("seg pred", find_prediction(rd, image_id)),
    ]
    if with_context:
        size = None if img is None else img.shape[:2]
        if t > 0:
            row.append(_context_tile(layout, image_id, t, manifest.class_names, size, device))
        else:
            row.append(Tile("M_0", note="round 0: none"))
    return row


def _load_inputs(manifest: Manifest, image_id: str) -> tuple[np.ndarray | None, Tile]:
    """(image uint8[H, W, 3] or None, GT tile)."""
    img = None
    if image_id in manifest.images:
        try:
            img = load_image(manifest.image_file(image_id))
        except ValueError as e:
            log.warning("%s", e)
    mask = manifest.mask_file(image_id)
    gt = _label_tile("GT", mask) if mask is not None else Tile("GT", note="no GT")
    return img, gt


def render_image_grid(
    run_dir: Path,
    image_id: str,
    rounds: list[int],
    out_png: Path,
    *,
    tile_px: int = DEFAULT_TILE_PX,
    dpi: int = DEFAULT_DPI,
    device: torch.device | str = "cpu",
    manifest: Manifest | None = None,
    shared_dir: Path | None = None,
) -> None:
    """Write the overview grid of one image (rows = rounds) to out_png atomically.

    run_dir: results/<run> (its data/manifest.json is read unless `manifest` is given);
    shared_dir: the base run folder holding data/ and round 0 (a study run, conta_core.infra.layout).
    The PNG is grid_pixel_size(len(rounds), len(grid_columns(...)), tile_px) pixels.
    """
    layout = RunLayout(run_dir, shared=shared_dir)
    if not rounds:
        raise ValueError(f"render_image_grid: no rounds given for image {image_id!r}")
    if manifest is None:
        manifest = Manifest.load(layout.manifest)
    device = torch.device(device)
    img, gt = _load_inputs(manifest, image_id)
    with_context = any(t > 0 for t in rounds)
    rows = [_row_tiles(layout, manifest, image_id, t, img, gt, with_context, device) for t in rounds]
    _draw_grid(rows, [f"round {t}" for t in rounds], Path(out_png), tile_px, dpi, title=image_id)


def _draw_grid(
    rows: list[list[Tile]], row_labels: list[str], out_png: Path, tile_px: int, dpi: int, title: str
) -> None:
    """Lay tiles out pixel-exactly (see grid_pixel_size) and save the PNG."""
    ncols = max(len(r) for r in rows)
    width, height = grid_pixel_size(len(rows), ncols, tile_px)
    label_px, title_px = tile_px // LABEL_FRACTION, tile_px // TITLE_FRACTION
    fontsize = title_px * FONT_FILL * POINTS_PER_INCH / dpi
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        top = r * (tile_px + title_px)
        fig.text(
            label_px / 2 / width,
            1 - (top + title_px + tile_px / 2) / height,
            label,
            rotation=90,
            ha="center",
            va="center",
            fontsize=fontsize,
        )
        for c, tile in enumerate(row):
            x0 = label_px + c * tile_px
            ax = fig.add_axes((x0 / width, 1 - (top + title_px + tile_px) / height, tile_px / width, tile_px / height))
            ax.imshow(_fit(tile, tile_px), interpolation="nearest", aspect="auto")
            ax.set_axis_off()
            fig.text(
                (x0 + tile_px / 2) / width,
                1 - (top + title_px / 2) / height,
                tile.title,
                ha="center",
                va="center",
                fontsize=fontsize,
                clip_on=True,
            )
            if tile.rgb is None:
                ax.text(
                    0.5,
                    0.5,
                    tile.note,
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="black",
                    wrap=True,
                )
    fig.text(1 / width, 1 - 1 / height, title, ha="left", va="top", fontsize=fontsize * 0.8, color="dimgray")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


# ----------------------------------------------------------------------------- samples


def sample_ids(manifest: Manifest, num_images: int, seed: int) -> list[str]:
    """A deterministic sample of `num_images` ids (sorted) from train_eval (else train)."""
    split = next((s for s in SAMPLE_SPLITS if s in manifest.splits), None)
    if split is None:
        raise ValueError(f"manifest {manifest.name}: none of the splits {SAMPLE_SPLITS} to sample images from")
    ids = sorted(manifest.ids(split))
    n = min(int(num_images), len(ids))
    picked = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return sorted(ids[i] for i in picked)


def render_samples(
    run_dir: Path,
    rounds: list[int],
    ids: list[str] | None,
    num_images: int,
    seed: int,
    out_dir: Path,
    *,
    tile_px: int = DEFAULT_TILE_PX,
    dpi: int = DEFAULT_DPI,
    device: torch.device | str = "cpu",
    shared_dir: Path | None = None,
) -> list[Path]:
    """Render out_dir/<id>.png for `ids` (None: sample_ids(manifest, num_images, seed)).

    Returns the written paths. Unknown ids raise ValueError naming the id and the manifest.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    manifest_path = Path(RunLayout(run_dir, shared=shared_dir).manifest)
    manifest = Manifest.load(manifest_path)
    if ids is None:
        ids = sample_ids(manifest, num_images, seed)
    unknown = [i for i in ids if i not in manifest.images]
    if unknown:
        raise ValueError(f"{manifest_path}: report.image_ids has unknown image id {unknown[0]!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for image_id in track(ids, "visualize"):
        out = out_dir / f"{image_id}.png"
        render_image_grid(
            run_dir,
            image_id,
            rounds,
            out,
            tile_px=tile_px,
            dpi=dpi,
            device=device,
            manifest=manifest,
            shared_dir=shared_dir,
        )
        paths.append(out)
    return paths
