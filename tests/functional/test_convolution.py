"""nnx/functional/convolution.py (and its _im2col / _flat_shift kernels): conv2d, conv1d,
conv_transpose2d gradchecks (float64) and PyTorch parity on every backend, through the layers; the
stride-1, strided, chunked and fallback paths; what the closures keep; workspace reuse.

Shapes are tiny on purpose: the grid of configurations (stride, padding, dilation, groups,
odd sizes, batch of 1) is what matters, not the size.
"""

from __future__ import annotations

import gc
import types
import weakref

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, copy_params_to_torch, host, rand
from helpers import layer_parity as parity


@pytest.fixture
def cpu_shaped(monkeypatch):
    """These tests look inside the CPU-shaped kernels (chunks, sliding windows, scratch buffers)."""
    monkeypatch.setattr(F._device, "DEVICE_PATHS", "never")


@pytest.fixture
def no_sliding_windows(backend, monkeypatch):
    """The backend without its strided-view ``sliding_windows``: im2col takes the pure-standard fallback."""
    monkeypatch.setattr(type(backend), "sliding_windows", lambda self, *a, **k: None)


@pytest.fixture
def one_sample_chunks(monkeypatch):
    """A 1-byte im2col budget: every convolution processes its batch one sample at a time."""
    monkeypatch.setattr(F._im2col, "COLUMN_CHUNK_BYTES", 1)


@pytest.fixture
def pool_every_buffer(monkeypatch):
    """Layers' workspaces pool even tiny scratch buffers (normally only those of at least 1 MiB)."""
    monkeypatch.setattr(F._flat_shift, "POOL_MIN_BYTES", 0)


CONV2D_GRID = [
    dict(),
    dict(stride=2),
    dict(stride=(2, 1), padding=(1, 2)),
    dict(padding=1, dilation=2),
    dict(padding="same"),
    dict(padding="same", dilation=(1, 2)),
    dict(padding="valid", bias=False),
    dict(groups=2, padding=1),
    dict(groups=4, stride=2, padding=1),          # depthwise
    dict(kernel_size=(2, 3), stride=3, padding=1),
    dict(kernel_size=1, stride=2),
]


def _conv_args(cfg, out=6):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    out = 8 if cfg.get("groups") == 4 else out
    return (4, out, k), cfg


