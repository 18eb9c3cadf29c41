"""A generated *confounded* scene dataset in the PASCAL VOC layout.

Each image is one background texture with 1..N coloured, patterned shapes (one shape and
pattern per class) drawn on top of each other (occlusion allowed). Three knobs reproduce
the failure modes that the CONTA paper attributes to the context confounder:

- ``cooccurrence`` (q): for each configured pair (primary, partner), when the primary class
  is in a scene the partner is forced in with probability q; otherwise classes are drawn
  independently. So P(partner | primary) = q + (1 - q) * base rate (e.g. horse -> person).
- ``background_context`` (b): when a scene contains classes with a characteristic texture
  (boat -> water, sofa -> floor, ...), with probability b the background is the texture of
  one of them (uniform among them); otherwise it is drawn uniformly from all textures.
  For a scene with one such class, P(own texture) = b + (1 - b) / #textures.
- ``part_context`` (p): each instance of a part class (car) has, with probability p, its
  part region (the car's windows) filled with the background pixels behind it; the GT mask
  still labels that region as the object.

``control: true`` sets all three knobs to 0. Output (under ``out_dir``):
JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette, 0 bg, 1..C, 255 void band around
object boundaries like VOC), ImageSets/Segmentation/{train,val}.txt and manifest.json.
Everything is a deterministic function of the config (same config -> identical bytes).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from conta_core.data.manifest import Manifest
from conta_core.infra.config import config_error, require_keys
from conta_core.infra.fileio import IGNORE_LABEL, atomic_path, save_label_png, write_text
from conta_core.infra.progress import track

log = logging.getLogger("conta.data.synthetic")

# Class catalogue: shape, pattern, primary and secondary colour (RGB), and the shape's
# nominal width/height aspect ratio. The colours are chosen to be distinct from each other
# and from the textures so that a small CNN can recognise every class.
CLASS_CATALOGUE: dict[str, dict] = {
    "person": {"shape": "cross", "pattern": "hstripes", "colors": [(220, 30, 30), (250, 235, 235)], "aspect": 0.8},
    "horse": {"shape": "ellipse", "pattern": "spots", "colors": [(105, 55, 20), (225, 180, 120)], "aspect": 1.5},
    "boat": {"shape": "triangle", "pattern": "dstripes", "colors": [(245, 215, 0), (40, 40, 40)], "aspect": 1.1},
    "sofa": {"shape": "sofa", "pattern": "checker", "colors": [(130, 40, 170), (200, 150, 230)], "aspect": 1.6},
    "car": {"shape": "car", "pattern": "solid", "colors": [(235, 40, 170), (35, 40, 75)], "aspect": 1.5},
    "bird": {"shape": "star", "pattern": "solid", "colors": [(255, 130, 0), (255, 130, 0)], "aspect": 1.0},
    "cow": {"shape": "blob", "pattern": "patches", "colors": [(15, 15, 15), (245, 245, 245)], "aspect": 1.3},
    "tyre": {"shape": "ring", "pattern": "vstripes", "colors": [(0, 170, 170), (0, 90, 90)], "aspect": 1.0},
}
TEXTURES = ("water", "floor", "grass", "sky", "sand")
KNOBS = ("cooccurrence", "background_context", "part_context")
SPLITS = ("train", "val")

# Shape geometry in units of the object's bounding box (fractions of its width/height).
CROSS_ARM = 0.36  # arm thickness of the cross
RING_INNER = 0.5  # inner radius / outer radius of the ring
STAR_INNER = 0.45  # inner / outer radius of the 5-point star
BLOB_VERTICES = 10
BLOB_MIN_RADIUS = 0.6  # blob vertex radii are drawn from [BLOB_MIN_RADIUS, 1]
CAR_BODY = 0.55  # lower fraction of the box height that is the car body
CAR_CABIN_X = (0.2, 0.8)  # horizontal extent of the cabin
CAR_WINDOW_INSET = 0.18  # window inset inside the cabin (fraction of cabin size)
SOFA_BACK = 0.45  # upper fraction of the box height that is the back rest
SOFA_ARM = 0.14  # arm-rest width (fraction of box width)
PATTERN_PERIOD = 0.25  # stripe / checker period as a fraction of the box size
COLOR_JITTER = 12  # +- per-channel colour jitter of each instance
ASPECT_JITTER = (0.85, 1.15)
PLACEMENT_TRIES = 30


@dataclass
class SynthConfig:
    """The `dataset.synthetic` config section, with defaults for the optional keys."""

    num_train: int
    num_val: int
    image_size: int
    seed: int
    min_objects: int
    max_objects: int
    min_object_frac: float
    max_object_frac: float
    cooccurrence: float
    background_context: float
    part_context: float
    control: bool = False
    jpeg_quality: int = 95
    void_width: int = 1
    min_visible_frac: float = 0.5
    cooccurrence_pairs: list = field(default_factory=lambda: [["horse", "person"], ["car", "tyre"]])
    context_textures: dict = field(
        default_factory=lambda: {"boat": "water", "sofa": "floor", "cow": "grass", "bird": "sky"}
    )
    part_classes: list = field(default_factory=lambda: ["car"])

    @classmethod
    def from_dict(cls, cfg: dict) -> SynthConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise config_error(f"dataset.synthetic.{unknown[0]}", f"unknown key (known: {sorted(known)})")
        given = {k: v for k, v in cfg.items() if v is not None}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        require_keys(given, required, "dataset.synthetic")
        sc = cls(**given)
        sc.check()
        return sc

    def check(self) -> None:
        """Raise ValueError naming the config key of an invalid value."""
        key = "dataset.synthetic."
        for k in KNOBS + ("min_object_frac", "max_object_frac", "min_visible_frac"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise config_error(key + k, f"must lie in [0, 1], got {getattr(self, k)}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise config_error(key + "min_objects", "need 1 <= min_objects <= max_objects")
        if self.max_objects > len(CLASS_CATALOGUE):
            raise config_error(key + "max_objects", f"at most {len(CLASS_CATALOGUE)} (one object per class)")
        if self.min_object_frac > self.max_object_frac or self.min_object_frac <= 0:
            raise config_error(key + "min_object_frac", "need 0 < min_object_frac <= max_object_frac")
        for k, low in (("num_train", 1), ("num_val", 1), ("image_size", 16)):
            if getattr(self, k) < low:
                raise config_error(key + k, f"need >= {low}, got {getattr(self, k)}")
        for pair in self.cooccurrence_pairs:
            if len(pair) != 2 or any(c not in CLASS_CATALOGUE for c in pair) or pair[0] == pair[1]:
                raise config_error(key + "cooccurrence_pairs", f"bad pair {pair} (classes: {list(CLASS_CATALOGUE)})")
        for c, t in self.context_textures.items():
            if c not in CLASS_CATALOGUE or t not in TEXTURES:
                raise config_error(key + "context_textures", f"bad entry {c}: {t} (textures: {list(TEXTURES)})")
        for c in self.part_classes:
            if c not in CLASS_CATALOGUE or not _has_part(CLASS_CATALOGUE[c]["shape"]):
                raise config_error(key + "part_classes", f"{c!r} has no part (classes with parts: car)")

    def knobs(self) -> dict[str, float]:
        """Effective knob values (all 0 under control)."""
        return {k: 0.0 if self.control else float(getattr(self, k)) for k in KNOBS}


@dataclass
class ObjectSpec:
    """One object instance: class (catalogue name), box (y, x, h, w), part copied or not."""

    cls: str
    box: tuple[int, int, int, int]
    copy_part: bool
    shape_seed: int
    color_jitter: tuple[int, int, int]


@dataclass
class SceneSpec:
    texture: str
    texture_seed: int
    objects: list[ObjectSpec]


@dataclass
class RenderedScene:
    """image: uint8[S, S, 3]; label: uint8[S, S] with void band; clean_label: without it;
    part_mask: bool[S, S] visible pixels whose colour was copied from the background;
    background: uint8[S, S, 3] the texture alone."""

    image: np.ndarray
    label: np.ndarray
    clean_label: np.ndarray
    part_mask: np.ndarray
    background: np.ndarray


# ----------------------------------------------------------------------------- textures


def make_texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A background texture `name` as uint8[size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if name == "water":
        f, g = rng.uniform(5, 9), rng.uniform(1, 3)
        wave = np.sin(2 * np.pi * (f * yy + 0.08 * np.sin(2 * np.pi * g * xx + rng.uniform(0, 6.3))))
        t = (0.5 + 0.5 * wave)[..., None]
        img = (1 - t) * np.array([20, 70, 150]) + t * np.array([90, 160, 220])
    elif name == "floor":
        tiles = int(rng.integers(4, 7))
        cy, cx = np.floor(yy * tiles), np.floor(xx * tiles)
        light = ((cy + cx) % 2 == 0)[..., None]
        img = np.where(light, np.array([205, 200, 190]), np.array([165, 160, 150])).astype(np.float32)
        grout = ((yy * tiles) % 1 < 0.08) | ((xx * tiles) % 1 < 0.08)
        img[grout] = (110, 105, 100)
    elif name == "grass":
        noise = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), sigma=(2.5, 0.7))
        noise = noise / (np.abs(noise).max() + 1e-6)
        img = np.array([50, 140, 45]) + noise[..., None] * np.array([25, 45, 20])
    elif name == "sky":
        top, bottom = np.array([90, 150, 230]), np.array([215, 232, 250])
        clouds = ndimage.gaussian_filter(rng.random((size, size)), sigma=size / 12)
        clouds = np.clip((clouds - clouds.mean()) * 8, 0, 1)[..., None]
        img = (1 - yy[..., None]) * top + yy[..., None] * bottom
        img = (1 - 0.6 * clouds) * img + 0.6 * clouds * 250
    elif name == "sand":
        noise = rng.normal(0, 1, (size, size))
        dunes = np.sin(2 * np.pi * (rng.uniform(1.5, 3) * yy + 0.5 * xx) + rng.uniform(0, 6.3))
        img = np.array([215, 185, 130]) + (8 * noise + 12 * dunes)[..., None]
    else:
        raise ValueError(f"synthetic: unknown texture {name!r} (known: {list(TEXTURES)})")
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- shapes


def _has_part(shape: str) -> bool:
    return shape == "car"


def _polygon_mask(h: int, w: int, points: list[tuple[float, float]]) -> np.ndarray:
    """bool[h, w] of a polygon given as (x, y) in box-relative [0, 1] coordinates."""
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(x * (w - 1), y * (h - 1)) for x, y in points], fill=1)
    return np.asarray(im, dtype=bool)


def _rect(h: int, w: int, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[int(round(y0 * h)) : int(round(y1 * h)), int(round(x0 * w)) : int(round(x1 * w))] = True
    return m


def _radial(h: int, w: int, radii: np.ndarray) -> np.ndarray:
    """Star-like polygon with vertex radii `radii` (fractions of the half box size)."""
    ang = np.linspace(0, 2 * np.pi, len(radii), endpoint=False) - np.pi / 2
    pts = [(0.5 + 0.5 * r * np.cos(a), 0.5 + 0.5 * r * np.sin(a)) for r, a in zip(radii, ang)]
    return _polygon_mask(h, w, pts)


def shape_masks(shape: str, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(object bool[h, w], part bool[h, w]) of `shape` filling an h x w box; part ⊂ object."""
    part = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ny, nx = (yy + 0.5) / h * 2 - 1, (xx + 0.5) / w * 2 - 1  # [-1, 1] box coordinates
    if shape == "ellipse":
        obj = nx**2 + ny**2 <= 1
    elif shape == "ring":
        r2 = nx**2 + ny**2
        obj = (r2 <= 1) & (r2 >= RING_INNER**2)
    elif shape == "cross":
        a = CROSS_ARM / 2
        obj = (np.abs(nx) <= 2 * a) | (np.abs(ny) <= 2 * a)
    elif shape == "triangle":
        obj = _polygon_mask(h, w, [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)])
    elif shape == "star":
        obj = _radial(h, w, np.tile([1.0, STAR_INNER], 5))
    elif shape == "blob":
        obj = _radial(h, w, rng.uniform(BLOB_MIN_RADIUS, 1.0, BLOB_VERTICES))
    elif shape == "sofa":
        obj = _rect(h, w, 0, SOFA_BACK, 0, 1) | _rect(h, w, SOFA_BACK, 1, 0, SOFA_ARM)
        obj |= _rect(h, w, SOFA_BACK, 1, 1 - SOFA_ARM, 1) | _rect(h, w, 0.7, 0.9, 0, 1)
    elif shape == "car":
        body_top = 1 - CAR_BODY
        x0, x1 = CAR_CABIN_X
        obj = _rect(h, w, body_top, 1, 0, 1) | _rect(h, w, 0, body_top, x0, x1)
        iy, ix = CAR_WINDOW_INSET * body_top, CAR_WINDOW_INSET * (x1 - x0)
        part = _rect(h, w, iy, body_top, x0 + ix, x1 - ix)
    else:
        raise ValueError(f"synthetic: unknown shape {shape!r}")
    return obj, part & obj


