"""One training scaffold for the five trainers (pretrain, train_cls, train_irn, train_amn,
train_seg): the step loop, the poly schedule, progress lines, and resumable checkpoints.

Each trainer keeps its own model, loss and data; it hands `fit` a `Loop`:
- `batches(epoch, skip)`: the batches of `epoch` from batch index `skip` on (a resumed
  run skips the first `skip` batches without loading them);
- `step(batch, step, epoch) -> row`: one optimiser step (lr, forward, backward, update);
  the returned dict is the step's log row (plain floats/ints; keys starting with "_" are
  bookkeeping for `end_epoch`, not CSV columns);
- `generators`: the torch.Generators that drive the data order (a DataLoader's generator);
- `end_epoch(epoch, rows)`: optional per-epoch hook (log lines, epoch statistics).

Resumable checkpoints ([OURS]: neither IRNet nor deeplab-pytorch resume). Every
`checkpoint.every` steps, every `checkpoint.minutes` minutes, and on SIGTERM / SIGUSR1
(SLURM sends one before the time limit with `--signal`), `fit` writes
`<out>.resume/step_<N>.pth` atomically: {"kind": "resume", "name", "fingerprint", "step",
"epoch_generators" (generator states at the start of the epoch in progress), "rng" (torch
CPU and CUDA, numpy, python `random`), "model", "optimizer", "rows"}. The data order is a
function of the generator state at the epoch start and the item augmentation a function of
(seed, epoch, index) (conta_core.data.torch_datasets), worker seeds derive from the loader's
generator, so a rerun that finds a checkpoint with the same fingerprint (trainer name, config
section, ids, seed, steps) continues at step N and ends with the weights of an uninterrupted
run, bit for bit on CPU. On a signal the job stops after the current step with exit status 1
and a message naming the checkpoint; a checkpoint whose fingerprint differs is stale (the
config changed) and is removed with a warning. After the final weights are written the
trainer calls `Resume.finish()`, which removes the folder unless `checkpoint.keep`.

A checkpoint at an epoch boundary is written once the epoch's iterator is exhausted (the
DataLoader's sampler draws from the generator until then), before the next epoch begins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import RandomSampler

from conta_core.infra.config import CHECKPOINT_DEFAULTS, checkpoint_settings, config_error
from conta_core.infra.fileio import load_torch, save_torch
from conta_core.infra.layout import resume_dir, resume_file, resume_steps
from conta_core.infra.progress import Progress

log = logging.getLogger("conta.training")

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")
KEEP_FILES = 2  # newest resume checkpoints kept while training (one spare if the newest is unreadable)


def poly_lr(base_lr: float, step: int, max_step: int, power: float) -> float:
    """Poly decay of every trainer: base_lr * (1 - step / max_step) ** power."""
    return base_lr * (1.0 - step / max_step) ** power


class ResumableRandomSampler(RandomSampler):
    """torch's RandomSampler (same draws from the same generator, so the same order as
    `DataLoader(shuffle=True, generator=g)`) whose next pass can start at index `skip`."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return islice(super().__iter__(), skip, None)


def shuffled_loader(dataset, batch_size: int, loader_kwargs: dict) -> tuple[torch.utils.data.DataLoader, Callable]:
    """A drop_last shuffled DataLoader and its `batches(epoch, skip)` for a `Loop`.

    loader_kwargs: conta_core.infra.training.loader_options (its generator drives the order).
    The dataset's set_epoch(epoch) is called before each pass when it has one.
    """
    gen = loader_kwargs["generator"]
    sampler = ResumableRandomSampler(dataset, generator=gen)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_kwargs
    )

    def batches(epoch: int, skip: int) -> Iterable:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler.skip = skip * batch_size
        return loader

    return loader, batches


