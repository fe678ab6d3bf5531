"""The device-shaped kernels (nnx/functional/_device_conv.py, the device paths of pooling, the
adapter's ``im2col``/``col2im``) on every backend: forced on with ``DEVICE_PATHS = "always"``, they
match PyTorch (outputs, input and parameter gradients), pass float64 gradchecks, and the adapter
methods agree with their pure-standard fallback and with a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F
from nnx_backends.fused_api import FusedOps

from helpers import host, rand
from helpers import layer_parity as parity


@pytest.fixture
def device_paths(monkeypatch):
    """Every kernel takes its device-shaped formulation, whatever the backend."""
    monkeypatch.setattr(F._device, "DEVICE_PATHS", "always")


def _numpy_im2col(x, kernel, stride, dilation, pads, out, fill=0.0):
    """Reference: an explicit loop over windows (no strided tricks)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw), (top, left), (oh, ow) = kernel, stride, dilation, pads, out
    cols = np.full((n, c, kh, kw, oh, ow), fill, dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            for i in range(oh):
                for j in range(ow):
                    y, xx = i * sh + a * dh - top, j * sw + b * dw - left
                    if 0 <= y < h and 0 <= xx < w:
                        cols[:, :, a, b, i, j] = x[:, :, y, xx]
    return cols.reshape(n, c * kh * kw, oh * ow)


# (shape, kernel, stride, dilation, (top, left), out)
GEOMETRIES = [
    ((2, 3, 6, 5), (3, 3), (1, 1), (1, 1), (1, 1), (6, 5)),       # "same", symmetric
    ((1, 2, 7, 6), (2, 3), (2, 1), (1, 2), (0, 1), (3, 2)),       # strided, dilated, asymmetric
    ((2, 2, 5, 5), (2, 2), (1, 1), (1, 1), (0, 0), (5, 5)),       # "same" with an even kernel: bottom/right pad
    ((1, 1, 9, 8), (3, 2), (3, 2), (2, 1), (2, 0), (4, 4)),       # windows past the image (ceil mode)
    ((2, 4, 4, 4), (1, 1), (2, 2), (1, 1), (0, 0), (2, 2)),       # 1x1, strided
]


@pytest.mark.parametrize("geom", GEOMETRIES, ids=["same", "s21-d12", "same-even", "past-edge", "1x1-s2"])
@pytest.mark.parametrize("fill", [0.0, -np.inf], ids=["zero", "neg-inf"])
def test_adapter_im2col_col2im_match_reference_and_fallback(backend, geom, fill):
    shape, kernel, stride, dilation, pads, out = geom
    x = np.random.default_rng(0).standard_normal(shape)
    want = _numpy_im2col(x, kernel, stride, dilation, pads, out, fill)
    xb = nnx.asarray(x, dtype="float64")
    got = backend.im2col(xb, kernel, stride, dilation, pads, out, fill)
    ref = FusedOps.im2col(backend, xb, kernel, stride, dilation, pads, out, fill)
    np.testing.assert_array_equal(host(got), want)
    np.testing.assert_array_equal(host(ref), want)
    if fill != 0.0:
        return
    # col2im is the adjoint: <im2col(x), c> == <x, col2im(c)> for every x, c; checked with the
    # exact reference ``want`` and a random c, and element by element against the transpose
    c = np.random.default_rng(1).standard_normal(want.shape)
    cb = nnx.asarray(c, dtype="float64")
    dx = host(backend.col2im(cb, shape, kernel, stride, dilation, pads, out))
    dx0 = host(FusedOps.col2im(backend, cb, shape, kernel, stride, dilation, pads, out))
    assert dx.shape == shape
    np.testing.assert_allclose(np.sum(want * c), np.sum(x * dx), rtol=1e-12)
    np.testing.assert_allclose(dx, dx0, rtol=1e-12, atol=1e-12)
    onehot = np.zeros(x.size)
    for k in (0, x.size // 2, x.size - 1):  # column k of im2col's matrix is col2im's row k
        onehot[:] = 0.0
        onehot[k] = 1.0
        e = _numpy_im2col(onehot.reshape(shape), kernel, stride, dilation, pads, out)
        np.testing.assert_allclose(dx.reshape(-1)[k], np.sum(e * c), rtol=1e-12, atol=1e-12)


def test_adapter_col2im_matches_torch_fold(backend, torch):
    shape, kernel, stride, dilation, pads, out = (2, 3, 7, 6), (3, 2), (2, 1), (1, 2), (1, 1), (4, 6)
    cols = np.random.default_rng(2).standard_normal((2, 3 * 6, 24))
    got = backend.col2im(nnx.asarray(cols, dtype="float64"), shape, kernel, stride, dilation, pads, out)
    want = torch.nn.functional.fold(torch.from_numpy(cols), (7, 6), kernel, dilation=dilation, padding=pads,
                                    stride=stride)
    np.testing.assert_allclose(host(got), want.numpy(), rtol=1e-12, atol=1e-12)


CONV2D = [dict(), dict(stride=2), dict(stride=(2, 1), padding=(1, 2)), dict(padding=1, dilation=2),
          dict(padding="same"), dict(padding="same", kernel_size=(2, 2)), dict(padding="valid", bias=False),
          dict(groups=2, padding=1), dict(groups=4, stride=2, padding=1), dict(kernel_size=1, stride=2),
          dict(kernel_size=1)]


def _ids(c):
    return ",".join(f"{k}={v}" for k, v in c.items()) or "default"


@pytest.mark.parametrize("cfg", CONV2D, ids=_ids)
def test_device_conv2d_matches_torch(backend, torch, device_paths, cfg):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    out = 8 if cfg.get("groups") == 4 else 6
    parity(torch, nnx.Conv2d(4, out, k, dtype="float64", **cfg), torch.nn.Conv2d(4, out, k, dtype=torch.float64, **cfg),
           rand(2, 4, 7, 6, seed=3))


def test_device_conv2d_in_memory_budget_chunks_matches_torch(backend, torch, device_paths, monkeypatch):
    """A 1-byte column budget: one sample per chunk, results unchanged."""
    monkeypatch.setattr(F._device_conv, "DEVICE_COLUMN_BYTES", 1)
    assert F._device_conv.device_chunks(np, 3, 10, np.float64) == [(0, 1), (1, 2), (2, 3)]
    parity(torch, nnx.Conv2d(4, 6, 3, padding=1, groups=2, dtype="float64"),
           torch.nn.Conv2d(4, 6, 3, padding=1, groups=2, dtype=torch.float64), rand(3, 4, 5, 6, seed=4))


@pytest.mark.parametrize("cfg", [dict(), dict(stride=2, padding=1), dict(groups=2, dilation=2, padding=2),
                                 dict(padding="same", kernel_size=(2, 2))],
                         ids=["default", "s2p1", "g2d2", "same-even"])
def test_device_conv2d_gradcheck(backend, device_paths, cfg):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    assert nnx.gradcheck(nnx.Conv2d(4, 4, k, dtype="float64", **cfg), rand(2, 4, 5, 4))


@pytest.mark.parametrize("cfg", [dict(), dict(stride=2, padding=1, output_padding=1),
                                 dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
                                 dict(groups=2, stride=2, bias=False), dict(dilation=2, stride=1, output_padding=1)],
                         ids=["default", "s2p1op1", "s23", "g2", "d2op1"])
def test_device_conv_transpose2d_matches_torch(backend, torch, device_paths, cfg):
    parity(torch, nnx.ConvTranspose2d(4, 6, 3, dtype="float64", **cfg),
           torch.nn.ConvTranspose2d(4, 6, 3, dtype=torch.float64, **cfg), rand(2, 4, 4, 5, seed=5))


def test_device_conv1d_and_transpose_gradcheck(backend, device_paths):
    assert nnx.gradcheck(nnx.Conv1d(2, 3, 3, stride=2, padding=1, dtype="float64"), rand(2, 2, 7))
    layer = nnx.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dtype="float64")
    assert nnx.gradcheck(layer, rand(1, 2, 3, 2))


def test_device_conv1d_matches_torch(backend, torch, device_paths):
    parity(torch, nnx.Conv1d(4, 6, 4, padding="same", dtype="float64"),
           torch.nn.Conv1d(4, 6, 4, padding="same", dtype=torch.float64), rand(2, 4, 9))


MAXPOOL = [dict(kernel_size=2), dict(kernel_size=3, stride=2), dict(kernel_size=3, stride=1, padding=1),
           dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), dict(kernel_size=2, dilation=2),
           dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)]


