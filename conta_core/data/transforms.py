"""Joint image + label-map augmentation on numpy arrays (IRNet / deeplab-pytorch style).

All geometric transforms apply the same operation to the image and to any number of
label-like maps (GT masks, pseudo-masks, IR labels, the context input X_m), resizing
images bilinearly and label maps with nearest neighbour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from conta_core.infra.config import config_error
from conta_core.infra.fileio import IGNORE_LABEL

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_MEAN_BGR = np.array([104.008, 116.669, 122.675], dtype=np.float32)  # deeplab-pytorch IMAGE.MEAN (B, G, R)
INPUT_NORMS = ("imagenet", "caffe")  # segmentation.input_norm


def normalize(img: np.ndarray, norm: str = "imagenet") -> np.ndarray:
    """uint8[H, W, 3] RGB -> float32[3, H, W] network input.

    norm "imagenet": RGB in [0, 1] with ImageNet mean/std (torchvision, IRNet);
    "caffe": BGR in [0, 255] minus deeplab-pytorch's mean (the convention of DeepLab's
    caffemodel weights). In both the mean colour maps to 0, so zero padding is the mean.
    """
    if norm == "imagenet":
        x = img.astype(np.float32) / 255.0
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    elif norm == "caffe":
        x = img[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR
    else:
        raise ValueError(f"input_norm: expected one of {INPUT_NORMS}, got {norm!r}")
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def caffe_crf_image(img: np.ndarray) -> np.ndarray:
    """The image deeplab-pytorch's CRF step sees: uint8[H, W, 3] of the BGR mean-subtracted
    image cast to uint8 (negative values wrap around; main.py `image.astype(np.uint8)`)."""
    x = normalize(img, "caffe").transpose(1, 2, 0)
    return np.ascontiguousarray(x.astype(np.int64).astype(np.uint8))


def pil_resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of uint8[H, W, 3] to size (h, w): IRNet's `imutils.pil_rescale(img, s, 3)`."""
    from PIL import Image

    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((w, h), Image.BICUBIC))


IMAGE_RESIZES = ("bilinear", "pil_bicubic")  # cam.resize


def rescale_image(img: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """uint8[H, W, 3] resized to (h, w) by `mode`: "bilinear" (resize_image, torch,
    [OURS] default on the generated data) or "pil_bicubic" (IRNet/AMN make_cam)."""
    if mode == "bilinear":
        return resize_image(img, size)
    if mode == "pil_bicubic":
        return pil_resize_image(img, size)
    raise config_error("cam.resize", f"expected one of {IMAGE_RESIZES}, got {mode!r}")


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of uint8[H, W, 3] (or float32) to size (h, w); keeps dtype."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    out = t[0].permute(1, 2, 0).numpy()
    if img.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype, copy=False)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map uint8[H, W] (or float[H, W], or a stack [H, W, C])
    to (h, w)."""
    h, w = size
    if label.shape[:2] == (h, w):
        return label
    ys = np.minimum((np.arange(h) + 0.5) * label.shape[0] / h, label.shape[0] - 1).astype(np.int64)
    xs = np.minimum((np.arange(w) + 0.5) * label.shape[1] / w, label.shape[1] - 1).astype(np.int64)
    return label[ys][:, xs]


def random_scale(
    img: np.ndarray, maps: list[np.ndarray], scale_range: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rescale by a factor drawn uniformly from `scale_range`."""
    size = scaled_size(img.shape[:2], rng.uniform(*scale_range))
    return resize_image(img, size), [resize_label(m, size) for m in maps]


def scaled_size(size: tuple[int, int], s: float) -> tuple[int, int]:
    """(h, w) times s, rounded, at least 1."""
    return max(1, int(round(size[0] * s))), max(1, int(round(size[1] * s)))


def random_hflip(
    img: np.ndarray, maps: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Horizontal flip with probability 0.5."""
    if rng.random() < 0.5:
        return img[:, ::-1].copy(), [m[:, ::-1].copy() for m in maps]
    return img, maps


def color_jitter(img: np.ndarray, strengths, rng: np.random.Generator) -> np.ndarray:
    """torchvision's ColorJitter(brightness, contrast, saturation, hue) on uint8[H, W, 3], its
    randomness from `rng`: the four adjustments in a random order, factors uniform in
    [max(0, 1 - s), 1 + s] (hue: [-h, h]), each by torchvision.transforms.functional on the PIL
    image, as SEAM's train_SEAM / train_aff apply it. strengths: (brightness, contrast,
    saturation, hue); a 0 strength skips its adjustment (as torchvision does)."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    b, c, s, h = (float(v) for v in strengths)
    order = rng.permutation(4)
    factors = [rng.uniform(max(0.0, 1 - v), 1 + v) if v > 0 else None for v in (b, c, s)]
    factors.append(rng.uniform(-h, h) if h > 0 else None)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    pil = Image.fromarray(np.ascontiguousarray(img))
    for k in order:
        if factors[k] is not None:
            pil = adjust[k](pil, factors[k])
    return np.asarray(pil)


def random_crop(
    img: np.ndarray,
    maps: list[np.ndarray],
    size: int,
    rng: np.random.Generator,
    img_pad: float = 0.0,
    map_pad: int | list[int] = IGNORE_LABEL,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random `size` x `size` crop; pads (image with `img_pad`, maps with `map_pad`) if smaller.

    img: [H, W, 3] (any dtype); maps: each [H, W]; map_pad: one value or one per map.
    Returns the cropped copies.
    """
    pads = map_pad if isinstance(map_pad, (list, tuple)) else [map_pad] * len(maps)
    if len(pads) != len(maps):
        raise ValueError(f"random_crop: {len(maps)} maps but {len(pads)} pad values")
    h, w = img.shape[:2]
    ph, pw = max(size, h), max(size, w)
    if (ph, pw) != (h, w):
        oy, ox = int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1))
        big = np.full((ph, pw) + img.shape[2:], img_pad, dtype=img.dtype)
        big[oy : oy + h, ox : ox + w] = img
        new_maps = []
        for m, pad in zip(maps, pads):
            bm = np.full((ph, pw), pad, dtype=m.dtype)
            bm[oy : oy + h, ox : ox + w] = m
            new_maps.append(bm)
        img, maps = big, new_maps
    y = int(rng.integers(0, ph - size + 1))
    x = int(rng.integers(0, pw - size + 1))
    return img[y : y + size, x : x + size].copy(), [m[y : y + size, x : x + size].copy() for m in maps]


def augment(
    img: np.ndarray,
    maps: list[np.ndarray],
    rng: np.random.Generator,
    scale_range: tuple[float, float],
    crop_size: int,
    hflip: bool = True,
    map_pad: int | list[int] = IGNORE_LABEL,
    norm: str = "imagenet",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The standard training augmentation: random rescale, flip, crop; image normalised.

    img: uint8[H, W, 3]; maps: label-like [H, W] arrays transformed identically.
    map_pad: pad value for the maps (one value or one per map). The normalised image
    (`normalize(img, norm)`) is padded with 0, i.e. the mean colour.
    Returns (float32[3, S, S] normalised image, maps cropped to [S, S]).
    """
    img, maps = random_scale(img, maps, scale_range, rng)
    if hflip:
        img, maps = random_hflip(img, maps, rng)
    x = normalize(img, norm).transpose(1, 2, 0)
    x, maps = random_crop(x, maps, crop_size, rng, img_pad=0.0, map_pad=map_pad)
    return np.ascontiguousarray(x.transpose(2, 0, 1)), maps
