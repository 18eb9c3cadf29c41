"""Helpers of the resume tests: stop a trainer by a signal after a given step, then rerun it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conta_core.infra import training
from conta_core.infra.fileio import load_torch
from conta_core.infra.layout import resume_dir


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int, sig: int = signal.SIGUSR1) -> None:
    """Make the process receive `sig` right after training step `step` (1-based) of `fit`."""

    class SignalAt(training.Progress):
        def update(self, row=None, keys=(), n=1):
            super().update(row, keys, n)
            if self.n == step:
                os.kill(os.getpid(), sig)

    monkeypatch.setattr(training, "Progress", SignalAt)


def stop_then_resume(
    monkeypatch: pytest.MonkeyPatch, train: Callable[[], None], out: Path, step: int, sig: int = signal.SIGUSR1
) -> None:
    """Run `train` until the signal after `step`, check its checkpoint, then run it again to the end."""
    with monkeypatch.context() as m:
        interrupt_at(m, step, sig)
        with pytest.raises(training.Interrupted, match=f"at step {step}/"):
            train()
    assert not out.exists()
    files = sorted(resume_dir(out).glob("step_*.pth"))
    assert files and files[-1].name == f"step_{step:08d}.pth"
    ckpt = load_torch(files[-1])
    assert ckpt["kind"] == "resume" and ckpt["step"] == step and len(ckpt["rows"]) == step
    train()
    assert out.exists() and not resume_dir(out).exists()


def assert_same_weights(a: dict, b: dict) -> None:
    """Bit-identical state_dicts."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=lambda m: f"{k}: {m}")