def fingerprint(*parts: Any) -> str:
    """sha256 of the JSON of `parts` (what a resume checkpoint must match)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rng_state(cuda: bool) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(pystate), "gauss": gauss},
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Resume:
    """The resume folder `<out>.resume/` of one training output (conta_core.infra.layout.resume_dir);
    see the module docstring."""

    def __init__(self, out_path: str | Path, settings: dict | None, fp: str) -> None:
        self.out_path = Path(out_path)
        self.dir = resume_dir(out_path)
        self.settings = checkpoint_settings(settings)
        self.fingerprint = fp

    def load(self, optimizer: torch.optim.Optimizer | None = None) -> dict | None:
        """The newest readable checkpoint with this fingerprint, or None (stale ones removed);
        with `optimizer`, also stale when its parameter groups differ (optimizer_layout)."""
        for _, path in resume_steps(self.out_path):
            try:
                ckpt = load_torch(path)
            except ValueError as e:
                log.warning("%s: unreadable resume checkpoint, trying an older one (%s)", path, e)
                continue
            if not isinstance(ckpt, dict) or ckpt.get("kind") != "resume":
                log.warning("%s: not a resume checkpoint, ignored", path)
                continue
            if ckpt.get("fingerprint") != self.fingerprint:
                log.warning("%s: made with another config, ids or seed; removing %s and starting over", path, self.dir)
                shutil.rmtree(self.dir, ignore_errors=True)
                return None
            if optimizer is not None and optimizer_layout(ckpt["optimizer"]) != optimizer_layout(
                optimizer.state_dict()
            ):
                log.warning(
                    "%s: made by code with other optimizer parameter groups; removing %s and starting over",
                    path,
                    self.dir,
                )
                shutil.rmtree(self.dir, ignore_errors=True)
                return None
            return ckpt
        return None

    def save(self, ckpt: dict) -> Path:
        path = resume_file(self.out_path, ckpt["step"])
        save_torch(path, ckpt)
        for _, old in resume_steps(self.out_path)[KEEP_FILES:]:
            old.unlink(missing_ok=True)
        return path

    def finish(self) -> None:
        """Call after the final weights are written: remove the folder unless checkpoint.keep."""
        if not self.settings["keep"]:
            shutil.rmtree(self.dir, ignore_errors=True)


class Interrupted(SystemExit):
    """Raised after the checkpoint a stop signal asked for; exit status 1."""


@dataclass
class Loop:
    """What `fit` needs from a trainer (see the module docstring)."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    max_step: int
    steps_per_epoch: int
    batches: Callable[[int, int], Iterable]
    step: Callable[[Any, int, int], dict]
    resume: Resume | None = None
    generators: list[torch.Generator] = field(default_factory=list)
    end_epoch: Callable[[int, list[dict]], None] | None = None
    progress_keys: tuple[str, ...] = ("loss", "lr")


class _StopFlag:
    """Records SIGTERM / SIGUSR1 while installed (main thread only)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict = {}

    def __enter__(self) -> _StopFlag:
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, checkpoints on schedule only
                break
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name
        log.warning("%s received: stopping after the current step", self.signal)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def optimizer_layout(state: dict) -> list[tuple]:
    """(number of parameters, initial_lr, weight_decay) per parameter group of an optimizer
    state_dict: what a resume checkpoint's optimizer must share with the trainer's. The config
    fingerprint cannot see a change of the code's groups (the SEAM context's own groups,
    CHANGELOG), after which load_state_dict would fail on every rerun or, with as many groups,
    give the parameters another group's state."""
    return [(len(g["params"]), g.get("initial_lr"), g.get("weight_decay")) for g in state["param_groups"]]