def paint_pattern(pattern: str, colors: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """uint8[h, w, 3] fill of an h x w box; colors: int[2, 3] (primary, secondary)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    py, px = yy / (h * PATTERN_PERIOD), xx / (w * PATTERN_PERIOD)
    if pattern == "solid":
        sec = np.zeros((h, w), dtype=bool)
    elif pattern == "hstripes":
        sec = (py % 1) < 0.4
    elif pattern == "vstripes":
        sec = (px % 1) < 0.4
    elif pattern == "dstripes":
        sec = ((px + py) % 1) < 0.35
    elif pattern == "checker":
        sec = (np.floor(py) + np.floor(px)) % 2 == 1
    elif pattern == "spots":
        sec = ((py % 1) - 0.5) ** 2 + ((px % 1) - 0.5) ** 2 < 0.06
    elif pattern == "patches":
        noise = ndimage.gaussian_filter(rng.random((h, w)), sigma=max(h, w) / 8)
        sec = noise > np.median(noise) + 0.5 * noise.std()
    else:
        raise ValueError(f"synthetic: unknown pattern {pattern!r}")
    return np.where(sec[..., None], colors[1], colors[0]).astype(np.uint8)


# ------------------------------------------------------------------------------- scenes


def _sample_classes(rng: np.random.Generator, sc: SynthConfig, names: list[str], q: float) -> list[str]:
    """Classes of one scene (distinct, in drawing order), with forced co-occurrence."""
    n = int(rng.integers(sc.min_objects, sc.max_objects + 1))
    classes = [names[i] for i in rng.permutation(len(names))[:n]]
    for primary, partner in sc.cooccurrence_pairs:
        if primary not in classes or partner in classes or rng.random() >= q:
            continue
        if len(classes) < sc.max_objects:
            classes.append(partner)
            continue
        protected = {c for p, c2 in sc.cooccurrence_pairs if p in classes for c in (p, c2)}
        candidates = [i for i, c in enumerate(classes) if c not in protected]
        if candidates:
            classes[candidates[int(rng.integers(len(candidates)))]] = partner
        else:
            classes.append(partner)  # max_objects too small to honour the pair otherwise
    return classes


def _sample_texture(rng: np.random.Generator, sc: SynthConfig, classes: list[str], b: float) -> str:
    ctx = [c for c in classes if c in sc.context_textures]
    u = rng.random()
    if ctx and u < b:
        return sc.context_textures[ctx[int(rng.integers(len(ctx)))]]
    return TEXTURES[int(rng.integers(len(TEXTURES)))]


def _object_box(rng: np.random.Generator, sc: SynthConfig, cls: str) -> tuple[int, int, int, int]:
    """(y, x, h, w) of an object box inside the image, with the class aspect ratio."""
    s = sc.image_size
    side = rng.uniform(sc.min_object_frac, sc.max_object_frac) * s
    aspect = CLASS_CATALOGUE[cls]["aspect"] * rng.uniform(*ASPECT_JITTER)
    w = int(np.clip(round(side * np.sqrt(aspect)), 4, s))
    h = int(np.clip(round(side / np.sqrt(aspect)), 4, s))
    return int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1)), h, w


def _visible_ok(owner: np.ndarray, areas: list[int], frac: float) -> bool:
    """Every object i keeps at least frac * areas[i] visible pixels in `owner` (int[S, S])."""
    counts = np.bincount(owner[owner >= 0], minlength=len(areas))
    return all(counts[i] >= frac * a and counts[i] > 0 for i, a in enumerate(areas))


def sample_scene(rng: np.random.Generator, sc: SynthConfig) -> SceneSpec:
    """Draw classes, texture, boxes and part copying of one scene (occlusion-aware)."""
    knobs = sc.knobs()
    names = list(CLASS_CATALOGUE)
    classes = _sample_classes(rng, sc, names, knobs["cooccurrence"])
    texture = _sample_texture(rng, sc, classes, knobs["background_context"])
    owner = np.full((sc.image_size, sc.image_size), -1, dtype=np.int64)
    objects: list[ObjectSpec] = []
    areas: list[int] = []
    for cls in classes:
        shape_seed = int(rng.integers(2**31))
        jitter = tuple(int(v) for v in rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3))
        copy_part = cls in sc.part_classes and rng.random() < knobs["part_context"]
        for _ in range(PLACEMENT_TRIES):
            box = _object_box(rng, sc, cls)
            obj, _ = _object_masks(cls, box, shape_seed, sc.image_size)
            trial = owner.copy()
            trial[obj] = len(objects)
            if _visible_ok(trial, areas + [int(obj.sum())], sc.min_visible_frac):
                owner = trial
                areas.append(int(obj.sum()))
                objects.append(ObjectSpec(cls, box, bool(copy_part), shape_seed, jitter))
                break
        else:
            log.debug("synthetic: no placement for %s after %d tries; dropped", cls, PLACEMENT_TRIES)
    return SceneSpec(texture=texture, texture_seed=int(rng.integers(2**31)), objects=objects)


def _object_masks(
    cls: str, box: tuple[int, int, int, int], shape_seed: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Full-image bool[S, S] (object, part) masks of one object."""
    y, x, h, w = box
    obj_box, part_box = shape_masks(CLASS_CATALOGUE[cls]["shape"], h, w, np.random.default_rng(shape_seed))
    obj = np.zeros((size, size), dtype=bool)
    part = np.zeros((size, size), dtype=bool)
    obj[y : y + h, x : x + w] = obj_box
    part[y : y + h, x : x + w] = part_box
    return obj, part


def void_band(label: np.ndarray, width: int) -> np.ndarray:
    """bool[H, W]: pixels within `width` px (Chebyshev) of a pixel with another label."""
    if width <= 0:
        return np.zeros(label.shape, dtype=bool)
    k = 2 * width + 1
    return ndimage.maximum_filter(label, size=k, mode="nearest") != ndimage.minimum_filter(
        label, size=k, mode="nearest"
    )


def render_scene(spec: SceneSpec, sc: SynthConfig) -> RenderedScene:
    """Paint a sampled scene: texture, then objects in order (later ones on top)."""
    names = list(CLASS_CATALOGUE)
    s = sc.image_size
    background = make_texture(spec.texture, s, np.random.default_rng(spec.texture_seed))
    image = background.copy()
    label = np.zeros((s, s), dtype=np.uint8)
    part_mask = np.zeros((s, s), dtype=bool)
    for o in spec.objects:
        entry = CLASS_CATALOGUE[o.cls]
        obj, part = _object_masks(o.cls, o.box, o.shape_seed, s)
        colors = np.clip(np.array(entry["colors"]) + np.array(o.color_jitter), 0, 255)
        y, x, h, w = o.box
        fill = np.zeros_like(image)
        fill[y : y + h, x : x + w] = paint_pattern(entry["pattern"], colors, h, w, np.random.default_rng(o.shape_seed))
        if _has_part(entry["shape"]):
            fill[part] = colors[1]  # the part's own look (e.g. dark car windows)
        image[obj] = fill[obj]
        label[obj] = names.index(o.cls) + 1
        part_mask[obj] = False
        if o.copy_part:
            image[part] = background[part]
            part_mask |= part
    clean = label.copy()
    label[void_band(clean, sc.void_width)] = IGNORE_LABEL
    return RenderedScene(image=image, label=label, clean_label=clean, part_mask=part_mask, background=background)


# ---------------------------------------------------------------------------- generator


def _split_seed(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=quality, subsampling=0)


def generate_synthetic(out_dir: Path, cfg: dict) -> Manifest:
    """Generate the dataset under `out_dir` (VOC layout) and write out_dir/manifest.json.

    cfg: the `dataset.synthetic` config section. Returns the manifest (root = out_dir,
    relative paths) with splits train, train_eval (= train) and val; meta records the
    knobs, pairs, context textures, and per image the texture, objects and copied parts.
    """
    sc = SynthConfig.from_dict(cfg)
    out_dir = Path(out_dir).resolve()
    names = list(CLASS_CATALOGUE)
    splits: dict[str, list[str]] = {}
    labels, images, masks = {}, {}, {}
    per_image = {"texture": {}, "objects": {}, "part_copied": {}}
    jobs = [(split, i) for split in SPLITS for i in range(getattr(sc, f"num_{split}"))]
    for split, i in track(jobs, "synthetic"):
        image_id = f"{split}_{i:05d}"
        spec = sample_scene(_split_seed(sc.seed, split, i), sc)
        scene = render_scene(spec, sc)
        _save_jpeg(out_dir / "JPEGImages" / f"{image_id}.jpg", scene.image, sc.jpeg_quality)
        save_label_png(out_dir / "SegmentationClass" / f"{image_id}.png", scene.label)
        splits.setdefault(split, []).append(image_id)
        present = np.unique(scene.clean_label)
        labels[image_id] = [int(k) for k in present if k != 0]
        images[image_id] = f"JPEGImages/{image_id}.jpg"
        masks[image_id] = f"SegmentationClass/{image_id}.png"
        per_image["texture"][image_id] = spec.texture
        per_image["objects"][image_id] = [o.cls for o in spec.objects]
        per_image["part_copied"][image_id] = [o.cls for o in spec.objects if o.copy_part]
    for split in SPLITS:
        write_text(out_dir / "ImageSets" / "Segmentation" / f"{split}.txt", "\n".join(splits[split]) + "\n")
    manifest = Manifest(
        name="synthetic",
        root=out_dir,
        class_names=["background"] + names,
        splits={"train": splits["train"], "train_eval": list(splits["train"]), "val": splits["val"]},
        labels=labels,
        images=images,
        masks=masks,
        meta={
            "source": "conta_core.data.synthetic",
            "config": dict(cfg),
            "control": bool(sc.control),
            "knobs": sc.knobs(),
            "pairs": [list(p) for p in sc.cooccurrence_pairs],
            "context_textures": dict(sc.context_textures),
            "part_classes": list(sc.part_classes),
            "textures": list(TEXTURES),
            **per_image,
        },
    )
    _save_relative(manifest, out_dir / "manifest.json")
    return manifest


def _save_relative(manifest: Manifest, path: Path) -> None:
    """Save with root "." so the generated folder can be moved as a whole."""
    dataclasses.replace(manifest, root=Path(".")).save(path)


# ---------------------------------------------------------------------------- statistics


def confounding_stats(manifest: Manifest, split: str | None = None) -> dict:
    """Measured strength of the three confounders over `split` (default: all images).

    Returns {"cooccurrence": {"primary->partner": {rate, n, base_rate, n_base}},
    "background_match": {class: {rate, n}}, "part_copy": {class: {rate, n}}} where
    rate = P(partner | primary), base_rate = P(partner | primary absent), background
    match = P(image texture == class texture | class present) and part_copy = fraction of
    the class's instances whose part copies the background.
    """
    meta = manifest.meta
    if "texture" not in meta or "pairs" not in meta:
        raise ValueError(f"manifest {manifest.name}: no synthetic generator metadata (meta.texture/pairs)")
    ids = manifest.ids(split) if split else sorted(manifest.labels)
    names = manifest.class_names
    present = {i: {names[k] for k in manifest.labels[i]} for i in ids}
    out: dict = {"cooccurrence": {}, "background_match": {}, "part_copy": {}}
    for primary, partner in meta["pairs"]:
        with_p = [i for i in ids if primary in present[i]]
        without = [i for i in ids if primary not in present[i]]
        out["cooccurrence"][f"{primary}->{partner}"] = {
            "rate": _rate([partner in present[i] for i in with_p]),
            "n": len(with_p),
            "base_rate": _rate([partner in present[i] for i in without]),
            "n_base": len(without),
        }
    for cls, tex in meta["context_textures"].items():
        hits = [meta["texture"][i] == tex for i in ids if cls in present[i]]
        out["background_match"][cls] = {"rate": _rate(hits), "n": len(hits)}
    for cls in meta["part_classes"]:
        n = sum(meta["objects"][i].count(cls) for i in ids)
        copied = sum(meta["part_copied"][i].count(cls) for i in ids)
        out["part_copy"][cls] = {"rate": copied / n if n else float("nan"), "n": n}
    return out


def _rate(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def part_mask_of(manifest: Manifest, image_id: str) -> np.ndarray:
    """bool[S, S]: the copied part pixels of a generated image (a car's windows showing the
    background), re-rendered from the generator's seed and config in the manifest (the
    generator is deterministic), so no extra file is written. ValueError naming the id when
    the manifest is not a generated one or the id is not `<split>_<index>`."""
    cfg = manifest.meta.get("config")
    split, _, index = image_id.rpartition("_")
    if cfg is None or manifest.meta.get("source") != "conta_core.data.synthetic":
        raise ValueError(f"manifest {manifest.name}: not generated by conta_core.data.synthetic")
    if split not in SPLITS or not index.isdigit():
        raise ValueError(f"image id {image_id!r}: not a generated id <split>_<index>")
    sc = SynthConfig.from_dict(cfg)
    return render_scene(sample_scene(_split_seed(sc.seed, split, int(index)), sc), sc).part_mask
