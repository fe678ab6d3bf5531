"""Winograd F(2x2,3x3) / F(4x4,3x3) convolution: parity with the im2col path and PyTorch (outputs,
dx, dW, db), float32 accuracy against float64 per tile size, gradcheck, the dispatch rule."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.functional import conv2d_forward, winograd
from nnx.functional.winograd import applicable, conv2d_winograd_forward

from helpers import host, rand


def Z(shape):
    """Zeros on the current backend."""
    return nnx.asarray(np.zeros(shape))


PADS = [(1, 1, 1, 1), (0, 0, 0, 0), (2, 2, 2, 2), (1, 0, 2, 1)]


@pytest.fixture
def forced_mode():
    """Set winograd.MODE for one test and restore it."""
    old = winograd.MODE

    def set_mode(mode: str) -> None:
        winograd.MODE = mode

    yield set_mode
    winograd.MODE = old


def _torch_conv(torch, x, w, b, pads, dy):
    F = torch.nn.functional
    xt, wt, bt = (torch.tensor(host(a), requires_grad=True) for a in (x, w, b))
    yt = F.conv2d(F.pad(xt, (pads[2], pads[3], pads[0], pads[1])), wt, bt)
    yt.backward(torch.tensor(host(dy)))
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("pads", PADS)
def test_parity_with_torch_float64(backend, torch, m, pads):
    x, w, b = rand(2, 3, 7, 9, seed=1), rand(5, 3, 3, 3, seed=2), rand(5, seed=3)
    y, back = conv2d_winograd_forward(x, w, b, pads, m)
    dy = rand(*y.shape, seed=4)
    dx, (dw, db) = back(dy)
    ty, tdx, tdw, tdb = _torch_conv(torch, x, w, b, pads, dy)
    for got, want, what in ((y, ty, "y"), (dx, tdx, "dx"), (dw, tdw, "dW"), (db, tdb, "db")):
        assert host(got).shape == want.shape, what
        np.testing.assert_allclose(host(got), want, rtol=1e-10, atol=1e-11, err_msg=f"F({m}) {what}")


@pytest.mark.parametrize("m", [2, 4])
def test_parity_with_im2col_path(backend, forced_mode, m):
    """conv2d_forward with the Winograd path forced agrees with the im2col / flat-shift path."""
    x, w, b = rand(3, 4, 10, 6, seed=5), rand(6, 4, 3, 3, seed=6), rand(6, seed=7)
    results = {}
    for mode in ("off", f"f{m}"):
        forced_mode(mode)
        y, back = conv2d_forward(x, w, b, padding=1)
        dx, (dw, db) = back(rand(*y.shape, seed=8))
        results[mode] = [host(a) for a in (y, dx, dw, db)]
    for got, want in zip(results[f"f{m}"], results["off"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)


def test_input_grad_false_skips_dx(backend):
    x, w = rand(1, 2, 5, 5), rand(3, 2, 3, 3, seed=1)
    y, back = conv2d_winograd_forward(x, w, None, (1, 1, 1, 1), 2)
    dx, (dw, db) = back(rand(*y.shape, seed=2), input_grad=False)
    assert dx is None and db is None and tuple(dw.shape) == (3, 2, 3, 3)


@pytest.mark.parametrize("m", [2, 4])
def test_gradcheck(backend, m):
    def fn(x, w, b):
        return conv2d_winograd_forward(x, w, b, (1, 0, 1, 2), m)

    assert nnx.gradcheck(fn, rand(2, 2, 5, 6, seed=1), rand(3, 2, 3, 3, seed=2), rand(3, seed=3))


#: Bounds on the float32 relative max error (max |err| / max |exact|) against float64, measured
#: at 64 channels (errors grow with the reduction length). Measured (max over y, dx, dW) on
#: NumPy/OpenBLAS and torch CPU: im2col 5.3e-7, F(2x2) 4.2e-7, F(4x4) 8.2e-6 (15x worse: why
#: the automatic rule never takes F(4x4)); see docs/cpu_performance.md. Bounds with ~2x headroom.
FLOAT32_BOUNDS = {"off": 1.2e-6, "f2": 1.2e-6, "f4": 2e-5}


def _rel_errors(mode: str) -> list[float]:
    winograd.MODE = mode
    x64, w64 = rand(2, 64, 12, 12, seed=1), rand(64, 64, 3, 3, seed=2, scale=0.1)
    dy64 = rand(2, 64, 12, 12, seed=3)
    y64, back64 = conv2d_forward(x64, w64, None, padding=1)
    exact = [host(y64), *map(host, _grads(back64(dy64)))]
    x32, w32, dy32 = (nnx.asarray(host(a), dtype="float32") for a in (x64, w64, dy64))
    y32, back32 = conv2d_forward(x32, w32, None, padding=1)
    approx = [host(y32), *map(host, _grads(back32(dy32)))]
    return [float(np.abs(a - e).max() / np.abs(e).max()) for a, e in zip(approx, exact, strict=True)]


def _grads(out):
    dx, (dw, _) = out
    return dx, dw


@pytest.mark.parametrize("mode", ["off", "f2", "f4"])
def test_float32_error_bounded_per_tile_size(backend, forced_mode, mode):
    """float32 y, dx, dW against the float64 result of the same path: bounded per tile size."""
    forced_mode(mode)
    errs = _rel_errors(mode)
    assert max(errs) < FLOAT32_BOUNDS[mode], f"{mode}: relative errors (y, dx, dW) = {errs}"


def test_applicable_rule(backend, forced_mode, monkeypatch):
    b = nnx.get_backend()
    big_x, big_w = Z((2, 64, 32, 32)), Z((64, 64, 3, 3))
    p1 = (1, 1, 1, 1)
    forced_mode("auto")
    # measured: F(4x4) only where the adapter has fused transforms (NumPy's host kernels), on
    # 32x32+ outputs from 16 channels, on 16x16+ outputs from 128 channels
    fast = 4 in b.fast_winograd_tiles()
    want = 4 if fast else 0
    assert applicable(b, big_x, big_w, (1, 1), (1, 1), 1, p1) == want
    assert applicable(b, Z((1, 16, 32, 32)), Z((16, 16, 3, 3)), (1, 1), (1, 1), 1, p1) == want
    assert applicable(b, Z((1, 16, 32, 32)), Z((8, 16, 3, 3)), (1, 1), (1, 1), 1, p1) == 0  # 8 out channels
    assert applicable(b, Z((2, 64, 30, 32)), big_w, (1, 1), (1, 1), 1, (0, 0, 1, 1)) == 0  # 28 rows out
    assert applicable(b, Z((2, 64, 16, 16)), big_w, (1, 1), (1, 1), 1, p1) == 0  # 16x16 at 64 channels
    assert applicable(b, Z((2, 128, 16, 16)), Z((128, 128, 3, 3)), (1, 1), (1, 1), 1, p1) == want
    assert applicable(b, Z((2, 128, 14, 14)), Z((128, 128, 3, 3)), (1, 1), (1, 1), 1, p1) == 0
    monkeypatch.setattr(winograd, "AUTO_TILE", 2)  # the accurate tile: the F(2x2)-only rule
    want2 = 2 if 2 in b.fast_winograd_tiles() else 0
    assert applicable(b, big_x, big_w, (1, 1), (1, 1), 1, p1) == want2
    assert applicable(b, Z((2, 32, 32, 32)), Z((32, 32, 3, 3)), (1, 1), (1, 1), 1, p1) == 0
    monkeypatch.setattr(winograd, "AUTO_TILE", 4)
    monkeypatch.setattr(winograd, "AUTO_MIN_CHANNELS", None)
    assert applicable(b, Z((16, 64, 32, 32)), big_w, (1, 1), (1, 1), 1, p1) == 0  # rule off
    monkeypatch.setattr(winograd, "AUTO_MIN_CHANNELS", 4)
    assert applicable(b, Z((2, 4, 32, 32)), Z((4, 4, 3, 3)), (1, 1), (1, 1), 1, p1) == want
    assert applicable(b, Z((2, 2, 32, 32)), Z((2, 2, 3, 3)), (1, 1), (1, 1), 1, p1) == 0
    assert applicable(b, big_x, big_w, (2, 2), (1, 1), 1, p1) == 0
    assert applicable(b, big_x, big_w, (1, 1), (2, 2), 1, p1) == 0
    assert applicable(b, big_x, Z((64, 64, 5, 5)), (1, 1), (1, 1), 1, p1) == 0
    assert applicable(b, big_x, big_w, (1, 1), (1, 1), 1, (3, 3, 3, 3)) == 0
    forced_mode("off")
    assert applicable(b, big_x, big_w, (1, 1), (1, 1), 1, p1) == 0
    forced_mode("f4")
    assert applicable(b, big_x, big_w, (1, 1), (1, 1), 1, p1) == 4
    forced_mode("f2")
    assert applicable(b, big_x, big_w, (1, 1), (1, 1), 1, p1) == 2


def test_bad_arguments_named():
    x, w = Z((1, 2, 5, 5)), Z((3, 2, 5, 5))
    with pytest.raises(ValueError, match="conv2d_winograd: expected a \\(O, C, 3, 3\\) weight"):
        conv2d_winograd_forward(x, w, None, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="output tile size"):
        conv2d_winograd_forward(x, Z((3, 2, 3, 3)), None, (1, 1, 1, 1), m=3)


def test_layer_uses_winograd_and_matches_torch(backend, torch, forced_mode):
    """A Conv2d layer through the dispatch (forced F(2x2)) trains like torch's."""
    forced_mode("f2")
    conv = nnx.Conv2d(4, 5, 3, padding=1, dtype="float64")
    tconv = torch.nn.Conv2d(4, 5, 3, padding=1, dtype=torch.float64)
    tconv.load_state_dict({k: torch.tensor(host(v)) for k, v in conv.state_dict().items()})
    x = rand(2, 4, 6, 6, seed=3)
    y = conv(x)
    dy = rand(*y.shape, seed=4)
    dx = conv.backward(dy)
    xt = torch.tensor(host(x), requires_grad=True)
    yt = tconv(xt)
    yt.backward(torch.tensor(host(dy)))
    np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(host(dx), xt.grad.numpy(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(host(conv.weight.grad), tconv.weight.grad.numpy(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("m", [2, 4])
def test_bit_identical_for_every_thread_count(forced_mode, monkeypatch, m):
    """NumPy: the transforms and the per-position GEMMs split over nnx's pool (thresholds off here)
    give the same bits at 1, 2 and 3 threads."""
    import nnx_backends.threads as T

    forced_mode(f"f{m}")
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(T, "MIN_SPLIT_MACS", 0)
    rng = np.random.default_rng(5)
    x, w, bias = (rng.standard_normal(s).astype(np.float32) for s in ((5, 6, 9, 10), (7, 6, 3, 3), (7,)))
    dy = rng.standard_normal((5, 7, 9, 10)).astype(np.float32)
    old = T._state["threads"]
    runs = []
    try:
        with nnx.use_backend("numpy"):
            for n in (1, 2, 3, 2):
                nnx.set_num_threads(n)
                y, back = conv2d_winograd_forward(x, w, bias, (1, 1, 1, 1), m)
                dx, (dw, db) = back(dy)
                runs.append((n, [np.asarray(a) for a in (y, dx, dw, db)]))
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())
    for n, got in runs[1:]:
        for name, a, want in zip(("y", "dx", "dW", "db"), got, runs[0][1], strict=True):
            assert np.array_equal(a, want), f"F({m}x{m}): {name} at {n} threads differs from 1 thread"
