"""MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, AdaptiveMaxPool2d, MaxPool3d, AvgPool3d
(nnx/layers/pooling.py, nnx/functional/pooling_extra.py): outputs and input gradients against torch
(ties included: the gradient goes to the first maximum), float64 gradcheck, errors; on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, rand


def _parity(torch, layer, tlayer, x, tol=1e-12):
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx)
    y = layer(x)
    assert_close(y, ty, rtol=tol, atol=tol, what="output")
    dy = np.random.default_rng(3).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    dx = layer.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=tol, atol=tol, what="input gradient")
    assert repr(layer) == repr(tlayer) or type(layer).__name__ in ("MaxPool3d", "AvgPool3d", "AvgPool1d")


def _ties(*shape, seed=0):
    """Small integer values: many equal maxima in a window."""
    return nnx.asarray(np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64), dtype="float64")


MAX1D = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, dilation=2),
         dict(kernel_size=4, stride=3, padding=2, ceil_mode=True), dict(kernel_size=1)]


@pytest.mark.parametrize("cfg", MAX1D, ids=str)
def test_max_pool1d(backend, torch, cfg):
    for x in (rand(2, 3, 11, seed=1), _ties(2, 3, 11)):
        _parity(torch, nnx.MaxPool1d(**cfg), torch.nn.MaxPool1d(**cfg), x)
    assert nnx.gradcheck(nnx.MaxPool1d(**cfg), rand(2, 2, 9, seed=2))


AVG1D = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
         dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
         dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
         dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False)]


@pytest.mark.parametrize("cfg", AVG1D, ids=str)
def test_avg_pool1d(backend, torch, cfg):
    _parity(torch, nnx.AvgPool1d(**cfg), torch.nn.AvgPool1d(**cfg), rand(2, 3, 11, seed=1))
    assert nnx.gradcheck(nnx.AvgPool1d(**cfg), rand(2, 2, 9, seed=2))


@pytest.mark.parametrize("size,length", [(1, 7), (3, 7), (4, 9), (5, 5), ((2,), 6)])
def test_adaptive_avg_pool1d(backend, torch, size, length):
    _parity(torch, nnx.AdaptiveAvgPool1d(size), torch.nn.AdaptiveAvgPool1d(size), rand(2, 3, length, seed=1))
    assert nnx.gradcheck(nnx.AdaptiveAvgPool1d(size), rand(1, 2, length, seed=2))


@pytest.mark.parametrize("size,hw", [(1, (5, 7)), (2, (4, 6)), ((3, 2), (7, 5)), ((None, 3), (4, 7)),
                                     ((4, 5), (5, 7)), (3, (3, 3))])
def test_adaptive_max_pool2d(backend, torch, size, hw):
    for x in (rand(2, 3, *hw, seed=1), _ties(2, 3, *hw)):
        _parity(torch, nnx.AdaptiveMaxPool2d(size), torch.nn.AdaptiveMaxPool2d(size), x)
    assert nnx.gradcheck(nnx.AdaptiveMaxPool2d(size), rand(1, 2, *hw, seed=2))


MAX3D = [dict(kernel_size=2), dict(kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=(1, 1, 0)),
         dict(kernel_size=3, stride=2, padding=1, dilation=(2, 1, 1)),
         dict(kernel_size=2, stride=2, ceil_mode=True)]


@pytest.mark.parametrize("cfg", MAX3D, ids=str)
def test_max_pool3d(backend, torch, cfg):
    for x in (rand(2, 2, 5, 6, 5, seed=1), _ties(2, 2, 5, 6, 5)):
        _parity(torch, nnx.MaxPool3d(**cfg), torch.nn.MaxPool3d(**cfg), x)
    assert nnx.gradcheck(nnx.MaxPool3d(**cfg), rand(1, 1, 5, 4, 5, seed=2))


AVG3D = [dict(kernel_size=2), dict(kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=(1, 1, 0)),
         dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
         dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
         dict(kernel_size=(3, 2, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False),
         dict(kernel_size=2, divisor_override=3)]


@pytest.mark.parametrize("cfg", AVG3D, ids=str)
def test_avg_pool3d(backend, torch, cfg):
    _parity(torch, nnx.AvgPool3d(**cfg), torch.nn.AvgPool3d(**cfg), rand(2, 2, 5, 6, 5, seed=1))
    assert nnx.gradcheck(nnx.AvgPool3d(**cfg), rand(1, 1, 5, 4, 5, seed=2))


def test_functional_forms(backend, torch):
    tF = torch.nn.functional
    x1, x2, x3 = rand(2, 3, 8, seed=1), rand(2, 3, 5, 7, seed=2), rand(1, 2, 4, 5, 6, seed=3)
    t = lambda a: torch.from_numpy(host(a).copy())  # noqa: E731
    assert_close(F.max_pool1d(x1, 3, 2, 1), tF.max_pool1d(t(x1), 3, 2, 1), rtol=1e-12, atol=1e-12)
    assert_close(F.avg_pool1d(x1, 3, 2, 1), tF.avg_pool1d(t(x1), 3, 2, 1), rtol=1e-12, atol=1e-12)
    assert_close(F.adaptive_avg_pool1d(x1, 3), tF.adaptive_avg_pool1d(t(x1), 3), rtol=1e-12, atol=1e-12)
    assert_close(F.adaptive_max_pool2d(x2, (2, 3)), tF.adaptive_max_pool2d(t(x2), (2, 3)), rtol=1e-12, atol=1e-12)
    assert_close(F.max_pool3d(x3, 2), tF.max_pool3d(t(x3), 2), rtol=1e-12, atol=1e-12)
    assert_close(F.avg_pool3d(x3, 2), tF.avg_pool3d(t(x3), 2), rtol=1e-12, atol=1e-12)


def test_errors(backend):
    with pytest.raises(ValueError, match=r"MaxPool1d\(kernel_size=2.*expected 3-D input of shape \(N, C, L\)"):
        nnx.MaxPool1d(2)(rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"AvgPool1d\(kernel_size=5.*larger than the padded input"):
        nnx.AvgPool1d(5)(rand(2, 3, 4))
    with pytest.raises(ValueError, match="MaxPool1d: padding should be at most half"):
        nnx.MaxPool1d(2, padding=2)
    with pytest.raises(ValueError, match="MaxPool3d: kernel_size must be"):
        nnx.MaxPool3d((2, 2))
    with pytest.raises(ValueError, match=r"AvgPool3d\(kernel_size=\(2, 2, 2\).*expected 5-D input"):
        nnx.AvgPool3d(2)(rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="AdaptiveAvgPool1d: output_size must be"):
        nnx.AdaptiveAvgPool1d(0)
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool2d\(output_size=2\): expected 4-D input"):
        nnx.AdaptiveMaxPool2d(2)(rand(2, 3, 4))
    for cls in (nnx.MaxPool1d, nnx.MaxPool3d):
        with pytest.raises(NotImplementedError, match=f"{cls.__name__}: return_indices=True is not supported"):
            cls(2, return_indices=True)
    with pytest.raises(NotImplementedError, match="AdaptiveMaxPool2d: return_indices"):
        nnx.AdaptiveMaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match="AvgPool3d: divisor_override"):
        nnx.AvgPool3d(2, divisor_override=0)