@pytest.mark.parametrize("cfg", MAXPOOL, ids=_ids)
def test_device_maxpool2d_matches_torch(backend, torch, device_paths, cfg):
    parity(torch, nnx.MaxPool2d(**cfg), torch.nn.MaxPool2d(**cfg), rand(2, 3, 7, 6, seed=6))


def test_device_maxpool2d_ties_go_to_first_max_and_gradcheck(backend, torch, device_paths):
    ones = nnx.asarray(np.ones((1, 1, 4, 4)), dtype="float64")
    parity(torch, nnx.MaxPool2d(2), torch.nn.MaxPool2d(2), ones)
    parity(torch, nnx.MaxPool2d(3, stride=1, padding=1), torch.nn.MaxPool2d(3, stride=1, padding=1), ones)
    x = nnx.asarray(np.random.default_rng(0).permutation(60).reshape(1, 3, 5, 4) / 7.0, dtype="float64")
    assert nnx.gradcheck(nnx.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), x)


AVGPOOL = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
           dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
           dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
           dict(kernel_size=2, divisor_override=3)]


@pytest.mark.parametrize("cfg", AVGPOOL, ids=_ids)
def test_device_avgpool2d_matches_torch(backend, torch, device_paths, cfg):
    parity(torch, nnx.AvgPool2d(**cfg), torch.nn.AvgPool2d(**cfg), rand(2, 3, 7, 6, seed=7))


