"""Read MXNet's `.params` container without MXNet, and convert ResNet-38 ("model A1") weights.

The ImageNet weights of ResNet-38 (Wu, Shen, van den Hengel, *Wider or Deeper*; file
`ilsvrc-cls_rna-a1_cls1000_ep-0001.params` of https://github.com/itijyou/ademxapp) exist only as
an MXNet NDArray list. SEAM (https://github.com/YudeWang/SEAM, network/resnet38d.py
`convert_mxnet_to_torch`) reads it with `mxnet.nd.load`; this module reads the same bytes
directly (MXNet's src/ndarray/ndarray.cc, `NDArray::Save` / `NDArray::Load` and the list
format of `MXNDArraySave`).

Container (all little-endian):

    uint64 magic 0x112 (kMXAPINDArrayListMagic), uint64 reserved
    uint64 n, then n NDArrays
    uint64 m, then m names: uint64 length + bytes ("arg:conv1a_weight", "aux:bn7_moving_mean")

One NDArray, by the uint32 it starts with:
- V3 0xF993FACA / V2 0xF993FAC9: int32 storage type (only 0 = dense is supported), shape
  (uint32 ndim for V2, int32 for V3; int64 dims), then if ndim > 0: context (int32 dev_type,
  int32 dev_id), int32 dtype flag, raw data.
- V1 0xF993FAC8: shape (uint32 ndim, int64 dims), context, dtype flag, data.
- legacy (no magic; the uint32 is ndim): uint32 dims, context, dtype flag, data.
dtype flags: 0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64.
Sparse arrays (storage type 1, 2) raise a ValueError that names the file.
Supported: dense V2 (the format of MXNet >= 1.0) and V1 (0xF993FAC8 / 0xF993FAC9 as in
apache/mxnet src/ndarray/ndarray.cc); V3 (numpy-shape mode) and the legacy pre-V1 layout are read
as described above, tested only on files that tests/test_mxnet_params.py writes (no real file of
those versions was at hand). No checksum is checked here (ademxapp md5: ff21f45d6bf03284100dcbec571edfad).

Names: the "arg:" / "aux:" prefix is dropped (mxnet.nd.load keeps it; SEAM's converter splits
on "_" and only uses the token shapes, which the prefix does not change). Shapes: the names map
to SEAM's torch keys exactly as `convert_mxnet_to_torch` does:
    conv1a_weight -> conv1a.weight; linear1000_* dropped;
    res{N}{x}_branch{B}_weight -> b{N}[_{x}].conv_branch{B}.weight ("a" suffix: b{N});
    bn{N}{x}_branch{B}_{gamma|beta|moving_mean|moving_var} -> b..bn_branch{B}.{weight|bias|running_mean|running_var};
    any other (bn7_*) -> bn7.{...}.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
BN_NAMES = {"beta": "bias", "gamma": "weight", "mean": "running_mean", "var": "running_var"}


class ParamsFormatError(ValueError):
    """The file is not an MXNet NDArray list this reader supports."""


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ParamsFormatError(
                f"{self.path}: truncated MXNet .params file (wanted {n} bytes at offset {self.pos})"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values if len(values) > 1 else values[0]


def _read_ndarray(r: _Reader) -> np.ndarray | None:
    head = r.unpack("I")
    if head in (V2_MAGIC, V3_MAGIC):
        stype = r.unpack("i")
        if stype != 0:
            raise ParamsFormatError(f"{r.path}: sparse NDArray (storage type {stype}) not supported")
        ndim = r.unpack("I" if head == V2_MAGIC else "i")
        dims = r.unpack(f"{max(ndim, 0)}q") if ndim > 0 else ()
    elif head == V1_MAGIC:
        ndim = r.unpack("I")
        dims = r.unpack(f"{ndim}q") if ndim > 0 else ()
    else:  # legacy: the uint32 is ndim, uint32 dims
        ndim = head
        if ndim > 32:
            raise ParamsFormatError(f"{r.path}: not an MXNet NDArray (bad magic/ndim {head:#x})")
        dims = r.unpack(f"{ndim}I") if ndim > 0 else ()
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if ndim <= 0:
        return None
    if any(d < 0 for d in dims):
        raise ParamsFormatError(f"{r.path}: negative dimension in shape {dims}")
    r.unpack("ii")  # context: dev_type, dev_id
    flag = r.unpack("i")
    if flag not in DTYPES:
        raise ParamsFormatError(f"{r.path}: unknown MXNet dtype flag {flag}")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(dims))
    return np.frombuffer(r.take(count * dtype.itemsize), dtype=dtype).reshape(dims).copy()


def read_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All named arrays of an MXNet .params file, names without the arg:/aux: prefix."""
    path = str(path)
    data = Path(path).read_bytes()
    r = _Reader(data, path)
    if len(data) < 16 or r.unpack("Q") != LIST_MAGIC:
        raise ParamsFormatError(
            f"{path}: not an MXNet .params file (no NDArray-list magic 0x112; a torch or other file?)"
        )
    r.unpack("Q")  # reserved
    n = r.unpack("Q")
    if n > len(data):
        raise ParamsFormatError(f"{path}: implausible array count {n}")
    arrays = [_read_ndarray(r) for _ in range(n)]
    m = r.unpack("Q")
    if m != n:
        raise ParamsFormatError(f"{path}: {n} arrays but {m} names")
    names = [r.take(r.unpack("Q")).decode("utf-8", errors="strict") for _ in range(m)]
    if r.pos != len(data):
        raise ParamsFormatError(f"{path}: {len(data) - r.pos} trailing bytes after the name list")
    out = {}
    for name, arr in zip(names, arrays):
        key = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
        if arr is not None:
            out[key] = arr
    return out


def resnet38_torch_name(mx_name: str) -> str | None:
    """SEAM's torch key for an MXNet ResNet-38 parameter name (None: dropped, the 1000-way classifier)."""
    toks = mx_name.split("_")
    if "conv1a" in toks[0]:
        return "conv1a.weight"
    if "linear1000" in toks[0]:
        return None
    if len(toks) > 1 and "branch" in toks[1]:
        block = "b" + toks[0][-3] + "_" + toks[0][-1] if toks[0][-1] != "a" else "b" + toks[0][-2]
        if "res" in toks[0]:
            return f"{block}.conv_{toks[1]}.weight"
        return f"{block}.bn_{toks[1]}.{BN_NAMES[toks[-1]]}"
    return "bn7." + BN_NAMES[toks[-1]]


def convert_resnet38(src: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ResNet-38 state_dict (SEAM's key names) of an MXNet .params file."""
    out = {}
    for name, arr in read_params(src).items():
        try:
            key = resnet38_torch_name(name)
        except (KeyError, IndexError) as exc:
            raise ParamsFormatError(f"{src}: parameter {name!r} is not a ResNet-38 (model A1) name") from exc
        if key is not None:
            out[key] = torch.from_numpy(arr)
    return out


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert `src` (.params) into a torch state_dict file `dst` (plain tensors, written atomically)."""
    from conta_core.infra.fileio import atomic_path

    state = convert_resnet38(src)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(state, tmp)
    return dst