def fit(loop: Loop) -> list[dict]:
    """Run loop.max_step steps (resuming from loop.resume when it holds a checkpoint); returns
    the log rows, one per step."""
    if loop.steps_per_epoch < 1 or loop.max_step < 1:
        raise ValueError(f"{loop.name}: nothing to train ({loop.max_step} steps, {loop.steps_per_epoch} per epoch)")
    cuda = any(p.is_cuda for p in loop.model.parameters())
    rows: list[dict] = []
    ckpt = loop.resume.load(loop.optimizer) if loop.resume is not None else None
    if ckpt is not None:
        loop.model.load_state_dict(ckpt["model"])
        loop.optimizer.load_state_dict(ckpt["optimizer"])
        for g, s in zip(loop.generators, ckpt["epoch_generators"], strict=True):
            g.set_state(s)
        _set_rng_state(ckpt["rng"])
        rows = list(ckpt["rows"])
        log.info("%s: resuming at step %d/%d from %s", loop.name, ckpt["step"], loop.max_step, loop.resume.dir)
    step = len(rows)
    settings = loop.resume.settings if loop.resume is not None else CHECKPOINT_DEFAULTS
    every, seconds = int(settings["every"]), 60.0 * float(settings["minutes"])
    last_save, pending = time.monotonic(), False
    progress = Progress(loop.name, loop.max_step, initial=step)

    def save(epoch_generators: list[torch.Tensor]) -> Path | None:
        nonlocal last_save
        if loop.resume is None:
            return None
        path = loop.resume.save(
            {
                "kind": "resume",
                "name": loop.name,
                "fingerprint": loop.resume.fingerprint,
                "step": step,
                "epoch_generators": epoch_generators,
                "rng": _rng_state(cuda),
                "model": {k: v.detach().cpu() for k, v in loop.model.state_dict().items()},
                "optimizer": loop.optimizer.state_dict(),
                "rows": rows,
            }
        )
        last_save = time.monotonic()
        log.info("%s: checkpoint at step %d/%d -> %s", loop.name, step, loop.max_step, path)
        return path

    def stop(path: Path | None) -> None:
        progress.close()
        where = f"; rerun the same command to resume from {path}" if path else ""
        raise Interrupted(f"{loop.name}: stopped by {flag.signal} at step {step}/{loop.max_step}{where}")

    with _StopFlag() as flag:
        while step < loop.max_step:
            epoch, skip = divmod(step, loop.steps_per_epoch)
            epoch_generators = [g.get_state() for g in loop.generators]
            if pending:
                pending = False
                path = save(epoch_generators)
                if flag.signal:
                    stop(path)
            for batch in loop.batches(epoch, skip):
                rows.append(loop.step(batch, step, epoch))
                step += 1
                progress.update(rows[-1], loop.progress_keys)
                if step >= loop.max_step:
                    break
                due = (
                    flag.signal
                    or (every and step % every == 0)
                    or (seconds and time.monotonic() - last_save >= seconds)
                )
                if due:
                    if step % loop.steps_per_epoch == 0:
                        pending = True  # after the epoch's iterator is exhausted
                    else:
                        path = save(epoch_generators)
                        if flag.signal:
                            stop(path)
            if loop.end_epoch is not None and (step % loop.steps_per_epoch == 0 or step >= loop.max_step):
                loop.end_epoch(epoch, rows)
    progress.close()
    return rows


def loader_options(num_workers: int, device: torch.device | str, seed: int) -> dict:
    """DataLoader keywords of the training loops: workers, pinned memory on CUDA, seeded generator.

    The generator (seeded with the run seed) drives the shuffling and the workers' base seed.
    No worker_init_fn is needed: the training datasets draw their augmentation from
    np.random.default_rng((seed, epoch, index)) per item (conta_core.data.torch_datasets,
    conta_core.steps.irn.IrnTrainSet), never from a global RNG, so a batch does not depend on the
    number of workers or on which worker loads it.
    """
    if num_workers < 0:
        raise config_error("loader_workers", f"expected an integer >= 0, got {num_workers}")
    return {
        "num_workers": int(num_workers),
        "pin_memory": torch.device(device).type == "cuda",
        "generator": torch.Generator().manual_seed(int(seed)),
    }
