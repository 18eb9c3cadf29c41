"""The fast per-step paths equal the naive reference loops (benchmarks/), within stated tolerances.

Tolerances (CPU, fp32):
- batched CAMs (compute_cams_batch, make_cams) vs per-image compute_cam: max abs diff < 1e-5
  (maps in [0, 1]; batched convolutions round differently);
- batched segmentation probabilities (predict_batch) vs per-image predict: < 1e-5;
- batched boundary maps vs per-image boundary_map: < 1e-5;
- sparse random walk vs IRNet's dense T^(2^exp_times) by repeated squaring: relative 1e-3
  (2^exp_times float32 steps drift ~1e-4 relative);
- shared-lattice CRF (crf_label_maps, cam_to_ir_label) vs separate CRFs: exact;
- one-call class maps (class_maps) vs per-class class_map: exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conta_core.data.manifest import Manifest
from conta_core.infra.device import inference_autocast
from conta_core.infra.fileio import load_cam, save_torch
from conta_core.models.classifier import build_classifier
from conta_core.models.deeplab import build_deeplab
from conta_core.models.irn import EdgeNet
from conta_core.steps.cam import compute_cam, compute_cams_batch, make_cams, size_batches
from conta_core.steps.confounder import class_map, class_maps
from conta_core.steps.crf import crf_inference_label
from conta_core.steps.ir_label import cam_to_ir_label, crf_label_maps
from conta_core.steps.irn import build_pair_index, pair_affinity
from conta_core.steps.random_walk import (
    _pair_index,
    _path_affinity,
    boundary_map,
    boundary_maps,
    pseudo_mask_from_cam,
    random_walk,
)
from conta_core.steps.segment import predict, predict_batch

ATOL = 1e-5
RW_RTOL = 1e-3
NUM_FG = 3
CLS_CFG = {"backbone": "resnet18", "pretrained": None, "freeze_bn": False, "frozen_stages": 0}
CONTEXT_CFG = {"mode": "conta", "block": 5, "size": [4, 4], "xm_encoding": "foreground"}
CRF = {"iterations": 5, "gt_prob": 0.7, "gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 50,
       "bilateral_srgb": 5, "bilateral_compat": 10}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _classifier(context: dict | None = None):
    torch.manual_seed(0)
    model = build_classifier(CLS_CFG, context, NUM_FG)
    if context is not None:
        model.set_confounder(torch.rand(NUM_FG, *context["size"], generator=torch.Generator().manual_seed(1)))
    return model.eval()


def test_cams_batch_equals_per_image():
    model = _classifier()
    imgs = _images(3, 32, 24)
    keys = [np.array([0, 2]), np.array([1]), np.array([], dtype=np.int64)]
    batched = compute_cams_batch(model, imgs, keys, [1.0, 0.5], True, "cpu")
    for img, k, (cam, high) in zip(imgs, keys, batched):
        ref_cam, ref_high = compute_cam(model, img, k, [1.0, 0.5], True, "cpu")
        assert cam.shape == ref_cam.shape == (len(k), 8, 6) and high.shape == (len(k), 32, 24)
        np.testing.assert_allclose(cam, ref_cam, atol=ATOL, rtol=0)
        np.testing.assert_allclose(high, ref_high, atol=ATOL, rtol=0)


def test_cams_batch_with_context_equals_per_image():
    model = _classifier(CONTEXT_CFG)
    imgs = _images(2, 32, 32, seed=1)
    rng = np.random.default_rng(2)
    xms = [rng.integers(0, NUM_FG + 1, (32, 32)).astype(np.uint8) for _ in imgs]
    keys = [np.array([0]), np.array([1, 2])]
    batched = compute_cams_batch(model, imgs, keys, [1.0], True, "cpu", xms)
    for img, k, xm, (cam, high) in zip(imgs, keys, xms, batched):
        ref_cam, ref_high = compute_cam(model, img, k, [1.0], True, "cpu", xm)
        np.testing.assert_allclose(cam, ref_cam, atol=ATOL, rtol=0)
        np.testing.assert_allclose(high, ref_high, atol=ATOL, rtol=0)


def test_cams_batch_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        compute_cams_batch(_classifier(), _images(1, 32, 32) + _images(1, 16, 32), [[0], [0]], [1.0], True, "cpu")


def test_size_batches_groups_equal_sizes_in_order():
    shapes = [(32, 32, 3), (16, 24, 3), (32, 32, 3), (16, 24, 3), (32, 32, 3)]
    assert size_batches(shapes, [1.0], True) == [[0, 2, 4], [1, 3]]
    # 2**20 pixels per pass: a 512 x 512 image with its flip at scale 2 needs more -> one per batch
    assert size_batches([(512, 512, 3)] * 2, [1.0, 2.0], True) == [[0], [1]]


def test_make_cams_equals_compute_cam(tmp_path):
    """Streaming windows + size groups write the same CAM as compute_cam for every id."""
    imgs = _images(3, 32, 32) + _images(2, 24, 40, seed=3)
    ids = [f"im{i}" for i in range(len(imgs))]
    for i, img in zip(ids, imgs):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    labels = {i: [1 + j % NUM_FG] for j, i in enumerate(ids)}
    manifest = Manifest("t", tmp_path, ["background", "a", "b", "c"], {"train": ids}, labels,
                        {i: f"{i}.png" for i in ids})  # fmt: skip
    model = _classifier()
    save_torch(tmp_path / "cls.pth", {"state_dict": model.state_dict(),
                                      "config": {"classifier": CLS_CFG, "context": None, "num_fg": NUM_FG}})  # fmt: skip
    cfg = {"scales": [1.0, 0.5], "flip": True}
    make_cams(manifest, ids, tmp_path / "cls.pth", tmp_path / "cam", cfg, "cpu")
    for i, img in zip(ids, imgs):
        got = load_cam(tmp_path / "cam" / f"{i}.npz")
        keys = np.array(labels[i]) - 1
        ref_cam, ref_high = compute_cam(model, img, keys, cfg["scales"], True, "cpu")
        assert got["keys"].tolist() == keys.tolist()
        np.testing.assert_allclose(got["cam"], ref_cam, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got["high_res"], ref_high, atol=ATOL, rtol=0)


def test_shared_lattice_crf_equals_separate_crfs():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    maps = [rng.integers(0, 3, (24, 20)) for _ in range(3)]
    got = crf_label_maps(img, maps, 3, CRF)
    for m, g in zip(maps, got):
        np.testing.assert_array_equal(g, crf_inference_label(img, m, 3, CRF))
    only_bg = np.zeros((24, 20), dtype=np.int64)
    assert crf_label_maps(img, [only_bg], 1, CRF)[0].max() == 0  # one label: nothing to decide


def test_ir_label_equals_two_separate_crfs():
    """cam_to_ir_label (one CRF object for fg and bg) == IRNet's two fresh CRFs (benchmarks naive)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    keys = np.array([0, 2])
    high = rng.random((2, 24, 24)).astype(np.float32)
    class_ids = np.array([0, 1, 3])
    ref = []
    for thr in (0.3, 0.05):
        index = np.concatenate([np.full((1, 24, 24), thr, np.float32), high]).argmax(0)
        ref.append(class_ids[crf_inference_label(img, index, 3, CRF)])
    expected = np.where(ref[0] > 0, ref[0], np.where(ref[1] == 0, 0, 255))
    np.testing.assert_array_equal(cam_to_ir_label(img, keys, high, 0.3, 0.05, CRF), expected)


