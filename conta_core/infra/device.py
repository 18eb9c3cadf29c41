"""Device selection, GPU claiming for concurrent local jobs, seeding and threads.

Local multi-GPU: Snakemake limits concurrent GPU jobs through `--resources gpu=N` but
does not say which card a job gets. `claim_device` takes an exclusive, non-blocking
`flock` on one lock file per visible CUDA device and keeps it for the life of the
process, so N concurrent jobs land on N different cards. Under SLURM each job sees
exactly the card(s) SLURM gave it (CUDA_VISIBLE_DEVICES), and the same code claims one.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import os
import random
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np
import torch

_HELD_LOCKS: list = []  # keep lock file objects alive for the process lifetime


def lock_dir() -> Path:
    """Folder of the per-device lock files (env CONTA_GPU_LOCK_DIR overrides)."""
    d = Path(os.environ.get("CONTA_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "conta_gpu_locks"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _try_lock(index: int) -> bool:
    key = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "_")
    f = open(lock_dir() / f"gpu_{key}_{index}.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    _HELD_LOCKS.append(f)
    return True


def claim_free_index(n: int, wait_s: float = 3600.0, poll_s: float = 2.0) -> int:
    """Lock and return the first free index in 0..n-1 (held until the process exits).

    Waits up to `wait_s` seconds while all `n` are held by other processes.
    """
    if n < 1:
        raise RuntimeError("device: no CUDA devices visible")
    deadline = time.monotonic() + wait_s
    while True:
        for i in range(n):
            if _try_lock(i):
                return i
        if time.monotonic() >= deadline:
            raise RuntimeError(f"device: no free CUDA device among {n} after {wait_s:.0f}s")
        time.sleep(poll_s)


def claim_device(requested: str = "auto", wait_s: float = 3600.0, poll_s: float = 2.0) -> torch.device:
    """Resolve `requested` ("auto", "cpu", "cuda", "cuda:K") to a torch.device.

    "auto" and "cuda" claim the first free visible CUDA card (exclusive lock), waiting up
    to `wait_s` seconds if all are busy; "auto" falls back to CPU when CUDA is absent.
    "cuda:K" uses card K without locking (the user chose it).
    """
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:K, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device: {requested!r} requested but CUDA is not available")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    i = claim_free_index(torch.cuda.device_count(), wait_s, poll_s)
    torch.cuda.set_device(i)
    return torch.device(f"cuda:{i}")


def _deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True) without its import of
    torch._inductor.config, which pulls in torch._dynamo: about 1 s in every process, paid by
    every Snakemake job. [OURS] The inductor flag only affects torch.compile, which this
    project does not use; the kernel flag is set through the same call the public function
    makes (torch 2.14), and the public function is used where that call is absent or differs."""
    try:
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    except (AttributeError, TypeError):  # another torch: the public function
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; make CPU kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    _deterministic_algorithms()
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.benchmark = False


def set_threads(n: int | None) -> None:
    """Follow Snakemake's `threads:` for intra-op parallelism."""
    if n and n > 0:
        torch.set_num_threads(int(n))


AUTOCAST_ENV = "CONTA_AUTOCAST"  # "0": fp32 inference on CUDA too (exact; the GPU suite's baseline)


def inference_autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Mixed precision for inference: autocast to bf16 (fp16 on cards without bf16) on CUDA,
    a no-op elsewhere, so the CPU path stays fp32 and exact. $CONTA_AUTOCAST=0 turns it off."""
    if torch.device(device).type != "cuda" or os.environ.get(AUTOCAST_ENV, "1") == "0":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


# --- CPU inference layout for large inputs [OURS] ---------------------------------------------
# Measured on the 2-core benchmark CPU (benchmarks/RESULTS.md, "CPU inference levers"), ResNet-50
# CAM network, IRNet's 4 scales + flip, eager NCHW = 1.00x: BatchNorm folded into the convolutions
# AND channels_last give 1.93x for 375 x 500 images, 1.29x for 256 px, 1.25x for 192 px;
# channels_last alone is slower for 96 px images (0.86x). The switch is per input (one scale of
# one batch): from 256 x 256 px on, the size of VOC/COCO images and of IRNet's 512 px boundary
# input. Below it the model runs as loaded, so the 96 px generated data (largest CAM input
# 192 x 192) is computed exactly as before. Outputs differ from eager by float rounding only
# (max abs 4e-6 on [0, 1] CAMs).
CPU_FAST_MIN_PIXELS = 256 * 256  # per-input H x W from which the CPU uses the folded channels_last copy
FAST_CPU_ENV = "CONTA_FAST_CPU"  # "0": always the model as loaded (eager NCHW), e.g. to compare
_FAST_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (weights version, folded copy)


def fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval BatchNorm2d that directly follows a Conv2d into that convolution, in place:
    conv1/bn1 .. conv3/bn3 of torchvision Bottlenecks and BasicBlocks and consecutive
    (Conv2d, BatchNorm2d) pairs of Sequentials (stems, downsample branches). For inference only."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batchnorm(child)
    if isinstance(module, torch.nn.Sequential):
        keys = list(module._modules)
        for a, b in zip(keys, keys[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                module._modules[a], module._modules[b] = fuse_conv_bn_eval(conv, bn), torch.nn.Identity()
    for i in (1, 2, 3):
        conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
            setattr(module, f"conv{i}", fuse_conv_bn_eval(conv, bn))
            setattr(module, f"bn{i}", torch.nn.Identity())
    return module


def inference_model(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """(network, input) for one inference batch float32[B, 3, H, W].

    CUDA: the model as given, the batch in channels_last (autocast: inference_autocast).
    CPU, H x W >= CPU_FAST_MIN_PIXELS: a copy of the model with BatchNorm folded, in
    channels_last, made once per model and kept while the model lives; the batch in channels_last.
    CPU, smaller inputs (or $CONTA_FAST_CPU=0): the model and the batch as given.
    """
    if batch.device.type == "cuda":
        return model, batch.contiguous(memory_format=torch.channels_last)
    small = batch.shape[-2] * batch.shape[-1] < CPU_FAST_MIN_PIXELS
    if small or model.training or os.environ.get(FAST_CPU_ENV, "1") == "0":
        return model, batch
    # the copy is remade when any parameter or buffer was modified since (optimizer steps, loads)
    version = tuple(t._version for t in (*model.parameters(), *model.buffers()))
    cached = _FAST_COPIES.get(model)
    if cached is None or cached[0] != version:
        fast = fold_batchnorm(copy.deepcopy(model).eval()).to(memory_format=torch.channels_last)
        cached = _FAST_COPIES[model] = (version, fast)
    return cached[1], batch.contiguous(memory_format=torch.channels_last)
