"""Device selection and the per-card exclusive claim used by concurrent local GPU jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from conta_core.infra.device import claim_device, claim_free_index

CLAIM = textwrap.dedent(
    """
    import sys, time
    from conta_core.infra.device import claim_free_index
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
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIM], stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)
    ]
    outs = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
    assert outs == ["0", "1", "busy"]


def test_lock_is_released_when_process_exits(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTA_GPU_LOCK_DIR", str(tmp_path))
    import os

    env = dict(os.environ)
    first = subprocess.run(
        [sys.executable, "-c", CLAIM.replace("time.sleep(3)", "")], capture_output=True, text=True, env=env
    )
    assert first.stdout.strip() == "0"
    assert claim_free_index(2, wait_s=0) == 0  # the exited process no longer holds card 0


def _resnet18_cam_net():
    from conta_core.models.classifier import CAMNet

    torch.manual_seed(0)
    net = CAMNet(3, backbone="resnet18", frozen_stages=0)
    for m in net.modules():  # non-trivial BatchNorm statistics, so that folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def test_fold_batchnorm_keeps_the_function_and_removes_every_bn():
    from conta_core.infra.device import fold_batchnorm

    net = _resnet18_cam_net()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ref = net.cam_maps(x)
        import copy

        folded = fold_batchnorm(copy.deepcopy(net))
        got = folded.cam_maps(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_large_cpu_inputs_use_the_folded_channels_last_copy(monkeypatch):
    import numpy as np

    from conta_core.infra.device import CPU_FAST_MIN_PIXELS, inference_model
    from conta_core.steps.cam import compute_cams_batch

    net = _resnet18_cam_net()
    side = int(CPU_FAST_MIN_PIXELS**0.5)
    big, small = torch.zeros(2, 3, side, side), torch.zeros(2, 3, side // 2, side // 2)
    fast, batch = inference_model(net, big)
    assert fast is not net and batch.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert inference_model(net, big)[0] is fast  # made once per model
    assert inference_model(net, small) == (net, small)  # small inputs: the model as loaded
    net.train()
    assert inference_model(net, big)[0] is net  # never in train mode (BN would use batch statistics)
    net.eval()
    with torch.no_grad():
        net.classifier.weight.mul_(2.0)  # a weight change (optimizer step, load) remakes the copy
    assert inference_model(net, big)[0] is not fast
    monkeypatch.setenv("CONTA_FAST_CPU", "0")
    assert inference_model(net, big)[0] is net

    img = np.random.default_rng(0).integers(0, 256, (side, side + 16, 3), dtype=np.uint8)
    keys = np.array([0, 2])
    exact = compute_cams_batch(net, [img], [keys], [1.0], True, "cpu")
    monkeypatch.setenv("CONTA_FAST_CPU", "1")
    quick = compute_cams_batch(net, [img], [keys], [1.0], True, "cpu")
    for (c0, h0), (c1, h1) in zip(exact, quick):
        assert np.abs(c0 - c1).max() < 1e-5 and np.abs(h0 - h1).max() < 1e-5