def _dense_walk(cams: torch.Tensor, boundary: torch.Tensor, beta: float, exp_times: int, radius: int):
    """IRNet: dense A from the pair affinities, T = column-normalised A^beta, squared exp_times times."""
    h, w = boundary.shape
    index = build_pair_index(h, w, radius)
    aff = pair_affinity(boundary[None], index)[0].pow(beta)
    src = torch.arange(h * w).expand_as(index.dst)
    a = torch.eye(h * w, dtype=torch.float64)
    a[src[index.valid], index.dst[index.valid]] = aff[index.valid].double()
    a[index.dst[index.valid], src[index.valid]] = aff[index.valid].double()
    t = a / a.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    v = (cams * (1.0 - boundary)).reshape(cams.shape[0], -1).double()
    return (v @ t).reshape(-1, h, w)


def test_sparse_walk_equals_dense_squaring():
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(9, 11, generator=g) ** 3
    cams = torch.rand(2, 9, 11, generator=g)
    fast = random_walk(cams, boundary, beta=10, exp_times=5, radius=4)
    ref = _dense_walk(cams, boundary, 10, 5, 4)
    assert torch.allclose(fast.double(), ref, rtol=RW_RTOL, atol=RW_RTOL * float(ref.abs().max()))


def test_cached_path_affinity_equals_irn_pair_affinity():
    boundary = torch.rand(7, 10, generator=torch.Generator().manual_seed(3))
    index, cells_last = _pair_index(7, 10, 4, torch.device("cpu"))
    assert _pair_index(7, 10, 4, torch.device("cpu"))[0] is index  # cached per grid size
    expected = pair_affinity(boundary[None], build_pair_index(7, 10, 4))[0]
    assert torch.equal(_path_affinity(boundary, index, cells_last)[index.valid], expected[index.valid])