@pytest.mark.parametrize("cfg", CONV2D_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("batch", [1, 2])
def test_conv2d_parity(backend, torch, cfg, batch):
    args, kw = _conv_args(cfg)
    layer = nnx.Conv2d(*args, dtype="float64", **kw)
    tlayer = torch.nn.Conv2d(*args, dtype=torch.float64, **kw)
    parity(torch, layer, tlayer, rand(batch, 4, 7, 6, seed=batch))


@pytest.mark.parametrize("cfg", [dict(), dict(stride=2, padding=1), dict(groups=2, dilation=2, padding=2),
                                 dict(padding="same", kernel_size=(2, 2))],
                         ids=["default", "s2p1", "g2d2", "same-even"])
def test_conv2d_gradcheck(backend, cfg):
    args, kw = _conv_args(cfg, out=4)
    layer = nnx.Conv2d(*args, dtype="float64", **kw)
    assert nnx.gradcheck(layer, rand(1, 4, 5, 4))


CONV1D_GRID = [dict(), dict(stride=2, padding=2), dict(dilation=2, padding="same"), dict(groups=2, bias=False),
               dict(kernel_size=4, padding="same")]


@pytest.mark.parametrize("cfg", CONV1D_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_conv1d_parity(backend, torch, cfg):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    layer = nnx.Conv1d(4, 6, k, dtype="float64", **cfg)
    tlayer = torch.nn.Conv1d(4, 6, k, dtype=torch.float64, **cfg)
    parity(torch, layer, tlayer, rand(2, 4, 9))


def test_conv1d_gradcheck(backend):
    assert nnx.gradcheck(nnx.Conv1d(2, 3, 3, stride=2, padding=1, dtype="float64"), rand(2, 2, 7))


CONVT_GRID = [
    dict(),
    dict(stride=2),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    dict(groups=2, stride=2, bias=False),
    dict(dilation=2, padding=1),
    dict(dilation=2, stride=1, output_padding=1),  # output_padding < dilation
    dict(kernel_size=(4, 2), stride=2, padding=1),
]


@pytest.mark.parametrize("cfg", CONVT_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("batch", [1, 2])
def test_conv_transpose2d_parity(backend, torch, cfg, batch):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    layer = nnx.ConvTranspose2d(4, 6, k, dtype="float64", **cfg)
    tlayer = torch.nn.ConvTranspose2d(4, 6, k, dtype=torch.float64, **cfg)
    parity(torch, layer, tlayer, rand(batch, 4, 4, 5, seed=batch))


def test_conv_transpose2d_gradcheck(backend):
    layer = nnx.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dtype="float64")
    assert nnx.gradcheck(layer, rand(1, 2, 3, 2))


def test_conv_transpose2d_output_size(backend, torch):
    layer = nnx.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype="float64")
    tlayer = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype=torch.float64)
    y = parity(torch, layer, tlayer, rand(1, 2, 4, 4), forward_kwargs=dict(output_size=(8, 7)))
    assert tuple(y.shape) == (1, 3, 8, 7)
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(.*requested output size \(9, 7\)"):
        layer(rand(1, 2, 4, 4), output_size=(9, 7))


STRIDED = [dict(stride=2, padding=1), dict(stride=(2, 3), dilation=(2, 1), padding=2, groups=2),
           dict(stride=3, padding=0)]


@pytest.mark.parametrize("cfg", STRIDED, ids=["s2p1", "s23-d21-g2", "s3"])
def test_sliding_windows_path_and_standard_fallback_agree(backend, monkeypatch, cfg, cpu_shaped):
    x, w, b = rand(2, 4, 9, 8), rand(6, 4 // cfg.get("groups", 1), 3, 3, seed=1), rand(6, seed=2)
    dy_shape = tuple(F.conv2d(x, w, b, **cfg).shape)
    dy = rand(*dy_shape, seed=3)
    calls = []
    original = type(backend).sliding_windows

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(type(backend), "sliding_windows", spy)
    y1, back1 = F.conv2d_forward(x, w, b, **cfg)
    dx1, (dw1, db1) = back1(dy)
    assert calls and all(c == (backend.name in ("numpy", "cupy", "torch")) for c in calls)  # views where they exist

    monkeypatch.setattr(type(backend), "sliding_windows", lambda self, *a, **k: None)  # force the fallback
    y2, back2 = F.conv2d_forward(x, w, b, **cfg)
    dx2, (dw2, db2) = back2(dy)
    for a, e in ((y1, y2), (dx1, dx2), (dw1, dw2), (db1, db2)):
        np.testing.assert_allclose(host(a), host(e), rtol=1e-12, atol=1e-12)


def test_fallback_path_matches_torch(backend, no_sliding_windows, torch):
    layer = nnx.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype="float64")
    tlayer = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
    copy_params_to_torch(layer, tlayer)
    x = rand(2, 4, 7, 6)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx)
    assert_close(layer(x), ty, rtol=1e-10, atol=1e-10)
    ty.backward(torch.ones_like(ty))
    dx = layer.backward(nnx.asarray(np.ones(tuple(ty.shape)), dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-10)
    assert_close(layer.weight.grad, tlayer.weight.grad, rtol=1e-10, atol=1e-10)


def test_stride1_path_does_not_need_sliding_windows(backend, monkeypatch, cpu_shaped):
    monkeypatch.setattr(type(backend), "sliding_windows",
                        lambda self, *a, **k: pytest.fail("stride-1 convolution asked for sliding windows"))
    y, back = F.conv2d_forward(rand(1, 2, 5, 5), rand(3, 2, 3, 3, seed=1), padding=1)
    back(rand(*tuple(y.shape), seed=2))


def _closure_arrays(fn, seen=None) -> list:
    """Every array reachable from the closure cells of ``fn`` (following nested closures)."""
    seen = set() if seen is None else seen
    out = []
    for cell in fn.__closure__ or ():
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        if callable(v) and getattr(v, "__closure__", None):
            out += _closure_arrays(v, seen)
        elif hasattr(v, "__array_namespace__") and not isinstance(v, types.ModuleType):
            out.append(v)
    return out


@pytest.mark.parametrize("cfg", [dict(padding=2), dict(stride=2, padding=1), dict(padding=1, groups=2)],
                         ids=["stride1", "stride2", "groups"])
def test_forward_closure_holds_no_im2col_matrix(cfg):
    nnx.set_backend("numpy")
    x = rand(4, 4, 12, 12, dtype="float32")
    w = rand(8, 4 // cfg.get("groups", 1), 5, 5, seed=1, dtype="float32")
    y, back = F.conv2d_forward(x, w, **cfg)
    sizes = [int(np.prod(a.shape)) for a in _closure_arrays(back)]
    p = cfg["padding"]
    padded_input = 4 * 4 * (12 + 2 * p + 1) * (12 + 2 * p)  # (N, C, Hp + 1 spare row, Wp)
    im2col = 4 * 4 * 25 * int(np.prod(y.shape[2:]))
    assert sizes and max(sizes) <= padded_input < im2col


def test_nothing_survives_backward(pool_every_buffer, cpu_shaped, monkeypatch):
    from nnx.functional import _direct_conv, _gemm_conv

    monkeypatch.setattr(_direct_conv, "MAX_TAPS", None)  # the flat-shift path's buffers (2 -> 4 channels: direct)
    monkeypatch.setattr(_gemm_conv, "ENABLED", False)  # (and the GEMM path would take it on NumPy)
    nnx.set_backend("numpy")
    model = nnx.Sequential(nnx.Conv2d(2, 4, 3, padding=1), nnx.BatchNorm2d(4), nnx.ReLU(), nnx.MaxPool2d(2),
                           nnx.Conv2d(4, 4, 3, stride=2, padding=1), nnx.Flatten(), nnx.Linear(16, 3))
    x = rand(2, 2, 8, 8, dtype="float32")
    y = model(x)
    held = [weakref.ref(a) for m in model for fn, *_ in m._tape for a in _closure_arrays(fn)]
    assert held and all(r() is not None for r in held)
    model.backward(nnx.asarray(np.ones(tuple(y.shape)), dtype="float32"))
    del y
    gc.collect()
    assert all(m._tape == [] for m in model)
    alive = [r for r in held if r() is not None and r() is not x]
    # what is left is referenced from outside the closures only: parameters and buffers, and the
    # scratch buffers (padded input) a Conv2d keeps in its workspace for the next step
    params = {id(p.data) for p in model.parameters()} | {id(b) for b in model.buffers()}
    pooled = {id(a) for m in model if isinstance(m, nnx.Conv2d) for bufs in m._workspace._free.values() for a in bufs}
    assert all(id(r()) in params | pooled for r in alive)
    assert any(id(r()) in pooled for r in alive)  # the stride-1 layer's padded input went back to its pool
    # the pool holds the padded input and the padded dy, never an im2col block
    pool = [a for bufs in model[0]._workspace._free.values() for a in bufs]
    assert sorted(tuple(a.shape) for a in pool) == [(2, 2, 11, 10), (2, 4, 11, 10)]


@pytest.mark.parametrize("cfg", [dict(padding=1), dict(stride=2, padding=1, groups=2)], ids=["stride1", "strided"])
def test_chunked_im2col_matches_torch(backend, one_sample_chunks, torch, cfg):
    """With a tiny im2col budget every sample is its own chunk; results are unchanged."""
    layer = nnx.Conv2d(4, 6, 3, dtype="float64", **cfg)
    tlayer = torch.nn.Conv2d(4, 6, 3, dtype=torch.float64, **cfg)
    copy_params_to_torch(layer, tlayer)
    x = rand(3, 4, 6, 5)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx)
    assert_close(layer(x), ty, rtol=1e-10, atol=1e-10)
    dy = np.random.default_rng(2).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    dx = layer.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-10)
    assert_close(layer.weight.grad, tlayer.weight.grad, rtol=1e-10, atol=1e-10)
    assert_close(layer.bias.grad, tlayer.bias.grad, rtol=1e-10, atol=1e-10)
    assert F._im2col.batch_chunks(np, 3, 100, np.float64) == [(0, 1), (1, 2), (2, 3)]


