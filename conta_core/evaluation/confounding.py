"""Measures of the confounding itself: where a class's mask spreads onto its context.

CONTA claims that a class's CAM spreads onto the context that co-occurs with it (horse onto
person, boat onto water, a car's windows lost) and that adjusting for the context shrinks
exactly that spread. A whole-image mIoU averages those pixels away; these measures count
them. All are pooled over a split (pixel counts summed over images, then divided), from
label maps pred: uint8[H, W] (0 bg, 1..C, 255 = background as in conta_core.evaluation.metrics) and
GT gt: uint8[H, W] (255 ignored):

| key | definition |
| --- | --- |
| `pair_confusion[k->c]` | confusion ratio m(k->c) = FP(k->c) / TP(c): pixels of the co-occurring class k labelled c, over c's true positives (EPS: Lee, Lee, Lee and Shim, CVPR 2021); null where TP(c) = 0 |
| `bg_leak[c]` | share of the pixels predicted c whose GT is background |
| `texture_leak[c]` | (generated data) share of the pixels predicted c that are background of an image whose texture is c's confounding texture (boat -> water) |
| `interior_miss[c]` | share of c's interior pixels (GT c at more than `band` px from any other label) predicted background: the part-context failure on any data |
| `part_miss[c]` | (generated data) share of the copied part pixels (a car's windows showing the background) predicted background |
| `boundary_f` | boundary F-score: precision / recall of the predicted / GT boundary pixels within `band` px of the other, pooled over images |

Summary scalars (the study's pre-registered primary measures are the first two,
docs/context.md):
- `pair_confusion_mean`: mean of m(k->c) over both directions of every co-occurring pair;
- `pair_confusion_undefined`: [OURS] how many directions k->c have TP(c) = 0 but FP(k->c) > 0
  (an infinite ratio: c never found, k labelled c); they are left out of the mean, which this
  count qualifies (`pair_confusion_undefined_pairs` names them). 0/0 (no c and no confusion)
  is left out without counting;
- `bg_leak_context`: mean bg_leak over the context-texture classes (generated data) or over
  all foreground classes (real data);
- `texture_leak_mean`, `interior_miss_mean`, `part_miss_mean`, `bg_leak_mean`, `boundary_f`.

Pairs: on the generated data the generator's own (primary, partner) pairs; on VOC / COCO /
folder data the `top` pairs by lift P(a, b) / (P(a) P(b)) over the train image labels with
at least `min_count` images holding both ([OURS]: top 10, min 5), so the same measures run
on real data. [OURS] band = 2 px for interior and boundary (DEFAULT_BAND); GT void (255) is filled with the nearest label before boundaries are
taken, so the VOC void band does not count as a boundary of its own.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from conta_core.data.artifacts import index_artifacts, require
from conta_core.data.manifest import Manifest
from conta_core.data.synthetic import part_mask_of
from conta_core.evaluation.cam_eval import cam_label
from conta_core.evaluation.metrics import confusion_matrix
from conta_core.infra.fileio import IGNORE_LABEL, load_cam, load_label_png, write_json
from conta_core.infra.layout import CAM_SUFFIX, CONFOUNDING_STAGES
from conta_core.infra.progress import track

DEFAULT_BAND = 2  # [OURS] px: interior margin and boundary tolerance
LIFT_TOP = 10  # [OURS] co-occurring pairs on real data: the top pairs by lift ...
LIFT_MIN_COUNT = 5  # ... among those with at least this many images holding both classes
SUMMARY_KEYS = (
    "pair_confusion_mean",
    "bg_leak_context",
    "bg_leak_mean",
    "texture_leak_mean",
    "interior_miss_mean",
    "part_miss_mean",
    "boundary_f",
)


def lift_pairs(
    labels: dict[str, list[int]], top: int = LIFT_TOP, min_count: int = LIFT_MIN_COUNT
) -> list[tuple[int, int]]:
    """The `top` class pairs (a < b, label indices) by lift over the images' label lists,
    among pairs present together in >= min_count images; ties broken by count, then index."""
    n = len(labels)
    if n == 0:
        return []
    single: dict[int, int] = {}
    both: dict[tuple[int, int], int] = {}
    for ks in labels.values():
        ks = sorted(set(int(k) for k in ks))
        for k in ks:
            single[k] = single.get(k, 0) + 1
        for a, b in itertools.combinations(ks, 2):
            both[(a, b)] = both.get((a, b), 0) + 1
    scored = [(cnt * n / (single[a] * single[b]), cnt, (a, b)) for (a, b), cnt in both.items() if cnt >= min_count]
    scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
    return [p for _, _, p in scored[:top]]


def dataset_pairs(manifest: Manifest) -> list[tuple[int, int]]:
    """Co-occurring pairs (label indices): the generator's pairs on generated data, else top lift on train."""
    names = manifest.class_names
    if "pairs" in manifest.meta:
        return [(names.index(a), names.index(b)) for a, b in manifest.meta["pairs"] if a in names and b in names]
    train = manifest.ids("train") if "train" in manifest.splits else sorted(manifest.labels)
    return lift_pairs({i: manifest.labels[i] for i in train})


