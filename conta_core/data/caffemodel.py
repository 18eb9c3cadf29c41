"""Read DeepLab's caffe `init.caffemodel` directly and convert it to the caffe-layout torch
state_dict that `segmentation.pretrained` loads (deeplabv1_resnet101-coco.pth), with no caffe,
protobuf package or deeplab-pytorch install.

A .caffemodel is a serialized caffe `NetParameter` (protobuf wire format). Only these fields
are read (caffe.proto, https://github.com/BVLC/caffe/blob/master/src/caffe/proto/caffe.proto):

    NetParameter:  layer = 100 (LayerParameter, repeated); layers = 2 (V1LayerParameter, legacy)
    LayerParameter:   name = 1 (string), type = 2 (string), blobs = 7 (BlobProto, repeated)
    V1LayerParameter: name = 4 (string), type = 5 (enum), blobs = 6 (BlobProto, repeated)
    BlobProto: shape = 7 (BlobShape: dim = 1, repeated int64), data = 5 (repeated float,
               packed or not), legacy dims num/channels/height/width = 1/2/3/4

read_caffemodel(path) -> [(layer name, layer type, [float32 array of its blob shape, ...])].

convert_deeplab_resnet(layers) -> {key: torch.Tensor} with deeplab-pytorch's key names (the
names its convert.py writes, https://github.com/kazuto1011/deeplab-pytorch, `--dataset coco`):

    conv1 / bn_conv1 + scale_conv1            -> layer1.conv1.conv.weight / layer1.conv1.bn.*
    res{S}{B}_branch{1,2a,2b,2c}              -> layer{S}.block{b}.{shortcut,reduce,conv3x3,increase}.conv.weight
    bn{S}{B}_branch.. + scale{S}{B}_branch..  -> layer{S}.block{b}.{...}.bn.{weight,bias,running_mean,running_var,num_batches_tracked}

with S = 2..5 and block letter a, b, c -> b = 1, 2, 3, or b<k> -> b = k + 1 (res4b22 -> block23).
BatchNorm: running_mean = blob0 / blob2[0], running_var = blob1 / blob2[0] (caffe's moving
average scale factor; 0 gives 0, as in caffe), weight / bias from the following Scale layer,
num_batches_tracked 0. Layers of the shared multi-scale branches (names with res075 / res05)
and the classifier head (fc*) are left out: [OURS] no step loads the head
(backbone.caffe_to_torchvision drops fc.* and aspp.*).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

V1_TYPES = {4: "Convolution", 14: "InnerProduct"}  # V1LayerParameter.LayerType values used here


class CaffeModelError(ValueError):
    """A file that is not a caffemodel of the expected network; the message names it."""


# ------------------------------------------------------------------------------ wire format


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeModelError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise CaffeModelError("varint too long")


def iter_fields(buf: memoryview):
    """(field number, wire type, value) of one message: value is an int (varint / fixed) or a
    memoryview (length-delimited)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise CaffeModelError("truncated length-delimited field")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CaffeModelError(f"unsupported wire type {wire}")
        yield field, wire, value


def _packed_varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def read_blob(buf: memoryview) -> np.ndarray:
    """BlobProto -> float32 array of its shape (BlobShape, else legacy num/channels/height/width)."""
    shape: list[int] = []
    legacy = {}
    chunks: list[np.ndarray] = []
    for field, wire, value in iter_fields(buf):
        if field == 7 and wire == 2:  # BlobShape
            for f2, w2, v2 in iter_fields(value):
                if f2 == 1:
                    shape.extend(_packed_varints(v2) if w2 == 2 else [v2])
        elif field == 5:  # data: packed floats or one float per field
            if wire == 2:
                chunks.append(np.frombuffer(value, dtype="<f4"))
            else:
                chunks.append(np.array([struct.unpack("<f", struct.pack("<I", value))[0]], dtype="<f4"))
        elif field in (1, 2, 3, 4) and wire == 0:
            legacy[field] = value
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype="<f4")
    if not shape and legacy:
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    if shape and int(np.prod(shape)) != data.size:
        raise CaffeModelError(f"blob of shape {shape} holds {data.size} values")
    return data.astype(np.float32).reshape(shape or [data.size])


