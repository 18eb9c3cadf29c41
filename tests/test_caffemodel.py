"""conta_core.data.caffemodel: DeepLab's init.caffemodel read directly (protobuf wire format)
and converted to the caffe-layout state_dict that segmentation.pretrained loads. The tests
write caffemodels with a tiny protobuf encoder of their own, named as DeepLab's caffe
ResNet-101 names its layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conta_core.data import caffemodel as C
from conta_core.models.backbone import build_torchvision_resnet, caffe_to_torchvision
from conta_core.models.deeplab import DeepLabV2


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(num: int, payload: bytes) -> bytes:  # length-delimited
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _blob(a: np.ndarray, legacy: bool = False) -> bytes:
    data = _field(5, a.astype("<f4").tobytes())  # packed floats
    if legacy:  # num/channels/height/width of old caffemodels
        dims = list(a.shape) + [1] * (4 - a.ndim)
        return b"".join(_varint(k << 3) + _varint(d) for k, d in zip((1, 2, 3, 4), dims)) + data
    shape = _field(7, _field(1, b"".join(_varint(d) for d in a.shape)))
    return shape + data


def _layer(name: str, ltype: str, blobs: list[np.ndarray], v1: bool = False) -> bytes:
    if v1:  # V1LayerParameter: name 4, type enum 5, blobs 6; in NetParameter field 2
        body = (
            _field(4, name.encode()) + _varint(5 << 3) + _varint(4) + b"".join(_field(6, _blob(b, True)) for b in blobs)
        )
        return _field(2, body)
    body = _field(1, name.encode()) + _field(2, ltype.encode()) + b"".join(_field(7, _blob(b)) for b in blobs)
    return _field(100, body)


def _caffe_names(blocks=(3, 4, 23, 3)):
    """(caffe conv name, bn suffix, torchvision module) of DeepLab's caffe ResNet."""
    out = [("conv1", "_conv1", "conv1", "bn1")]
    for stage, n in zip((2, 3, 4, 5), blocks):
        for b in range(n):
            letter = "abc"[b] if n <= 3 else ("a" if b == 0 else f"b{b}")
            tv = f"layer{stage - 1}.{b}"
            for br, conv, bn in (("2a", "conv1", "bn1"), ("2b", "conv2", "bn2"), ("2c", "conv3", "bn3")):
                out.append(
                    (f"res{stage}{letter}_branch{br}", f"{stage}{letter}_branch{br}", f"{tv}.{conv}", f"{tv}.{bn}")
                )
            if b == 0:
                out.append((f"res{stage}a_branch1", f"{stage}a_branch1", f"{tv}.downsample.0", f"{tv}.downsample.1"))
    return out


def _write_from(state: dict, path, blocks=(3, 4, 23, 3), scale_factor: float = 2.0) -> None:
    """A caffemodel holding the torchvision-named weights `state` under caffe's layer names."""
    parts = [_layer("data", "Input", [])]
    for conv, bn, tv_conv, tv_bn in _caffe_names(blocks):
        parts.append(_layer(conv, "Convolution", [state[f"{tv_conv}.weight"].numpy()]))
        bn_name = "bn_conv1" if conv == "conv1" else f"bn{bn}"
        sc_name = "scale_conv1" if conv == "conv1" else f"scale{bn}"
        mean, var = state[f"{tv_bn}.running_mean"].numpy(), state[f"{tv_bn}.running_var"].numpy()
        parts.append(_layer(bn_name, "BatchNorm", [mean * scale_factor, var * scale_factor, np.array([scale_factor])]))
        parts.append(_layer(sc_name, "Scale", [state[f"{tv_bn}.weight"].numpy(), state[f"{tv_bn}.bias"].numpy()]))
    parts.append(_layer("pool1", "Pooling", []))
    parts.append(_layer("fc1_coco", "Convolution", [np.zeros((2, 2048, 1, 1), np.float32), np.zeros(2, np.float32)]))
    path.write_bytes(b"".join(parts))