def _edge_net() -> EdgeNet:
    torch.manual_seed(0)
    return EdgeNet("resnet18", pretrained=None, freeze_bn=True).eval()


def test_batched_boundary_maps_and_pseudo_masks_equal_per_image():
    net = _edge_net()
    imgs = _images(3, 32, 28, seed=4)
    batched = boundary_maps(net, imgs, "cpu")
    assert batched.shape == (3, 8, 7)
    cfg = {"radius": 3, "beta": 10, "exp_times": 4, "bg_threshold": 0.25}
    rng = np.random.default_rng(5)
    for img, b in zip(imgs, batched):
        np.testing.assert_allclose(b, boundary_map(net, img, "cpu"), atol=ATOL, rtol=0)
        cam = {"keys": np.array([0, 1]), "cam": rng.random((2, 8, 7)).astype(np.float32)}
        np.testing.assert_array_equal(
            pseudo_mask_from_cam(img, cam, net, cfg, "cpu", boundary=boundary_map(net, img, "cpu")),
            pseudo_mask_from_cam(img, cam, net, cfg, "cpu"),
        )


def test_predict_batch_equals_per_image():
    cfg = {"backbone": "resnet18", "pretrained": None, "output_stride": 8, "aspp_rates": [2, 4],
           "freeze_bn": False, "msc_scales": [1.0, 0.75]}  # fmt: skip
    torch.manual_seed(0)
    model = build_deeplab(cfg, NUM_FG + 1).eval()
    imgs = _images(2, 24, 32, seed=6)
    probs = predict_batch(model, imgs, [1.0, 0.5], True, "cpu")
    assert probs.shape == (2, NUM_FG + 1, 24, 32)
    for img, p in zip(imgs, probs):
        np.testing.assert_allclose(p, predict(model, img, [1.0, 0.5], True, "cpu"), atol=ATOL, rtol=0)


@pytest.mark.parametrize("resize", ["area", "nearest"])
def test_class_maps_equal_per_class(resize):
    rng = np.random.default_rng(7)
    mask = rng.choice(np.array([0, 1, 2, 3, 255], dtype=np.uint8), size=(30, 22))
    got = class_maps(mask, [1, 3], (4, 5), resize)
    assert got.dtype == np.float32 and got.shape == (2, 4, 5)
    for k, m in zip([1, 3], got):
        np.testing.assert_array_equal(m, class_map(mask, k, (4, 5), resize))
    assert class_maps(mask, [], (4, 5), resize).shape == (0, 4, 5)


def test_inference_autocast_is_a_noop_on_cpu():
    x = torch.ones(2, 3)
    with inference_autocast(torch.device("cpu")):
        y = torch.nn.functional.linear(x, torch.ones(4, 3))
    assert y.dtype == torch.float32 and math.isclose(float(y[0, 0]), 3.0)