def read_caffemodel(path: str | Path) -> list[tuple[str, str, list[np.ndarray]]]:
    """[(name, type, blobs)] of every layer of a .caffemodel, in file order."""
    path = Path(path)
    buf = memoryview(path.read_bytes())
    layers = []
    try:
        for field, wire, value in iter_fields(buf):
            if wire != 2 or field not in (100, 2):
                continue
            new = field == 100
            name, ltype, blobs = "", "", []
            for f2, w2, v2 in iter_fields(value):
                if f2 == (1 if new else 4) and w2 == 2:
                    name = bytes(v2).decode("utf-8", "replace")
                elif new and f2 == 2 and w2 == 2:
                    ltype = bytes(v2).decode("utf-8", "replace")
                elif not new and f2 == 5 and w2 == 0:
                    ltype = V1_TYPES.get(v2, str(v2))
                elif f2 == (7 if new else 6) and w2 == 2:
                    blobs.append(read_blob(v2))
            layers.append((name, ltype, blobs))
    except (CaffeModelError, struct.error) as e:
        raise CaffeModelError(f"{path}: not a readable caffemodel ({e})") from e
    if not layers:
        raise CaffeModelError(f"{path}: no layers found (not a caffemodel)")
    return layers


# ------------------------------------------------------------------------------ conversion

_BRANCH = {"1": "shortcut", "2a": "reduce", "2b": "conv3x3", "2c": "increase"}
_RES = re.compile(r"^(res|bn|scale)([2-5])([a-z])(\d*)_branch(1|2a|2b|2c)$")


def torch_module_name(caffe_name: str) -> str | None:
    """deeplab-pytorch's module name of a caffe layer (without .conv / .bn), None for layers
    that are not converted (pooling, head, multi-scale branches)."""
    if "res075" in caffe_name or "res05" in caffe_name:
        return None
    if caffe_name in ("conv1", "bn_conv1", "scale_conv1"):
        return "layer1.conv1"
    m = _RES.match(caffe_name)
    if not m:
        return None
    _, stage, letter, number, branch = m.groups()
    if number:
        block = int(number) + 1
    elif letter in "abc":
        block = {"a": 1, "b": 2, "c": 3}[letter]
    else:
        return None
    return f"layer{stage}.block{block}.{_BRANCH[branch]}"


def _kind(name: str, ltype: str) -> str:
    if ltype:
        for k in ("BatchNorm", "Scale", "Convolution"):
            if k in ltype:
                return k
        return ltype
    return "BatchNorm" if name.startswith("bn") else "Scale" if name.startswith("scale") else "Convolution"


def convert_deeplab_resnet(layers: list[tuple[str, str, list[np.ndarray]]], source: str = "caffemodel") -> dict:
    """deeplab-pytorch's caffe-layout state_dict {key: float32 tensor} of the backbone layers."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, ltype, blobs in layers:
        module = torch_module_name(name)
        if module is None or not blobs:
            continue
        kind = _kind(name, ltype)
        if kind == "Convolution":
            out[f"{module}.conv.weight"] = torch.from_numpy(blobs[0].copy())
        elif kind == "BatchNorm":
            if len(blobs) < 3:
                raise CaffeModelError(f"{source}: BatchNorm layer {name} has {len(blobs)} blobs, expected 3")
            s = float(blobs[2].reshape(-1)[0])
            factor = 0.0 if s == 0 else 1.0 / s
            out[f"{module}.bn.running_mean"] = torch.from_numpy(blobs[0].reshape(-1) * factor)
            out[f"{module}.bn.running_var"] = torch.from_numpy(blobs[1].reshape(-1) * factor)
            out[f"{module}.bn.num_batches_tracked"] = torch.tensor(0)
        elif kind == "Scale":
            if len(blobs) < 2:
                raise CaffeModelError(f"{source}: Scale layer {name} has {len(blobs)} blobs, expected 2")
            out[f"{module}.bn.weight"] = torch.from_numpy(blobs[0].reshape(-1).copy())
            out[f"{module}.bn.bias"] = torch.from_numpy(blobs[1].reshape(-1).copy())
    if "layer1.conv1.conv.weight" not in out:
        raise CaffeModelError(f"{source}: no conv1 layer: not DeepLab's ResNet caffemodel")
    return out


def convert_caffemodel(src: str | Path, dst: str | Path) -> dict:
    """Read `src` (.caffemodel), write the converted state_dict to `dst` (torch.save, through a
    temporary name in the same folder); returns the state_dict."""
    import torch

    state = convert_deeplab_resnet(read_caffemodel(src), str(src))
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.converting")
    try:
        torch.save(state, tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return state