def context_textures(manifest: Manifest) -> dict[int, str]:
    """Generated data: class index -> its confounding texture; {} on real data."""
    names = manifest.class_names
    return {names.index(c): t for c, t in manifest.meta.get("context_textures", {}).items() if c in names}


def fill_void(gt: np.ndarray) -> np.ndarray:
    """gt with every 255 pixel replaced by the nearest non-void label (all-void stays as is)."""
    void = gt == IGNORE_LABEL
    if not void.any() or void.all():
        return gt
    idx = ndimage.distance_transform_edt(void, return_distances=False, return_indices=True)
    return gt[tuple(idx)]


def boundary(label: np.ndarray) -> np.ndarray:
    """bool[H, W]: pixels whose right or lower neighbour has another label (both sides marked)."""
    b = np.zeros(label.shape, dtype=bool)
    dy = label[1:, :] != label[:-1, :]
    dx = label[:, 1:] != label[:, :-1]
    b[1:, :] |= dy
    b[:-1, :] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b


def _near(mask: np.ndarray, band: int) -> np.ndarray:
    """Pixels within `band` px (Euclidean) of a True pixel of mask."""
    if not mask.any():
        return np.zeros_like(mask)
    return ndimage.distance_transform_edt(~mask) <= band


def interior(gt: np.ndarray, band: int) -> np.ndarray:
    """bool[H, W]: foreground GT pixels farther than `band` px from any pixel of another label
    (void included), i.e. the inside of objects."""
    filled_other = boundary(gt) | (gt == IGNORE_LABEL)
    return (gt != 0) & (gt != IGNORE_LABEL) & ~_near(filled_other, band)


