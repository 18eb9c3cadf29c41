"""Each reference convention pinned without the reference code (tests/test_parity.py compares
with the reference itself): ResNet dilation/stride/pool layout, the IRN decoder's
upsample-and-crop, IRNet's 16-aligned high_res, IRN input padding, caffe weights and inputs."""

from __future__ import annotations

import numpy as np
import parity_fixtures as fx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conta_core.data.transforms import CAFFE_MEAN_BGR, caffe_crf_image, normalize, pil_resize_image, rescale_image
from conta_core.models.backbone import (
    build_torchvision_resnet,
    caffe_to_torchvision,
    is_caffe_layout,
    load_pretrained,
)
from conta_core.steps.cam import compute_cam, high_res_resize


def _convs3x3(layer: nn.Sequential) -> list[tuple[int, int]]:
    return [
        (m.dilation[0], m.stride[0]) for m in layer.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101"])
def test_deeplab_dilation_in_every_block(name) -> None:
    """Output stride 8: every 3x3 conv of layer3 has dilation 2, of layer4 dilation 4 (first
    block included, as deeplab-pytorch); output stride 16: layer4 dilation 2, layer3 1."""
    net = build_torchvision_resnet(name, output_stride=8, dilate=True)
    assert set(_convs3x3(net.layer3)) == {(2, 1)}
    assert set(_convs3x3(net.layer4)) == {(4, 1)}
    assert all(m.padding == m.dilation for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    net16 = build_torchvision_resnet(name, output_stride=16, dilate=True)
    assert set(d for d, _ in _convs3x3(net16.layer4)) == {2}
    assert set(d for d, _ in _convs3x3(net16.layer3)) == {1}
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.conv1(x)))))).shape[-1] == 8


def test_caffe_style_moves_the_stride_to_the_1x1_conv_and_ceils_the_pool() -> None:
    net = build_torchvision_resnet("resnet101", output_stride=8, dilate=True, style="caffe")
    assert net.maxpool.ceil_mode
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (1, 1)
    assert net.layer2[0].downsample[0].stride == (2, 2)
    assert net.layer3[0].conv1.stride == (1, 1) and net.layer4[0].conv1.stride == (1, 1)
    tv = build_torchvision_resnet("resnet101", output_stride=8, dilate=True)
    assert not tv.maxpool.ceil_mode and tv.layer2[0].conv2.stride == (2, 2)
    # 160 px: the ceil-mode pool gives 41 (caffe) where the floor-mode one gives 40
    x = torch.zeros(1, 3, 160, 160)
    with torch.no_grad():
        assert net.maxpool(net.conv1(x)).shape[-1] == 41 and tv.maxpool(tv.conv1(x)).shape[-1] == 40
    with pytest.raises(ValueError, match="resnet50/resnet101"):
        build_torchvision_resnet("resnet18", 8, True, style="caffe")


def test_caffe_layout_weights_load_by_name(tmp_path) -> None:
    """A deeplab-pytorch state_dict (convert.py's key names) maps onto torchvision's names."""
    import torchvision

    tv_state = fx.fill_state_dict(
        {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    )
    caffe = fx.torchvision_to_caffe(tv_state)
    assert "layer2.block1.reduce.conv.weight" in caffe and "layer1.conv1.bn.running_var" in caffe
    assert is_caffe_layout(caffe) and not is_caffe_layout(tv_state)
    caffe["fc.weight"] = torch.zeros(91, 2048, 1, 1)  # DeepLab-v1's COCO classifier is dropped
    mapped = caffe_to_torchvision(caffe)
    assert set(mapped) == set(tv_state)
    assert all(torch.equal(mapped[k], tv_state[k]) for k in tv_state)
    path = tmp_path / "deeplabv1_resnet50-caffe.pth"
    torch.save({f"base.{k}": v for k, v in caffe.items()}, path)
    net = build_torchvision_resnet("resnet50", 8, True, style="caffe")
    assert load_pretrained(net, path, style="caffe") == "caffe"
    assert torch.equal(net.layer3[5].conv2.weight, tv_state["layer3.5.conv2.weight"])
    with pytest.raises(ValueError, match="resnet_style: caffe"):
        load_pretrained(build_torchvision_resnet("resnet50", 8, True), path)
    torch.save({"layer9.block1.reduce.conv.weight": torch.zeros(1), **caffe}, path)
    with pytest.raises(ValueError, match="layer9"):
        load_pretrained(net, path, style="caffe")


def test_caffe_input_normalisation_and_crf_image() -> None:
    img = np.array([[[255, 0, 10]]], np.uint8)  # RGB
    x = normalize(img, "caffe")[:, 0, 0]
    np.testing.assert_allclose(x, [10 - CAFFE_MEAN_BGR[0], 0 - CAFFE_MEAN_BGR[1], 255 - CAFFE_MEAN_BGR[2]], rtol=1e-6)
    # deeplab-pytorch's CRF image: BGR - mean cast to uint8, negatives wrap (10 - 104.008 -> -94 -> 162)
    np.testing.assert_array_equal(caffe_crf_image(img)[0, 0], [162, 140, 132])
    with pytest.raises(ValueError, match="input_norm"):
        normalize(img, "bgr")


def test_pil_bicubic_rescale_is_pils() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize((80, 55), Image.BICUBIC))
    np.testing.assert_array_equal(pil_resize_image(img, (55, 80)), ref)
    np.testing.assert_array_equal(rescale_image(img, (55, 80), "pil_bicubic"), ref)
    assert not np.array_equal(rescale_image(img, (55, 80), "bilinear"), ref)
    with pytest.raises(ValueError, match="cam.resize"):
        rescale_image(img, (5, 5), "lanczos")


