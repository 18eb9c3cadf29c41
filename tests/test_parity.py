"""Parity with the official reference code, step by step, on identical inputs and weights.

tests/golden/reference_parity.npz holds what IRNet (jiwoon-ahn/irn @ a2ece00),
deeplab-pytorch (kazuto1011/deeplab-pytorch @ 4219467) and AMN (gaviotas/AMN @ 75c1999)
computed on the fixtures of tests/parity_fixtures.py, made by tools/make_parity_goldens.py
(which runs their step functions; none of their code is in this project). Here the
project's own functions run on the same fixtures, with the reference conventions of the
VOC/COCO overlays (cam.resize pil_bicubic, random_walk.pad_size 512, segmentation
resnet_style/input_norm caffe), and must agree within the bounds of the fidelity issue:
IR labels 100 %, CAM files <= 1e-3, pseudo-masks >= 99.9 % of pixels, DeepLab MSC logits
<= 1e-4, AMN network output and make_amn_cam maps <= 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import parity_fixtures as fx
import pytest
import torch

from conta_core.infra.config import DEFAULT_CONFIG, load_yaml

GOLDEN = Path(__file__).parent / "golden" / "reference_parity.npz"
CPU = torch.device("cpu")
IDS = [f"2007_{i + 1:06d}" for i in range(len(fx.IMAGE_SIZES))]
CAM_SCALES = [1.0, 0.5, 1.5, 2.0]
RW_CFG = {"radius": 5, "beta": 10, "exp_times": 8, "bg_threshold": 0.25, "pad_size": 512}


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as g:
        return {k: g[k] for k in g.files}


@pytest.fixture(scope="module")
def images(golden) -> dict[str, np.ndarray]:
    imgs = dict(zip(IDS, fx.fixture_images()))
    for name, img in imgs.items():  # the recipe still makes what the reference was fed
        np.testing.assert_array_equal(img, golden[f"image/{name}"])
    return imgs


def _cam_net():
    from conta_core.models.classifier import CAMNet

    net = CAMNet(fx.NUM_FG, backbone="resnet50", frozen_stages=0)
    net.load_state_dict(fx.fill_state_dict(net.state_dict()))
    return net.eval()


def _golden_cam(golden, name) -> dict:
    return {k: golden[f"irn/{f}/{name}"] for k, f in (("keys", "cam_keys"), ("cam", "cam"), ("high_res", "high_res"))}


def test_cam_files_match_irnet_make_cam(golden, images) -> None:
    from conta_core.steps.cam import compute_cams_batch

    net = _cam_net()
    worst = 0.0
    for name, keys in zip(IDS, fx.fixture_keys()):
        ((cam, high_res),) = compute_cams_batch(
            net, [images[name]], [keys], CAM_SCALES, True, CPU, resize="pil_bicubic"
        )
        np.testing.assert_array_equal(keys, golden[f"irn/cam_keys/{name}"])
        assert cam.shape == golden[f"irn/cam/{name}"].shape and high_res.shape == golden[f"irn/high_res/{name}"].shape
        worst = max(
            worst,
            np.abs(cam - golden[f"irn/cam/{name}"]).max(),
            np.abs(high_res - golden[f"irn/high_res/{name}"]).max(),
        )
    assert worst <= 1e-3, f"CAM files differ from IRNet's by up to {worst:.2e}"


def test_ir_labels_match_irnet_cam_to_ir_label(golden, images) -> None:
    from conta_core.steps.ir_label import cam_to_ir_label

    crf = load_yaml(DEFAULT_CONFIG)["ir_label"]["crf"]  # IRNet crf_inference_label's constants
    for name in IDS:
        cam = _golden_cam(golden, name)
        label = cam_to_ir_label(images[name], cam["keys"], cam["high_res"], 0.30, 0.05, crf)
        np.testing.assert_array_equal(label, golden[f"irn/ir_label/{name}"], err_msg=name)


def _edge_net():
    from conta_core.models.irn import EdgeNet

    net = EdgeNet("resnet50")
    net.load_state_dict(fx.fill_state_dict(net.state_dict()))
    return net.eval()


def test_boundary_map_and_pseudo_masks_match_irnet_make_sem_seg_labels(golden, images) -> None:
    from conta_core.steps.random_walk import boundary_map, pseudo_mask_from_cam

    net = _edge_net()
    same = total = degenerate = 0
    for name in IDS:
        boundary = boundary_map(net, images[name], CPU, pad_size=512)
        np.testing.assert_allclose(boundary, golden[f"irn/edge/{name}"], atol=1e-4, err_msg=name)
        cam = _golden_cam(golden, name)
        mask = pseudo_mask_from_cam(images[name], cam, net, RW_CFG, CPU, boundary)
        ref = golden[f"irn/sem_seg/{name}"]
        if cam["cam"].max() == 0:
            # [OURS] An all-zero CAM walks to all zeros; IRNet divides 0 by 0 and its argmax
            # takes the NaN, labelling the whole image with the class. Here it is background.
            assert (ref == cam["keys"][0] + 1).all() and (mask == 0).all()
            degenerate += 1
            continue
        same += int((mask == ref).sum())
        total += mask.size
    assert degenerate == 1  # fixture 5: its one class gets a ReLU CAM of zeros under the recipe weights
    assert same / total >= 0.999, f"pseudo-masks agree with IRNet's on {100 * same / total:.3f} % of pixels"


def test_deeplab_msc_logits_match_deeplab_pytorch(golden, tmp_path) -> None:
    """Caffe-layout weights (deeplab-pytorch's key names) load by name; logits equal theirs."""
    from conta_core.data.transforms import normalize
    from conta_core.models.deeplab import build_deeplab

    path = tmp_path / "deeplabv2_caffe_layout.pth"
    torch.save({k.removeprefix("base."): v for k, v in fx.deeplab_caffe_state().items()}, path)
    cfg = {
        "backbone": "resnet101",
        "pretrained": str(path),
        "output_stride": 8,
        "aspp_rates": [6, 12, 18, 24],
        "freeze_bn": True,
        "msc_scales": [1.0, 0.75, 0.5],
        "resnet_style": "caffe",
        "input_norm": "caffe",
    }
    model = build_deeplab(cfg, fx.DEEPLAB_CLASSES).eval()
    assert sum(p.numel() for p in model.parameters()) == int(golden["deeplab/num_params"])
    aspp = fx.deeplab_aspp_state()
    model.base.load_state_dict({**model.base.state_dict(), **aspp})
    img = golden["deeplab/image"]
    np.testing.assert_array_equal(img, fx.deeplab_image())
    with torch.no_grad():
        logits = model(torch.from_numpy(normalize(img, "caffe"))[None])[0].numpy()
    ref = golden["deeplab/logits"]
    assert logits.shape == ref.shape
    diff = np.abs(logits - ref).max()
    assert diff <= 1e-4, f"DeepLab MSC logits differ from deeplab-pytorch's by up to {diff:.2e}"


def _amn_net():
    from conta_core.models.amn import AMNNet

    net = AMNNet(fx.NUM_FG, backbone="resnet50")
    net.load_state_dict(fx.fill_state_dict(net.state_dict()))
    return net.eval()


def test_amn_network_and_make_amn_cam_match_gaviotas_amn(golden, images) -> None:
    from conta_core.data.transforms import normalize
    from conta_core.steps.amn import compute_amn_cam

    net = _amn_net()
    name, keys = IDS[0], fx.fixture_keys()[0]
    x = torch.from_numpy(normalize(images[name]))
    y = torch.zeros(1, fx.NUM_FG)
    y[0, keys] = 1.0
    with torch.no_grad():
        out = net(torch.stack([x, x.flip(-1)]), y.expand(2, -1))
    fused = ((out[0] + out[1].flip(-1)) / 2).numpy()  # what AMN's CAM.forward returns
    assert np.abs(fused - golden["amn/logits"]).max() <= 1e-3
    worst = 0.0
    for name, keys in zip(IDS, fx.fixture_keys()):
        seed = golden[f"irn/ir_label/{name}"]
        cam, high_res = compute_amn_cam(net, images[name], keys, seed, CAM_SCALES, True, CPU, resize="pil_bicubic")
        ref_cam, ref_high = golden[f"amn/cam/{name}"], golden[f"amn/high_res/{name}"]
        # make_amn_cam keeps the background channel first; the project's files hold the classes only
        worst = max(worst, np.abs(cam - ref_cam[1:]).max(), np.abs(high_res - ref_high[1:]).max())
    assert worst <= 1e-3, f"AMN maps differ from make_amn_cam's by up to {worst:.2e}"