@dataclass
class ConfoundingAccumulator:
    """Pooled counts of the measures over a split; `add` one image at a time, `result()` at the end.

    num_classes: n (background included); pairs: [(a, b)] label indices of co-occurring
    classes (both directions are measured); textures: class index -> confounding texture
    (generated data) or {}; band: px (interior margin, boundary tolerance).
    """

    num_classes: int
    pairs: list[tuple[int, int]]
    textures: dict[int, str] = field(default_factory=dict)
    band: int = DEFAULT_BAND

    def __post_init__(self) -> None:
        n = self.num_classes
        self.conf = np.zeros((n, n), dtype=np.int64)
        self.tex_bg = np.zeros(n, dtype=np.int64)  # pred c, GT bg, image texture = c's texture
        self.interior = np.zeros(n, dtype=np.int64)
        self.interior_bg = np.zeros(n, dtype=np.int64)
        self.part = np.zeros(n, dtype=np.int64)
        self.part_bg = np.zeros(n, dtype=np.int64)
        self.bnd = np.zeros(4, dtype=np.int64)  # pred boundary px, of those matched, GT boundary px, matched
        self.images = 0

    def add(
        self, pred: np.ndarray, gt: np.ndarray, texture: str | None = None, part_mask: np.ndarray | None = None
    ) -> None:
        """One image. pred, gt: int[H, W]; texture: the image's background texture (generated
        data); part_mask: bool[H, W] copied part pixels (generated data) or None."""
        pred = np.where(np.asarray(pred) == IGNORE_LABEL, 0, np.asarray(pred)).astype(np.int64)
        gt = np.asarray(gt).astype(np.int64)
        self.conf += confusion_matrix(pred, gt, self.num_classes)  # checks shapes and ranges
        valid = gt != IGNORE_LABEL
        if texture is not None:
            for c, tex in self.textures.items():
                if tex == texture:
                    self.tex_bg[c] += int(((pred == c) & (gt == 0) & valid).sum())
        inner = interior(gt, self.band)
        for c in np.unique(gt[inner]):
            sel = inner & (gt == c)
            self.interior[c] += int(sel.sum())
            self.interior_bg[c] += int((sel & (pred == 0)).sum())
        if part_mask is not None and part_mask.any():
            for c in np.unique(gt[part_mask & valid]):
                sel = part_mask & valid & (gt == c)
                self.part[c] += int(sel.sum())
                self.part_bg[c] += int((sel & (pred == 0)).sum())
        pb, gb = boundary(pred), boundary(fill_void(gt))
        self.bnd += [
            int(pb.sum()),
            int((pb & _near(gb, self.band)).sum()),
            int(gb.sum()),
            int((gb & _near(pb, self.band)).sum()),
        ]
        self.images += 1

    def result(self, class_names: list[str] | None = None) -> dict:
        """{"pair_confusion": {"k->c": ratio}, "bg_leak": {c: share}, "texture_leak", "interior_miss",
        "part_miss", "boundary_precision", "boundary_recall", "boundary_f", the summary scalars
        (SUMMARY_KEYS) and the confusion matrix}. None (JSON null) where a denominator is 0."""
        names = class_names or [str(k) for k in range(self.num_classes)]
        conf = self.conf
        tp = np.diag(conf)
        pred_total = conf.sum(axis=0)
        ratio = lambda a, b: float(a) / float(b) if b else math.nan  # noqa: E731
        pair_conf, undefined = {}, []
        for a, b in self.pairs:
            for k, c in ((a, b), (b, a)):
                pair_conf[f"{names[k]}->{names[c]}"] = ratio(conf[k, c], tp[c])
                if tp[c] == 0 and conf[k, c] > 0:
                    undefined.append(f"{names[k]}->{names[c]}")
        fg = range(1, self.num_classes)
        bg_leak = {names[c]: ratio(conf[0, c], pred_total[c]) for c in fg}
        tex_leak = {names[c]: ratio(self.tex_bg[c], pred_total[c]) for c in self.textures}
        int_miss = {names[c]: ratio(self.interior_bg[c], self.interior[c]) for c in fg if self.interior[c]}
        part_miss = {names[c]: ratio(self.part_bg[c], self.part[c]) for c in fg if self.part[c]}
        precision, recall = ratio(self.bnd[1], self.bnd[0]), ratio(self.bnd[3], self.bnd[2])
        if precision == 0.0 or recall == 0.0:  # no matched boundary (also when one side has none)
            f = 0.0
        else:
            f = 2 * precision * recall / (precision + recall)  # NaN when neither map has a boundary
        context_classes = [names[c] for c in self.textures] or [names[c] for c in fg]
        out = {
            "images": self.images,
            "band": self.band,
            "pairs": [[names[a], names[b]] for a, b in self.pairs],
            "pair_confusion": pair_conf,
            "bg_leak": bg_leak,
            "texture_leak": tex_leak,
            "interior_miss": int_miss,
            "part_miss": part_miss,
            "boundary_precision": precision,
            "boundary_recall": recall,
            "pair_confusion_mean": _nanmean(pair_conf.values()),
            "pair_confusion_undefined": len(undefined),
            "pair_confusion_undefined_pairs": undefined,
            "bg_leak_context": _nanmean(bg_leak[c] for c in context_classes),
            "bg_leak_mean": _nanmean(bg_leak.values()),
            "texture_leak_mean": _nanmean(tex_leak.values()),
            "interior_miss_mean": _nanmean(int_miss.values()),
            "part_miss_mean": _nanmean(part_miss.values()),
            "boundary_f": f,
            "confusion": conf.tolist(),
        }
        return _nan_to_none(out)


