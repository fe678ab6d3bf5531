"""The NumPy adapter's max-pooling host kernels (``backends/numpy_pool.py``) against the
reference formulation of ``fused_api.py`` (im2col, argmax, col2im) and PyTorch's rules for ties
and NaN; every thread count gives the same bits; other operands take the reference."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx_backends.fused_api import FusedOps

GEOMETRIES = [  # kernel, stride, dilation, pads (top, left), input H x W
    ((2, 2), (2, 2), (1, 1), (0, 0), (8, 10)),   # the 2x2 / 2 fast path
    ((2, 2), (2, 2), (1, 1), (0, 0), (9, 7)),    # fast path, odd sides (last row/column unused)
    ((3, 3), (2, 2), (1, 1), (1, 1), (7, 8)),    # overlapping windows, padding
    ((3, 2), (1, 2), (2, 1), (1, 0), (9, 6)),    # dilation, unequal sides
    ((2, 2), (2, 2), (1, 1), (1, 1), (5, 5)),    # padded 2x2 / 2: the general loop
]


def _out(kernel, stride, dilation, pads, hw):
    return tuple((hw[i] + 2 * pads[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_max_pool_kernels_match_reference(numpy_adapter, lib, dtype, geometry):
    kernel, stride, dilation, pads, hw = geometry
    out = _out(*geometry)
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=(3, 4, *hw)).astype(dtype)  # small integers: many ties
    dy = rng.standard_normal((3, 4, *out)).astype(dtype)
    y_ref, saved_ref = FusedOps.max_pool2d_forward(numpy_adapter, x, kernel, stride, dilation, pads, out)
    dx_ref = FusedOps.max_pool2d_backward(numpy_adapter, dy, saved_ref, x.shape, kernel, stride, dilation, pads, out)
    runs = []
    for threads in (1, 2, 3):
        nnx.set_num_threads(threads)
        y, saved = numpy_adapter.max_pool2d_forward(x, kernel, stride, dilation, pads, out)
        assert saved[0] == "host"
        runs.append((y, numpy_adapter.max_pool2d_backward(dy, saved, x.shape, kernel, stride, dilation, pads, out)))
    assert np.array_equal(runs[0][0], y_ref)
    np.testing.assert_allclose(runs[0][1], dx_ref, rtol=1e-6, atol=1e-6)  # overlap sums in another order
    for y, dx in runs[1:]:
        assert np.array_equal(y, runs[0][0]) and np.array_equal(dx, runs[0][1])


def test_max_pool_nan_goes_to_the_last_nan_as_pytorch(numpy_adapter, lib):
    """PyTorch's CPU kernel takes a later element when it is greater or NaN: the output is NaN and
    the gradient goes to the last NaN of the window; -inf windows give their first element."""
    x = np.array([[[[1.0, np.nan, 5.0, 2.0],
                    [np.nan, 0.0, 2.0, np.nan],
                    [-np.inf, -np.inf, 3.0, 3.0],
                    [-np.inf, -np.inf, 3.0, 1.0]]]], dtype=np.float32)
    y, saved = numpy_adapter.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1), (0, 0), (2, 2))
    dx = numpy_adapter.max_pool2d_backward(np.ones_like(y), saved, x.shape, (2, 2), (2, 2), (1, 1), (0, 0), (2, 2))
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 0, 1])
    assert y[0, 0, 1, 0] == -np.inf and y[0, 0, 1, 1] == 3.0
    want = np.zeros((4, 4), np.float32)
    want[1, 0] = want[1, 3] = want[2, 0] = want[2, 2] = 1.0  # last NaN; NaN after a 5; first -inf; first 3
    assert np.array_equal(dx[0, 0], want)


def test_max_pool_layer_matches_torch_with_nan_and_ties(numpy_adapter, lib):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle for NaN and tie routing")
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(2, 3, 8, 8)).astype(np.float32)
    x[0, 0, 0, :3] = np.nan
    x[1, 2, 5, 4] = np.nan
    pool = nnx.MaxPool2d(2)
    y = pool(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = pool.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(np.asarray(y), yt.detach().numpy())
    np.testing.assert_array_equal(np.asarray(dx), xt.grad.numpy())


def test_other_operands_take_the_reference(numpy_adapter, lib):
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    geo = ((2, 2), (2, 2), (1, 1), (0, 0), (2, 2))
    for operand in (x.astype(np.float16), x[:, :, :, ::-1]):
        y, saved = numpy_adapter.max_pool2d_forward(operand, *geo)
        assert saved[0] == "reference"
        y_ref, _ = FusedOps.max_pool2d_forward(numpy_adapter, operand, *geo)
        assert np.array_equal(y, y_ref)
        dx = numpy_adapter.max_pool2d_backward(np.ones_like(y), saved, operand.shape, *geo)
        assert dx.shape == operand.shape and float(dx.sum()) == y.size


def test_layer_takes_the_kernels(numpy_adapter, lib, monkeypatch):
    calls = []
    real = type(numpy_adapter).max_pool2d_forward

    def spy(self, *args):
        calls.append(args[1:])
        return real(self, *args)

    monkeypatch.setattr(type(numpy_adapter), "max_pool2d_forward", spy)
    nnx.MaxPool2d(2)(np.ones((1, 2, 6, 6), np.float32))
    assert calls == [((2, 2), (2, 2), (1, 1), (0, 0), (3, 3))]
