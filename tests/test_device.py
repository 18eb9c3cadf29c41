"""Device selection and the per-card exclusive claim used by concurrent local GPU jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from conta_core.device import claim_device, claim_free_index

CLAIM = textwrap.dedent(
    """
    import sys, time
    from conta_core.device import claim_free_index
    try:
        i = claim_free_index(2, wait_s=0.5, poll_s=0.1)
    except RuntimeError as e:
        print("busy", flush=True); sys.exit(0)
    print(i, flush=True)
    time.sleep(3)
    """
)


def test_cpu_and_auto_without_cuda():
    assert claim_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert claim_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            claim_device("cuda")


def test_bad_device_string():
    with pytest.raises(ValueError, match="device"):
        claim_device("gpu0")


def test_concurrent_jobs_claim_different_cards(tmp_path, monkeypatch):
    """Three processes compete for two cards: two distinct cards, the third is told all are busy."""
    env = {"CONTA_GPU_LOCK_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    import os

    env = dict(os.environ, **env)
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM], stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    outs = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
    assert outs == ["0", "1", "busy"]


def test_lock_is_released_when_process_exits(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTA_GPU_LOCK_DIR", str(tmp_path))
    import os

    env = dict(os.environ)
    first = subprocess.run([sys.executable, "-c", CLAIM.replace("time.sleep(3)", "")], capture_output=True, text=True, env=env)
    assert first.stdout.strip() == "0"
    assert claim_free_index(2, wait_s=0) == 0  # the exited process no longer holds card 0
