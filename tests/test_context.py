"""Tests of conta_core.models.context: X_m encoding and the Eq. 3 attention module."""

import math

import numpy as np
import pytest
import torch

from conta_core.models.context import ContextModule, encode_xm

torch.set_num_threads(1)


def test_encode_xm_foreground_and_label_index():
    label = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    fg = encode_xm(label, "foreground", num_fg=4, size=(2, 2))
    idx = encode_xm(label, "label_index", num_fg=4, size=(2, 2))
    assert fg.dtype == np.float32 and idx.dtype == np.float32
    np.testing.assert_array_equal(fg, [[0, 1], [1, 0]])
    np.testing.assert_allclose(idx, [[0, 0.25], [0.5, 0]])


def test_encode_xm_nearest_resize():
    label = np.zeros((4, 4), dtype=np.uint8)
    label[1, 1] = 3  # sampled by nearest (rows/cols 1 and 3 of a 4 -> 2 resize)
    label[0, 0] = 2  # not sampled
    out = encode_xm(label, "foreground", num_fg=3, size=(2, 2))
    np.testing.assert_array_equal(out, [[1, 0], [0, 0]])


def test_encode_xm_bad_encoding():
    with pytest.raises(ValueError, match="xm_encoding"):
        encode_xm(np.zeros((2, 2), np.uint8), "rgb", 3, (2, 2))


def _module(n=3, size=(4, 5), seed=0):
    torch.manual_seed(seed)
    return ContextModule(n, size)


def test_context_shapes_and_alpha_sums_to_one():
    mod = _module()
    xm = torch.rand(2, 4, 5)
    conf = torch.rand(3, 4, 5)
    m, alpha = mod(xm, conf)
    assert m.shape == (2, 1, 4, 5) and alpha.shape == (2, 3)
    torch.testing.assert_close(alpha.sum(1), torch.ones(2))
    assert mod.w1.bias is None and mod.w2.bias is None


def test_alpha_changes_with_xm():
    mod = _module()
    conf = torch.rand(3, 4, 5)
    _, a1 = mod(torch.zeros(1, 4, 5), conf)
    _, a2 = mod(torch.ones(1, 4, 5), conf)
    assert not torch.allclose(a1, a2)
    torch.testing.assert_close(a1, torch.full((1, 3), 1 / 3))  # zero query -> uniform attention


def test_m_equals_hand_computed_sum():
    mod = ContextModule(2, (1, 2))
    with torch.no_grad():
        mod.w1.weight.copy_(torch.eye(2))
        mod.w2.weight.copy_(torch.eye(2))
    conf = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # c_1 = [1, 0], c_2 = [0, 1]
    xm = torch.tensor([[[1.0, 0.0]]])
    m, alpha = mod(xm, conf)
    # <W1 x, W2 c_1> = 1, <W1 x, W2 c_2> = 0, scaled by 1/sqrt(2)
    e = math.exp(1 / math.sqrt(2))
    a = [e / (e + 1), 1 / (e + 1)]
    torch.testing.assert_close(alpha, torch.tensor([a]))
    expected = torch.tensor([[[[a[0] / 2, a[1] / 2]]]])  # sum_i alpha_i c_i / n
    torch.testing.assert_close(m, expected)


def test_bias_is_zero_initialised_and_shapes_checked():
    mod = ContextModule(3, (2, 2), bias=True)
    assert torch.count_nonzero(mod.w1.bias) == 0
    with pytest.raises(ValueError, match="confounder"):
        mod(torch.rand(1, 2, 2), torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="xm"):
        mod(torch.rand(1, 3, 2), torch.rand(3, 2, 2))