def _nan_to_none(obj):
    """NaN -> None through dicts and lists, so the JSON is standard (null, not NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def _nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def measure_split(manifest: Manifest, ids: list[str], preds, band: int = DEFAULT_BAND) -> dict:
    """The measures over `ids`. preds: an iterable of (image_id, pred uint8[H, W]) in any
    order (label maps, or CAM argmaxes at the eval threshold). GT from the manifest (a
    ValueError names the image id without one); textures and part masks on generated data."""
    generated = manifest.meta.get("source") == "conta_core.data.synthetic"
    acc = ConfoundingAccumulator(manifest.num_classes, dataset_pairs(manifest), context_textures(manifest), band)
    wanted = set(ids)
    for image_id, pred in preds:
        if image_id not in wanted:
            continue
        gt_path = manifest.mask_file(image_id)
        if gt_path is None:
            raise ValueError(f"confounding measures: image id {image_id!r} has no GT mask in the manifest")
        gt = load_label_png(gt_path)
        if pred.shape != gt.shape:
            raise ValueError(f"confounding measures: image id {image_id!r}: prediction {pred.shape} != GT {gt.shape}")
        texture = manifest.meta["texture"].get(image_id) if generated else None
        part = part_mask_of(manifest, image_id) if generated else None
        if part is not None and part.shape != gt.shape:
            part = None
        acc.add(pred, gt, texture, part)
    return acc.result(list(manifest.class_names))


def _stage_preds(stage: str, ids: list[str], files: dict[str, Path], threshold: float):
    """(image id, uint8[H, W] label map) of a stage: CAM argmax at `threshold` or the PNG."""
    for image_id in ids:
        if stage == "cam":
            cam = load_cam(files[image_id])
            yield image_id, cam_label(cam["high_res"], cam["keys"], threshold)
        else:
            yield image_id, load_label_png(files[image_id])


def stage_measures(
    manifest: Manifest, split: str, stage: str, pred_dirs: list[Path], cfg: dict, out_json: Path | None = None
) -> dict:
    """Measures of one stage (CONFOUNDING_STAGES) over `split`; written to out_json (atomic).

    cfg: {"band": px (default DEFAULT_BAND), "cam_threshold": background score of the CAM
    argmax (stage cam; the headline CAM mIoU's cam.eval_threshold)}. ValueError naming the
    stage or the image ids when predictions are missing.
    """
    if stage not in CONFOUNDING_STAGES:
        raise ValueError(f"confounding measures: stage {stage!r} is not one of {CONFOUNDING_STAGES}")
    if stage == "cam" and "cam_threshold" not in cfg:
        raise ValueError("confounding measures: stage cam needs cfg cam_threshold (cam.eval_threshold)")
    ids = [i for i in manifest.ids(split) if manifest.mask_file(i) is not None]
    files = index_artifacts(pred_dirs, CAM_SUFFIX if stage == "cam" else ".png")
    require(files, ids, f"confounding measures of {stage}")
    preds = _stage_preds(stage, ids, files, float(cfg.get("cam_threshold", 0.0)))
    out = {
        "stage": stage,
        "split": split,
        **measure_split(
            manifest, ids, track(preds, f"confounding {stage}", total=len(ids)), int(cfg.get("band", DEFAULT_BAND))
        ),
    }
    if out_json is not None:
        write_json(out_json, out)
    return out
