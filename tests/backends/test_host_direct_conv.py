"""The direct convolution kernels of ``backends/host_kernels.c`` (``Backend.conv2d_direct`` and
``conv2d_direct_weight_grad``, the NumPy adapter's) against their references in
``backends/fused_api.py`` (im2col and one product), the rule of ``nnx/functional/_direct_conv.py``,
and a layer that takes them against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.functional import _direct_conv
from nnx_backends.fused_api import FusedOps

TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}

# (N, C, O, H, W, kh, kw, top, left, bottom, right)
CASES = [
    (3, 1, 6, 9, 9, 5, 5, 2, 2, 2, 2),     # LeNet-5's first layer, small
    (2, 3, 5, 7, 11, 3, 3, 1, 1, 1, 1),    # odd width, an output-channel tail (5 = 4 + 1)
    (2, 2, 9, 6, 5, 2, 4, 0, 3, 1, 0),     # non-square kernel, asymmetric padding
    (1, 1, 1, 4, 40, 1, 3, 0, 0, 0, 2),    # a row longer than one block of positions
    (2, 3, 4, 12, 10, 5, 5, 0, 0, 0, 0),   # valid
]


def _out(h, w, kh, kw, top, left, bottom, right):
    return h + top + bottom - kh + 1, w + left + right - kw + 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_kernels_match_reference(numpy_adapter, lib, dtype, case, bias):
    n, c, o, h, w, kh, kw, t, lf, b, r = case
    rng = np.random.default_rng(12)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    bs = rng.standard_normal(o).astype(dtype) if bias else None
    out = _out(h, w, kh, kw, t, lf, b, r)
    dy = rng.standard_normal((n, o, *out)).astype(dtype)
    runs = []
    for threads in (1, 2, 3):
        nnx.set_num_threads(threads)
        runs.append((numpy_adapter.conv2d_direct(x, wt, bs, (t, lf), out),
                     numpy_adapter.conv2d_direct_weight_grad(x, dy, (kh, kw), (t, lf))))
    want = (FusedOps.conv2d_direct(numpy_adapter, x, wt, bs, (t, lf), out),
            FusedOps.conv2d_direct_weight_grad(numpy_adapter, x, dy, (kh, kw), (t, lf)))
    for got, ref in zip(runs[0], want, strict=True):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, **TOL[dtype])
    for other in runs[1:]:  # split by sample (forward) and by output channel (weight gradient)
        for a, bb in zip(runs[0], other, strict=True):
            assert np.array_equal(a, bb)


def test_negative_padding_crops(numpy_adapter, lib):
    """A negative (top, left) reads the image from inside: the reference crops, the kernel skips."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 2, 8, 9)).astype(np.float32)
    wt = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    got = numpy_adapter.conv2d_direct(x, wt, None, (-1, -2), (4, 3))
    np.testing.assert_allclose(got, FusedOps.conv2d_direct(numpy_adapter, x, wt, None, (-1, -2), (4, 3)),
                               **TOL["float32"])


def test_other_operands_take_the_reference(numpy_adapter, lib, monkeypatch):
    calls = []
    for name in ("conv2d_direct", "conv2d_direct_weight_grad"):
        real = getattr(FusedOps, name)

        def spy(self, *args, _real=real):
            calls.append(1)
            return _real(self, *args)

        monkeypatch.setattr(FusedOps, name, spy)
    x, wt = np.ones((2, 1, 6, 6), np.float32), np.ones((2, 1, 3, 3), np.float32)
    numpy_adapter.conv2d_direct(x, wt, None, (1, 1), (6, 6))
    numpy_adapter.conv2d_direct_weight_grad(x, np.ones((2, 2, 6, 6), np.float32), (3, 3), (1, 1))
    assert calls == []
    numpy_adapter.conv2d_direct(x.astype(np.float16), wt.astype(np.float16), None, (1, 1), (6, 6))
    numpy_adapter.conv2d_direct(x[:, :, ::-1], wt, None, (1, 1), (6, 6))       # strided
    numpy_adapter.conv2d_direct(x, wt.astype(np.float64), None, (1, 1), (6, 6))  # mixed dtypes
    assert len(calls) == 3


def test_rule(numpy_adapter, monkeypatch):
    x = np.zeros((4, 1, 28, 28), np.float32)
    w = np.zeros((6, 1, 5, 5), np.float32)
    fast = numpy_adapter.fast_direct_conv()
    assert _direct_conv.applicable(numpy_adapter, x, w, (1, 1), (1, 1), 1, (2, 2, 2, 2)) == fast
    for args in (((2, 2), (1, 1), 1, (2, 2, 2, 2)), ((1, 1), (2, 2), 1, (2, 2, 2, 2)),
                 ((1, 1), (1, 1), 1, (5, 5, 5, 5))):  # stride, dilation, padding past k - 1
        assert not _direct_conv.applicable(numpy_adapter, x, w, *args)
    assert not _direct_conv.applicable(numpy_adapter, np.zeros((4, 6, 14, 14), np.float32),
                                       np.zeros((16, 6, 5, 5), np.float32), (1, 1), (1, 1), 1, (0, 0, 0, 0))
    assert not _direct_conv.applicable(numpy_adapter, x, np.zeros((9, 1, 5, 5), np.float32), (1, 1), (1, 1), 1,
                                       (2, 2, 2, 2))  # past MAX_OUT
    monkeypatch.setattr(_direct_conv, "MAX_TAPS", None)
    assert not _direct_conv.applicable(numpy_adapter, x, w, (1, 1), (1, 1), 1, (2, 2, 2, 2))
    with nnx.use_backend("array_api_strict") as strict:
        assert not strict.fast_direct_conv()


@pytest.mark.parametrize("padding", [2, 0, (1, 3)])
def test_layer_through_the_direct_path_matches_torch(numpy_adapter, lib, monkeypatch, padding):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle of this test")
    calls = []
    real = _direct_conv.conv2d_direct_forward
    monkeypatch.setattr(_direct_conv, "conv2d_direct_forward", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(14)
    x = rng.standard_normal((5, 2, 13, 11)).astype(np.float64)
    conv = nnx.Conv2d(2, 7, 5, padding=padding, dtype="float64")
    y = conv(x)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(dy)
    assert calls == [1]
    tc = torch.nn.Conv2d(2, 7, 5, padding=padding).double()
    with torch.no_grad():
        tc.weight.copy_(torch.from_numpy(conv.weight.data))
        tc.bias.copy_(torch.from_numpy(conv.bias.data))
    xt = torch.from_numpy(x).requires_grad_()
    yt = tc(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, tc.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, tc.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_layer_gradcheck(numpy_adapter, lib):
    from nnx.gradcheck import gradcheck

    rng = np.random.default_rng(15)
    conv = nnx.Conv2d(1, 3, 3, padding=1, dtype="float64")
    x = rng.standard_normal((2, 1, 5, 6))
    assert _direct_conv.applicable(numpy_adapter, x, conv.weight.data, (1, 1), (1, 1), 1, (1, 1, 1, 1))
    assert gradcheck(conv, x)
