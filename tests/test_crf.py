"""conta_core.steps.crf: dense CRF on labels (IRNet) and on probabilities (deeplab-pytorch)."""

import numpy as np
import pytest
import torch

from conta_core.steps.crf import crf_inference_label, crf_inference_prob

torch.set_num_threads(1)

LABEL_PARAMS = dict(
    iterations=10,
    gt_prob=0.7,
    gaussian_sxy=3,
    gaussian_compat=3,
    bilateral_sxy=50,
    bilateral_srgb=5,
    bilateral_compat=10,
)
PROB_PARAMS = {k: v for k, v in LABEL_PARAMS.items() if k != "gt_prob"}
SIZE, EDGE = 32, 16


def two_tone_image() -> np.ndarray:
    """uint8[32, 32, 3]: dark left half, bright right half (vertical edge at column 16)."""
    img = np.full((SIZE, SIZE, 3), 30, dtype=np.uint8)
    img[:, EDGE:] = 220
    return img


def edge_labels(edge: int) -> np.ndarray:
    labels = np.zeros((SIZE, SIZE), dtype=np.int64)
    labels[:, edge:] = 1
    return labels


def test_clean_label_map_unchanged():
    out = crf_inference_label(two_tone_image(), edge_labels(EDGE), 2, LABEL_PARAMS)
    assert out.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(out, edge_labels(EDGE))


def test_noisy_label_snaps_to_image_edge():
    noisy = edge_labels(EDGE - 3)  # label boundary 3 px left of the true edge
    out = crf_inference_label(two_tone_image(), noisy, 2, LABEL_PARAMS)
    np.testing.assert_array_equal(out, edge_labels(EDGE))


def test_single_label_is_all_zero():
    out = crf_inference_label(two_tone_image(), np.zeros((SIZE, SIZE), int), 1, LABEL_PARAMS)
    assert (out == 0).all()


def test_prob_crf_marginals_and_edge():
    probs = np.zeros((2, SIZE, SIZE), dtype=np.float32)
    probs[1] = (np.arange(SIZE)[None, :] >= EDGE - 3) * 0.3 + 0.35  # weak, wrong boundary
    probs[0] = 1.0 - probs[1]
    q = crf_inference_prob(two_tone_image(), probs, PROB_PARAMS)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(q.argmax(axis=0), edge_labels(EDGE))


def test_bad_inputs_raise():
    img = two_tone_image()
    with pytest.raises(ValueError, match="gt_prob"):
        crf_inference_label(img, edge_labels(EDGE), 2, PROB_PARAMS)
    with pytest.raises(ValueError, match="size"):
        crf_inference_label(img[:-1], edge_labels(EDGE), 2, LABEL_PARAMS)
    with pytest.raises(ValueError, match="0..1"):
        crf_inference_label(img, edge_labels(EDGE) * 2, 2, LABEL_PARAMS)
    with pytest.raises(ValueError, match="uint8"):
        crf_inference_prob(img.astype(np.float32), np.ones((1, SIZE, SIZE), np.float32), PROB_PARAMS)
