"""Content digests of a finished run: what "the results did not change" means, checkable.

`run_digests(run_dir)` maps every result file of results/<run> (relative path) to a sha256
of its CONTENT, read the way the pipeline reads it, so that two runs are equal exactly
when every array, label map, table and weight is equal:

| file | what is hashed |
| --- | --- |
| .png / .jpg | the decoded pixels (mode, shape, uint8 values), not the encoder's bytes |
| .npz / .npy | every array (name, dtype, shape, bytes), read with allow_pickle=False |
| .h5 | every dataset (name, dtype, shape, bytes); attributes are left out |
| .pth | kind, every state_dict tensor, and numeric metadata (seed, final_loss, ...); the stored config is left out (it records the results folder) |
| .json | the parsed value, with the run folder's absolute path replaced by `<RUN>` |
| .csv / .txt | the bytes, with the run folder's absolute path replaced by `<RUN>` |

Left out: logs/, benchmarks/ (wall times), resume folders, Snakemake's timestamp files and
figures (.pdf/.svg embed creation dates). `machine_fingerprint()` names what float results
depend on: library versions and the CPU's instruction-set flags; runs on machines with a
different fingerprint may differ in float rounding, so equal digests are only expected on
the same fingerprint (docs/results.md, "What varies across machines").
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

SKIP_DIRS = ("logs", "benchmarks")
SKIP_SUFFIXES = (".log", ".snakemake_timestamp", ".tsv", ".pdf", ".svg", ".tmp")
RUN_PLACEHOLDER = "<RUN>"


def _array_bytes(h: Any, name: str, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())


def _relativise(obj: Any, root: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(root, RUN_PLACEHOLDER)
    if isinstance(obj, dict):
        return {k: _relativise(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relativise(v, root) for v in obj]
    return obj


def file_digest(path: Path, root: str) -> str | None:
    """sha256 hex of one file's content (table above); None for a file that is left out.
    root: the run folder's absolute path, replaced by RUN_PLACEHOLDER in JSON and text."""
    h = hashlib.sha256()
    suffix = path.suffix.lower()
    if suffix in SKIP_SUFFIXES:
        return None
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as im:
            h.update(im.mode.encode())
            _array_bytes(h, "pixels", np.asarray(im))
    elif suffix == ".npy":
        try:
            _array_bytes(h, "array", np.load(path, allow_pickle=False))
        except ValueError as e:
            raise ValueError(f"{path}: {e} (a pickled IRNet-style CAM: convert it with `conta import-cams`)") from e
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for name in sorted(z.files):
                _array_bytes(h, name, z[name])
    elif suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as f:
            names: list[str] = []
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            for name in sorted(names):
                _array_bytes(h, name, np.asarray(f[name][()]))
    elif suffix == ".pth":
        from conta_core.infra.fileio import load_torch

        ckpt = load_torch(path)
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
        h.update(str(ckpt.get("kind") if isinstance(ckpt, dict) else None).encode())
        for name in sorted(state):
            v = state[name]
            if hasattr(v, "numpy"):
                _array_bytes(h, name, v.detach().cpu().numpy())
        if isinstance(ckpt, dict):
            meta = {k: v for k, v in ckpt.items() if isinstance(v, (int, float, bool)) and k != "state_dict"}
            h.update(json.dumps(meta, sort_keys=True).encode())
    elif suffix == ".json":
        value = _relativise(json.loads(path.read_text()), root)
        h.update(json.dumps(value, sort_keys=True).encode())
    elif suffix in (".csv", ".txt"):
        h.update(path.read_text().replace(root, RUN_PLACEHOLDER).encode())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def run_digests(run_dir: str | Path) -> dict[str, str]:
    """{relative path: digest} of every result file under run_dir (results/<run>)."""
    run_dir = Path(run_dir)
    root = str(run_dir.resolve())
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in SKIP_DIRS or any(p.endswith(".resume") for p in rel.parts):
            continue
        digest = file_digest(path, root)
        if digest is not None:
            out[rel.as_posix()] = digest
    return out


def cpuinfo_field(name: str) -> str:
    """The first `name` line of /proc/cpuinfo ("model name", "flags"); "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_fingerprint() -> dict[str, str]:
    """What float results depend on: library versions and the CPU's instruction-set flags."""
    import PIL
    import scipy
    import torch

    flags = cpuinfo_field("flags")
    return {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pillow": PIL.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16],
    }


def machine_label() -> str:
    """machine_fingerprint in one line, with the CPU's model name: "x86_64 AMD EPYC, torch
    2.14.1 numpy ... , AVX512, flags 1a2b3c4d5e6f7a8b" (a study's measures files, `machine`)."""
    f = machine_fingerprint()
    cpu = cpuinfo_field("model name") or platform.processor() or "cpu unknown"
    libs = " ".join(f"{k} {f[k]}" for k in ("torch", "numpy", "scipy", "pillow"))
    return f"{f['machine']} {cpu}, {libs}, {f['cpu_capability']}, flags {f['cpu_flags_sha256']}"


def compare(a: dict[str, str], b: dict[str, str]) -> dict[str, list[str]]:
    """Files only in a, only in b, and in both with different content."""
    return {
        "only_a": sorted(set(a) - set(b)),
        "only_b": sorted(set(b) - set(a)),
        "differ": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
    }
