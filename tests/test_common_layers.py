"""Layers shared by the families (projects/common/layers.py) against PyTorch's own."""
import math

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from projects.common.layers import Dropout, softmax_last_dim, use_fast_dropout_


@pytest.mark.parametrize('p', [0.1, 0.5])
def test_dropout_zeroes_with_probability_p_and_scales_the_rest(p):
    """Against nn.Dropout's definition: each element zero with probability p (within 5 standard
    deviations over 1M elements), the others x / (1 - p) exactly, gradient the same mask."""
    torch.manual_seed(0)
    x = torch.rand(1000, 1000).add_(0.5).requires_grad_()  # no zeros of its own
    y = Dropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / x.numel())
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p), rtol=1e-6, atol=0)


def test_dropout_is_the_identity_in_eval_and_at_zero():
    x = torch.randn(4, 5)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_fast_dropout_replaces_every_dropout_and_keeps_the_state_dict():
    ffn = FFN(embed_dims=8, feedforward_channels=16, ffn_drop=0.2)
    keys = list(ffn.state_dict())
    assert any(type(m) is nn.Dropout for m in ffn.modules())
    use_fast_dropout_(ffn)
    assert not any(type(m) is nn.Dropout for m in ffn.modules())
    assert [m.p for m in ffn.modules() if isinstance(m, Dropout)] == [0.2, 0.2]
    assert list(ffn.state_dict()) == keys


@pytest.mark.parametrize('shape', [(3, 5, 4), (2, 7, 8), (4, 16), (6, 1)])
def test_softmax_last_dim_matches_softmax_and_its_gradient(shape):
    """Forward and backward against torch's softmax (the short-row path below 16, torch's own
    from 16), and a float64 gradcheck of the short-row path."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.float64)
    expected, = torch.autograd.grad(x.softmax(-1), x, grad)
    output = softmax_last_dim(x)
    actual, = torch.autograd.grad(output, x, grad)
    assert torch.allclose(output, x.softmax(-1), atol=1e-12)
    assert torch.allclose(actual, expected, atol=1e-12)
    assert torch.autograd.gradcheck(softmax_last_dim, (x, ))


def test_softmax_last_dim_keeps_non_finite_values_visible():
    x = torch.tensor([[0.0, float('nan'), 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    output = softmax_last_dim(x)
    assert torch.isnan(output[0]).all() and torch.isfinite(output[1]).all()
    x = torch.tensor([[float('inf'), 1.0, 2.0, 3.0]])  # torch gives NaN here as well
    assert torch.equal(torch.isnan(softmax_last_dim(x)), torch.isnan(x.softmax(-1)))
