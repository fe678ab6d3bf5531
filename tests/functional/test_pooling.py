"""nnx/functional/pooling.py: max, average and adaptive average pooling, gradchecks (float64)
and PyTorch parity on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import layer_parity as parity
from helpers import rand

MAXPOOL_GRID = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=2, dilation=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
]


@pytest.mark.parametrize("cfg", MAXPOOL_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("batch", [1, 2])
def test_maxpool2d_parity(backend, torch, cfg, batch):
    parity(torch, nnx.MaxPool2d(**cfg), torch.nn.MaxPool2d(**cfg), rand(batch, 3, 7, 6, seed=batch))


def test_maxpool2d_ties_go_to_first_max(backend, torch):
    x = nnx.asarray(np.ones((1, 1, 4, 4)), dtype="float64")
    parity(torch, nnx.MaxPool2d(2), torch.nn.MaxPool2d(2), x)
    parity(torch, nnx.MaxPool2d(3, stride=1, padding=1), torch.nn.MaxPool2d(3, stride=1, padding=1), x)


def test_maxpool2d_gradcheck(backend):
    # distinct values so the max is unique and the function is differentiable at the probe point
    x = nnx.asarray(np.random.default_rng(0).permutation(60).reshape(1, 3, 5, 4) / 7.0, dtype="float64")
    assert nnx.gradcheck(nnx.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), x)
    assert nnx.gradcheck(nnx.MaxPool2d(2), x)


AVGPOOL_GRID = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, divisor_override=3),
]


@pytest.mark.parametrize("cfg", AVGPOOL_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_avgpool2d_parity(backend, torch, cfg):
    parity(torch, nnx.AvgPool2d(**cfg), torch.nn.AvgPool2d(**cfg), rand(2, 3, 7, 6))


def test_avgpool2d_gradcheck(backend):
    assert nnx.gradcheck(nnx.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                         rand(1, 2, 5, 4))


@pytest.mark.parametrize("size", [1, (2, 3), 3, (None, 2), (4, 1)])
def test_adaptive_avgpool2d_parity(backend, torch, size):
    parity(torch, nnx.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), rand(2, 3, 7, 6))


def test_adaptive_avgpool2d_gradcheck(backend):
    assert nnx.gradcheck(nnx.AdaptiveAvgPool2d((2, 3)), rand(1, 2, 5, 4))
    assert nnx.gradcheck(nnx.AdaptiveAvgPool2d(1), rand(2, 2, 3, 3))
