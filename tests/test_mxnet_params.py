"""The MXNet .params reader and the ResNet-38 conversion, on files of that format written here."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conta_core.data import mxnet_params as mp

V2, V1 = mp.V2_MAGIC, mp.V1_MAGIC
FLAGS = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.int64): 6}


def nd_bytes(arr: np.ndarray, version: str = "v2") -> bytes:
    """One dense NDArray as MXNet's NDArray::Save writes it (v2 / v1 / legacy)."""
    shape = arr.shape
    if version == "v2":
        out = struct.pack("<Iii", V2, 0, len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    elif version == "v1":
        out = struct.pack("<II", V1, len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    else:
        out = struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    out += struct.pack("<iii", 1, 0, FLAGS[arr.dtype])  # cpu(0), dtype flag
    return out + np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()


def write_params(path: Path, named: dict[str, np.ndarray], version: str = "v2") -> Path:
    out = struct.pack("<QQQ", mp.LIST_MAGIC, 0, len(named))
    out += b"".join(nd_bytes(a, version) for a in named.values())
    out += struct.pack("<Q", len(named))
    for name in named:
        out += struct.pack("<Q", len(name.encode())) + name.encode()
    path.write_bytes(out)
    return path


def resnet38_mx_names() -> dict[str, str]:
    """MXNet names of model A1 -> SEAM torch keys, written from the block layout (b2..b7, bn7)."""
    blocks = [("2", "a"), ("2", "b1"), ("2", "b2"), ("3", "a"), ("3", "b1"), ("3", "b2"), ("4", "a")]
    blocks += [("4", f"b{i}") for i in range(1, 6)] + [("5", "a"), ("5", "b1"), ("5", "b2"), ("6", "a"), ("7", "a")]
    out = {"arg:conv1a_weight": "conv1a.weight"}
    bn = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
    for stage, sub in blocks:
        torch_block = f"b{stage}" if sub == "a" else f"b{stage}_{sub[1]}"
        branches = ["branch2a", "branch2b1"] + (["branch2b2"] if stage in "67" else [])
        if sub == "a":
            branches.append("branch1")
        for br in branches:
            out[f"arg:res{stage}{sub}_{br}_weight"] = f"{torch_block}.conv_{br}.weight"
            if br != "branch1":
                for mx, pt in bn.items():
                    pre = "aux" if mx.startswith("moving") else "arg"
                    out[f"{pre}:bn{stage}{sub}_{br}_{mx}"] = f"{torch_block}.bn_{br}.{pt}"
    for mx, pt in bn.items():
        out[f"{'aux' if mx.startswith('moving') else 'arg'}:bn7_{mx}"] = f"bn7.{pt}"
    out["arg:linear1000_weight"] = None
    out["arg:linear1000_bias"] = None
    return out


def test_names_match_the_resnet38_key_set(tmp_path) -> None:
    names = resnet38_mx_names()
    rng = np.random.default_rng(0)
    named = {
        k: rng.normal(size=(2, 3, 1, 1) if k.endswith("weight") and "res" in k else (3,)).astype(np.float32)
        for k in names
    }
    state = mp.convert_resnet38(write_params(tmp_path / "a1.params", named))
    assert set(state) == {v for v in names.values() if v is not None}
    for mx, pt in names.items():
        if pt is not None:
            np.testing.assert_array_equal(state[pt].numpy(), named[mx])
    try:  # when the project's ResNet-38 exists: the converted keys are exactly its non-counter keys
        from conta_core.models.resnet38 import ResNet38
    except ImportError:
        return
    expected = {k for k in ResNet38().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(state) == expected


@pytest.mark.parametrize("version", ["v2", "v1", "legacy"])
def test_versions_and_dtypes_round_trip(tmp_path, version) -> None:
    named = {
        "arg:conv1a_weight": np.arange(64 * 3 * 3 * 3, dtype=np.float32).reshape(64, 3, 3, 3),
        "aux:bn7_moving_var": np.linspace(0.5, 1.5, 7),
        "arg:res2a_branch1_weight": np.arange(6, dtype=np.int64).reshape(2, 3, 1, 1),
    }
    got = mp.read_params(write_params(tmp_path / "x.params", named, version))
    assert list(got) == ["conv1a_weight", "bn7_moving_var", "res2a_branch1_weight"]
    for k, v in named.items():
        np.testing.assert_array_equal(got[k.split(":")[1]], v)
        assert got[k.split(":")[1]].dtype == v.dtype


def test_converted_file_loads_with_weights_only(tmp_path) -> None:
    src = write_params(tmp_path / "w.params", {"arg:conv1a_weight": np.ones((4, 3, 3, 3), np.float32)})
    dst = mp.convert_file(src, tmp_path / "out" / "resnet38.pth")
    state = torch.load(dst, weights_only=True)
    assert list(state) == ["conv1a.weight"] and state["conv1a.weight"].shape == (4, 3, 3, 3)


def test_cli_convert(tmp_path) -> None:
    from conta_core.cli import main

    src = write_params(tmp_path / "w.params", {"aux:bn7_moving_mean": np.zeros(5, np.float32)})
    assert main(["convert-resnet38", str(src), str(tmp_path / "o.pth")]) == 0
    assert main(["convert-resnet38", str(tmp_path / "o.pth"), str(tmp_path / "p.pth")]) == 1


@pytest.mark.parametrize("kind", ["torch", "random", "truncated", "empty"])
def test_other_formats_name_the_file(tmp_path, kind) -> None:
    path = tmp_path / f"{kind}.params"
    if kind == "torch":
        torch.save({"a": torch.zeros(2)}, path)
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(4096))
    elif kind == "truncated":
        write_params(path, {"arg:conv1a_weight": np.ones((8, 3, 3, 3), np.float32)})
        path.write_bytes(path.read_bytes()[:-40])
    else:
        path.write_bytes(b"")
    with pytest.raises(mp.ParamsFormatError, match=str(path).replace(".", r"\.")):
        mp.convert_resnet38(path)