def test_device_avgpool2d_gradcheck(backend, device_paths):
    assert nnx.gradcheck(nnx.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                         rand(1, 2, 5, 4))


def test_device_paths_keep_float32(backend, device_paths):
    x = rand(2, 3, 8, 8, dtype="float32")
    model = nnx.Sequential(nnx.Conv2d(3, 4, 3, padding=1), nnx.BatchNorm2d(4), nnx.MaxPool2d(2),
                           nnx.AvgPool2d(2), nnx.ConvTranspose2d(4, 2, 2, stride=2))
    y = model(x)
    dx = model.backward(nnx.asarray(np.ones(tuple(y.shape)), dtype="float32"))
    assert host(y).dtype == np.float32 and host(dx).dtype == np.float32
    assert all(host(p.grad).dtype == np.float32 for p in model.parameters())


def test_device_paths_are_taken_on_non_host_backends():
    """The launch meter's CuPy mode (not host memory) takes the device paths by default: one im2col
    per convolution, one col2im per input gradient, whatever the batch."""
    with nnx.use_backend(nnx.launches.counting_backend()):
        for n in (2, 64):
            conv = nnx.Conv2d(3, 4, 5, padding=2)
            x = nnx.asarray(np.ones((n, 3, 8, 8)), dtype="float32")
            with nnx.count_launches() as fwd:
                y = conv(x)
            with nnx.count_launches() as bwd:
                conv.backward(y)
            assert fwd.by_op["adapter.im2col"] == 1 and fwd.total == 3, fwd
            assert bwd.by_op["adapter.col2im"] == 1 and bwd.by_op["adapter.im2col"] == 1 and bwd.total == 6, bwd
