"""Fully-connected CRF (Kraehenbuehl & Koltun 2011) through pydensecrf.

Two entry points with the semantics of the original code bases:
- `crf_inference_label`: IRNet `misc/imutils.crf_inference_label` — hard labels as unary
  (the given label has probability `gt_prob`, every other label (1 - gt_prob) / (n - 1);
  label 0 is an ordinary class, not "unsure"), Gaussian + bilateral Potts pairwise terms,
  mean-field, argmax. Used for IR labels (config `ir_label.crf`).
- `crf_inference_prob`: deeplab-pytorch `libs/utils/crf.DenseCRF` — unary = -log(prob),
  same pairwise terms, returns the marginals Q. Used to post-process segmentation
  predictions (config `segmentation.crf`).

Both run on the raw RGB image uint8[H, W, 3] at full resolution, on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROB_FLOOR = 1e-5  # probabilities are clipped to [PROB_FLOOR, 1] before -log (pydensecrf default)

LABEL_KEYS = (
    "iterations",
    "gt_prob",
    "gaussian_sxy",
    "gaussian_compat",
    "bilateral_sxy",
    "bilateral_srgb",
    "bilateral_compat",
)
PROB_KEYS = tuple(k for k in LABEL_KEYS if k != "gt_prob")


def _densecrf() -> Any:
    """The pydensecrf.densecrf module, or an ImportError that says how to install it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the dense CRF needs pydensecrf; install it with `pip install pydensecrf2`") from e
    return dcrf


def _check_params(params: dict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"CRF params: missing key(s) {missing} (config sections ir_label.crf / segmentation.crf)")
    if int(params["iterations"]) < 0:
        raise ValueError(f"CRF params: iterations must be >= 0, got {params['iterations']}")


def _check_image(img: np.ndarray, hw: tuple[int, int], what: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"CRF image must be uint8[H, W, 3], got {img.dtype}{list(img.shape)}")
    if img.shape[:2] != tuple(hw):
        raise ValueError(f"CRF image size {img.shape[:2]} != {what} size {tuple(hw)}")
    return np.array(img, order="C", copy=True)  # pydensecrf needs a writable C-contiguous buffer


def labels_unary(labels: np.ndarray, n_labels: int, gt_prob: float) -> np.ndarray:
    """Unary energies float32[n_labels, H*W] from a hard label map int[H, W].

    -log(gt_prob) for the given label, -log((1 - gt_prob) / (n_labels - 1)) for the others
    (pydensecrf `unary_from_labels(..., zero_unsure=False)`).
    """
    if not 0.0 < gt_prob < 1.0:
        raise ValueError(f"CRF params: gt_prob must lie in (0, 1), got {gt_prob}")
    flat = np.asarray(labels).ravel().astype(np.int64)
    unary = np.full((n_labels, flat.size), -np.log((1.0 - gt_prob) / (n_labels - 1)), dtype=np.float32)
    unary[flat, np.arange(flat.size)] = -np.log(gt_prob)
    return unary


def _mean_field(img: np.ndarray, unary: np.ndarray, params: dict) -> np.ndarray:
    """Run dense-CRF mean-field inference; returns Q float32[n_labels, H*W].

    img: uint8[H, W, 3] C-contiguous; unary: float32[n_labels, H*W].
    """
    dcrf = _densecrf()
    h, w = img.shape[:2]
    n_labels = unary.shape[0]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=float(params["gaussian_sxy"]), compat=float(params["gaussian_compat"]))
    d.addPairwiseBilateral(
        sxy=float(params["bilateral_sxy"]),
        srgb=float(params["bilateral_srgb"]),
        rgbim=img,
        compat=float(params["bilateral_compat"]),
    )
    q = d.inference(int(params["iterations"]))
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h * w)


def crf_inference_label(img: np.ndarray, labels: np.ndarray, n_labels: int, params: dict) -> np.ndarray:
    """Refine a hard label map with a dense CRF (IRNet `crf_inference_label`).

    img: uint8[H, W, 3] raw RGB.
    labels: int[H, W] with values in 0..n_labels-1 (0 is an ordinary label).
    params: iterations, gt_prob, gaussian_sxy, gaussian_compat, bilateral_sxy,
        bilateral_srgb, bilateral_compat (config `ir_label.crf`).
    Returns int64[H, W]: argmax of the CRF marginals. With a single label there is nothing
    to decide and the all-zero map is returned without running the CRF.
    """
    _check_params(params, LABEL_KEYS)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"CRF labels must be 2-D [H, W], got shape {labels.shape}")
    img = _check_image(img, labels.shape, "label map")
    if n_labels < 1:
        raise ValueError(f"CRF n_labels must be >= 1, got {n_labels}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"CRF labels must lie in 0..{n_labels - 1}, got {labels.min()}..{labels.max()}")
    if n_labels == 1:
        return np.zeros(labels.shape, dtype=np.int64)
    unary = labels_unary(labels, n_labels, float(params["gt_prob"]))
    q = _mean_field(img, unary, params)
    return np.argmax(q, axis=0).reshape(labels.shape).astype(np.int64)


def crf_inference_prob(img: np.ndarray, probs: np.ndarray, params: dict) -> np.ndarray:
    """Refine class probabilities with a dense CRF (deeplab-pytorch `DenseCRF`).

    img: uint8[H, W, 3] raw RGB.
    probs: float32[K, H, W] class probabilities (e.g. softmax of upsampled logits).
    params: iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
        bilateral_compat (config `segmentation.crf`).
    Returns float32[K, H, W] CRF marginals (each pixel sums to 1); argmax them for labels.
    Unary = -log(clip(probs, PROB_FLOOR, 1)).
    """
    _check_params(params, PROB_KEYS)
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"CRF probs must be float32[K, H, W], got shape {probs.shape}")
    img = _check_image(img, probs.shape[1:], "probability map")
    k, h, w = probs.shape
    unary = -np.log(np.clip(probs, PROB_FLOOR, 1.0)).reshape(k, h * w)
    q = _mean_field(img, unary, params)
    return q.reshape(k, h, w)