def test_resnet101_caffemodel_converts_to_the_caffe_layout_backbone(tmp_path):
    """The full ResNet-101 layer list: the converted keys and shapes are exactly those of the
    caffe-style ResNet-101 backbone of models/deeplab.py, the values survive, and it loads."""
    torch.manual_seed(0)
    net = build_torchvision_resnet("resnet101", 8, True, "caffe")  # DeepLabV2's backbone network
    ref = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    for k, v in ref.items():
        if k.endswith(("running_mean", "running_var")):
            v.uniform_(0.5, 1.5)
    src, dst = tmp_path / "init.caffemodel", tmp_path / "deeplabv1_resnet101-coco.pth"
    _write_from(ref, src)
    state = C.convert_caffemodel(src, dst)
    assert all(k.startswith("layer") for k in state)  # deeplab-pytorch's names (layer1.conv1.conv.weight, ...)
    tv = caffe_to_torchvision(state)
    assert set(tv) == set(ref)
    for k, v in ref.items():
        assert tv[k].shape == v.shape, k
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(tv[k], v, rtol=1e-6, atol=1e-6)
    model = DeepLabV2(21, "resnet101", pretrained=dst, resnet_style="caffe")  # as segmentation.pretrained
    assert model.backbone.weights_layout == "caffe"
    torch.testing.assert_close(model.backbone.stages[2][22].conv2.weight, ref["layer3.22.conv2.weight"])


def test_legacy_layers_and_a_zero_scale_factor(tmp_path):
    """V1 `layers` (field 2) with legacy blob dims; caffe's BatchNorm scale factor 0 gives 0."""
    w = np.arange(64 * 3 * 7 * 7, dtype=np.float32).reshape(64, 3, 7, 7)
    data = _layer("conv1", "", [w], v1=True)
    data += _layer("bn_conv1", "BatchNorm", [np.ones(64, np.float32), np.ones(64, np.float32), np.zeros(1, np.float32)])
    src = tmp_path / "old.caffemodel"
    src.write_bytes(data)
    layers = C.read_caffemodel(src)
    assert [n for n, _, _ in layers] == ["conv1", "bn_conv1"]
    state = C.convert_deeplab_resnet(layers)
    np.testing.assert_array_equal(state["layer1.conv1.conv.weight"].numpy(), w)
    assert float(state["layer1.conv1.bn.running_mean"].abs().sum()) == 0.0


def test_name_mapping_and_bad_files(tmp_path):
    assert C.torch_module_name("res4b22_branch2c") == "layer4.block23.increase"
    assert C.torch_module_name("bn5a_branch1") == "layer5.block1.shortcut"
    assert C.torch_module_name("res075_res2a_branch2a") is None and C.torch_module_name("fc1_coco") is None
    html = tmp_path / "init.caffemodel"
    html.write_bytes(b"<html>login</html>")
    with pytest.raises(C.CaffeModelError, match="init.caffemodel"):
        C.convert_caffemodel(html, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_fetch_converts_the_downloaded_init(tmp_path, monkeypatch):
    """`conta fetch` ends with the converted init: the zip from a (file://) mirror holds a
    caffemodel, and DEST/deeplabv1_resnet101-coco.pth is written and named by the overlay."""
    import io
    import zipfile

    import yaml

    from conta_core.data import fetch as F

    w = np.ones((64, 3, 7, 7), np.float32)
    model = _layer("conv1", "Convolution", [w]) + _layer(
        "bn_conv1", "BatchNorm", [np.zeros(64, np.float32), np.ones(64, np.float32), np.ones(1, np.float32)]
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("init.caffemodel", model)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "prototxt_and_model.zip").write_bytes(buf.getvalue())
    path = F.fetch("voc12", tmp_path / "res", base_url=mirror.as_uri(), only=["deeplab_init"], progressbar=False)
    state = torch.load(tmp_path / "res" / F.DEEPLAB_CONVERTED, weights_only=True)
    torch.testing.assert_close(state["layer1.conv1.conv.weight"], torch.from_numpy(w))
    assert yaml.safe_load(path.read_text())["segmentation"]["pretrained"].endswith(F.DEEPLAB_CONVERTED)