class _ImpulseCAM(nn.Module):
    """cam_maps: one map with an impulse in the last stride-16 cell; no context."""

    uses_context = False

    def cam_maps(self, x, xm=None):
        h, w = -(-x.shape[-2] // 16), -(-x.shape[-1] // 16)
        out = torch.zeros(x.shape[0], 1, h, w)
        out[:, 0, -1, -1] = 1.0
        return out


def test_high_res_is_upsampled_to_a_multiple_of_16_then_cropped() -> None:
    """150 x 133: the stride-16 map (10 x 9) is resized to 160 x 144 and cropped (IRNet's
    get_strided_up_size), not stretched to 150 x 133."""
    img = np.zeros((150, 133, 3), np.uint8)
    _, high = compute_cam(_ImpulseCAM(), img, np.array([0]), [1.0], False, "cpu")
    m = torch.zeros(1, 1, 10, 9)
    m[0, 0, -1, -1] = 1.0
    expected = F.interpolate(m, (160, 144), mode="bilinear", align_corners=False)[0, :, :150, :133]
    expected = expected / (expected.max() + 1e-5)
    np.testing.assert_allclose(high, expected.numpy(), atol=1e-6)
    stretched = F.interpolate(m, (150, 133), mode="bilinear", align_corners=False)[0]
    assert not np.allclose(high, (stretched / (stretched.max() + 1e-5)).numpy(), atol=1e-3)
    np.testing.assert_array_equal(high_res_resize(m, 96, 96), F.interpolate(m, (96, 96), mode="bilinear"))


def test_irn_decoder_upsamples_by_fixed_factors_then_crops() -> None:
    """An impulse in the last stride-16 cell of layer3 lands where IRNet's x4 upsample + crop
    puts it on a 150 x 133 image (stride-4 grid 38 x 34, layer3 grid 10 x 9)."""
    from conta_core.models.irn import EDGE_CHANNELS, EdgeNet

    net = EdgeNet("resnet18").eval()
    sizes = [(38, 34), (38, 34), (19, 17), (10, 9), (10, 9)]
    chans = [64, 64, 128, 256, 512]
    feats = [torch.zeros(1, c, *s) for c, s in zip(chans, sizes)]
    feats[3][0, :, -1, -1] = 1.0
    net.backbone_features = lambda x: feats
    with torch.no_grad():
        for i, level in enumerate(net.edge_levels):  # identity-like levels: conv picks channel 0, GN off
            level[0].weight.zero_()
            level[0].weight[:, 0] = 1.0 if i == 3 else 0.0
            level[1] = nn.Identity()
        net.edge_out.weight.zero_()
        net.edge_out.weight[0, 3 * EDGE_CHANNELS] = 1.0
        net.edge_out.bias.zero_()
        out = net(torch.zeros(1, 3, 150, 133))[0, 0]
    impulse = torch.zeros(1, 1, 10, 9)
    impulse[0, 0, -1, -1] = 1.0
    expected = F.relu(F.interpolate(impulse, scale_factor=4, mode="bilinear", align_corners=False))[0, 0, :38, :34]
    assert out.shape == (38, 34)
    torch.testing.assert_close(out, expected)


def test_irn_input_padding() -> None:
    """pad_size pads image and flip at the bottom/right (sides above it to a multiple of 16)
    and crops the boundary map to ceil(H/4) x ceil(W/4)."""
    from conta_core.models.irn import EdgeNet
    from conta_core.steps.random_walk import boundary_map, padded_size

    assert padded_size(150, 133, 512) == (512, 512)
    assert padded_size(600, 133, 512) == (608, 512)
    assert padded_size(150, 133, None) == (150, 133)
    assert padded_size(96, 96, 96) == (96, 96)
    net = EdgeNet("resnet18").eval()
    img = np.random.default_rng(1).integers(0, 256, (50, 37, 3), dtype=np.uint8)
    plain, padded = boundary_map(net, img, "cpu"), boundary_map(net, img, "cpu", pad_size=64)
    assert plain.shape == padded.shape == (13, 10)
    assert not np.allclose(plain, padded, atol=1e-4)  # GroupNorm and border convs see the zeros
    np.testing.assert_allclose(boundary_map(net, img, "cpu", pad_size=16), boundary_map(net, img, "cpu", pad_size=48))
