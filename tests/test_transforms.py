"""Tests of the joint image / label-map augmentation (conta_core.data.transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conta_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment,
    normalize,
    random_crop,
    random_hflip,
    random_scale,
    resize_image,
    resize_label,
)

torch.set_num_threads(1)


def _coded(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel encodes the column and a label map encoding the row."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    label = np.repeat(np.arange(h, dtype=np.uint8)[:, None], w, axis=1)
    return img, label


def test_normalize_hand_computed() -> None:
    img = np.full((1, 1, 3), 255, np.uint8)
    out = normalize(img)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], (1 - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)


def test_resize_label_is_nearest_and_keeps_values() -> None:
    lab = np.array([[0, 1], [2, 255]], np.uint8)
    out = resize_label(lab, (4, 4))
    assert out.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]
    assert resize_label(out, (2, 2)).tolist() == lab.tolist()


def test_resize_image_shape_and_dtype() -> None:
    img = np.full((5, 7, 3), 100, np.uint8)
    out = resize_image(img, (10, 3))
    assert out.shape == (10, 3, 3) and out.dtype == np.uint8 and (out == 100).all()


def test_hflip_keeps_image_and_maps_aligned() -> None:
    img, lab = _coded(4, 6)
    col = np.repeat(np.arange(6, dtype=np.uint8)[None], 4, axis=0)
    flipped = None
    for seed in range(20):
        fi, (fl, fc) = random_hflip(img, [lab, col], np.random.default_rng(seed))
        assert np.array_equal(fi[..., 0], fc) and np.array_equal(fl, lab)  # rows untouched
        if fc[0, 0] == 5:
            flipped = fc
    assert flipped is not None and flipped[0].tolist() == [5, 4, 3, 2, 1, 0]


def test_crop_keeps_alignment_and_pads() -> None:
    img, lab = _coded(6, 5)
    col = np.repeat(np.arange(5, dtype=np.uint8)[None], 6, axis=0)
    ci, (cl, cc) = random_crop(img, [lab, col], 8, np.random.default_rng(0), img_pad=7, map_pad=[255, 0])
    assert ci.shape == (8, 8, 3) and cl.shape == cc.shape == (8, 8)
    inside = cl != 255
    assert inside.sum() == 30  # the whole 6x5 image fits in the 8x8 crop
    assert (ci[~inside] == 7).all() and (cc[~inside] == 0).all()
    assert np.array_equal(ci[..., 1][inside], cl[inside]) and np.array_equal(ci[..., 0][inside], cc[inside])


def test_crop_smaller_than_image_is_a_window() -> None:
    img, lab = _coded(10, 12)
    ci, (cl,) = random_crop(img, [lab], 4, np.random.default_rng(3))
    y0, x0 = int(cl[0, 0]), int(ci[0, 0, 0])
    assert np.array_equal(ci, img[y0 : y0 + 4, x0 : x0 + 4]) and np.array_equal(cl, lab[y0 : y0 + 4, x0 : x0 + 4])


def test_crop_rejects_wrong_number_of_pads() -> None:
    img, lab = _coded(4, 4)
    with pytest.raises(ValueError, match="2 maps but 1 pad"):
        random_crop(img, [lab, lab], 4, np.random.default_rng(0), map_pad=[255])


def test_scale_resizes_maps_like_image() -> None:
    img, lab = _coded(8, 8)
    si, (sl,) = random_scale(img, [lab], (2.0, 2.0), np.random.default_rng(0))
    assert si.shape == (16, 16, 3) and sl.shape == (16, 16)
    assert set(np.unique(sl)) == set(range(8))  # nearest: no new label values


def test_augment_output_and_determinism() -> None:
    img, lab = _coded(20, 20)
    a = augment(img, [lab], np.random.default_rng(5), (0.5, 1.5), 16, map_pad=255)
    b = augment(img, [lab], np.random.default_rng(5), (0.5, 1.5), 16, map_pad=255)
    x, (m,) = a
    assert x.shape == (3, 16, 16) and x.dtype == np.float32 and m.shape == (16, 16)
    assert np.array_equal(x, b[0]) and np.array_equal(m, b[1][0])
    pad = m == 255
    assert np.all(x[:, pad] == 0)  # padded image pixels = the (normalised) mean colour


def test_color_jitter_is_torchvisions_with_the_rngs_draws(monkeypatch) -> None:
    """color_jitter = torchvision's ColorJitter given the same order and factors (SEAM's
    transform), drawn from the numpy rng: the same rng state gives the same image."""
    import torchvision.transforms as T
    from PIL import Image

    from conta_core.data.transforms import color_jitter

    img = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    strengths = (0.3, 0.3, 0.3, 0.1)
    ours = color_jitter(img, strengths, np.random.default_rng(5))
    np.testing.assert_array_equal(ours, color_jitter(img, strengths, np.random.default_rng(5)))
    assert ours.shape == img.shape and ours.dtype == np.uint8 and not np.array_equal(ours, img)

    rng = np.random.default_rng(5)  # the same draws, in color_jitter's order
    order = rng.permutation(4)
    b, c, s = (rng.uniform(0.7, 1.3) for _ in range(3))
    h = rng.uniform(-0.1, 0.1)
    monkeypatch.setattr(T.ColorJitter, "get_params", staticmethod(lambda *a: (torch.tensor(order), b, c, s, h)))
    ref = np.asarray(T.ColorJitter(*strengths)(Image.fromarray(img)))
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(color_jitter(img, (0, 0, 0, 0), np.random.default_rng(1)), img)