def test_adapter_sliding_windows_layout_matches_numpy(backend):
    """Every adapter that offers sliding windows returns NumPy's ``sliding_window_view`` layout."""
    data = np.arange(2 * 3 * 5 * 6, dtype=np.float64).reshape(2, 3, 5, 6)
    windows = backend.sliding_windows(nnx.asarray(data), (2, 3), (2, 3))
    if windows is None:  # the standard has no strided views; the libraries that have them offer them
        assert backend.name not in ("numpy", "torch", "cupy"), f"{backend.name} has strided views"
        pytest.skip(f"backend {backend.name!r} offers no strided views (the pure-standard path is used)")
    expected = np.lib.stride_tricks.sliding_window_view(data, (2, 3), axis=(2, 3))
    np.testing.assert_array_equal(host(windows), expected)


SAME_SIZE = [dict(c=4, o=4, k=(3, 3), padding=1), dict(c=4, o=6, k=(3, 2), padding="same", dilation=(2, 1), groups=2),
             dict(c=2, o=8, k=(5, 5), padding=2), dict(c=3, o=3, k=(1, 3), padding=(0, 1), bias=False)]


@pytest.mark.parametrize("input_grad", [True, False], ids=["dx", "no-dx"])
@pytest.mark.parametrize("cfg", SAME_SIZE, ids=["3x3", "same-d21-g2", "O>2C", "1x3-nobias"])
def test_stride1_same_size_backward_matches_torch(backend, one_sample_chunks, torch, cfg, input_grad):
    """Stride-1 "same"-size convolutions take the backward that im2cols dy (dx as a full
    convolution with the flipped kernel); when O is large against C they keep the im2col-of-x
    backward. Both, chunked per sample, must match torch, with and without the input gradient."""
    cfg = dict(cfg)
    c, o, k = cfg.pop("c"), cfg.pop("o"), cfg.pop("k")
    layer = nnx.Conv2d(c, o, k, dtype="float64", **cfg)
    tlayer = torch.nn.Conv2d(c, o, k, dtype=torch.float64, **cfg)
    copy_params_to_torch(layer, tlayer)
    x = rand(3, c, 6, 7)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx)
    assert tuple(ty.shape[2:]) == (6, 7)
    assert_close(layer(x), ty, rtol=1e-10, atol=1e-10)
    dy = np.random.default_rng(2).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    dx = layer.backward(nnx.asarray(dy, dtype="float64"), input_grad=input_grad)
    if input_grad:
        assert_close(dx, tx.grad, rtol=1e-10, atol=1e-10)
    else:
        assert dx is None
    assert_close(layer.weight.grad, tlayer.weight.grad, rtol=1e-10, atol=1e-10)
    if layer.bias is not None:
        assert_close(layer.bias.grad, tlayer.bias.grad, rtol=1e-10, atol=1e-10)


def test_conv2d_workspace_reuse_across_steps_matches_torch(backend, torch, pool_every_buffer):
    """A Conv2d reuses its padded-input and padded-dy buffers from step to step: two forwards
    recorded before their backwards, then more steps on new data, all match torch."""
    layer = nnx.Conv2d(3, 4, 3, padding=1, dtype="float64")
    tlayer = torch.nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
    copy_params_to_torch(layer, tlayer)
    xs = [rand(2, 3, 5, 6, seed=s) for s in range(4)]
    dys = [np.random.default_rng(10 + s).standard_normal((2, 4, 5, 6)) for s in range(4)]

    def reference(i):
        tx = torch.from_numpy(host(xs[i]).copy()).requires_grad_(True)
        tlayer.zero_grad()
        ty = tlayer(tx)
        ty.backward(torch.from_numpy(dys[i]))
        return ty.detach(), tx.grad, tlayer.weight.grad.clone(), tlayer.bias.grad.clone()

    ys = [layer(xs[0]), layer(xs[1])]  # two closures alive at once, each with its own padded input
    for i in (1, 0, 2, 3):
        if i >= 2:
            ys.append(layer(xs[i]))
        for p in layer.parameters():  # (zero_grad would also drop the recorded passes)
            p.grad = None
        dx = layer.backward(nnx.asarray(dys[i], dtype="float64"))
        ty, tdx, tdw, tdb = reference(i)
        assert_close(ys[i], ty, rtol=1e-10, atol=1e-10)
        assert_close(dx, tdx, rtol=1e-10, atol=1e-10)
        assert_close(layer.weight.grad, tdw, rtol=1e-10, atol=1e-10)
        assert_close(layer.bias.grad, tdb, rtol=1e-10, atol=1e-10)
