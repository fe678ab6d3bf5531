"""nnx's C thread pool (``host_pool.c``) and what runs on it: the GEMM convolution
(``nnx_gemm_conv_*``) against the pure-standard reference and PyTorch, the pool's products
(``threads.pool_matmul``) against ``numpy.matmul``, the recurrent time loops split by batch rows
against one thread; determinism per thread count, the pool's size and ``fork``."""

from __future__ import annotations

import os

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.numpy_recurrent as R
import nnx_backends.threads as T
from nnx.functional import _direct_conv, _gemm_conv
from nnx.functional.convolution import conv2d_forward
from nnx_backends.fused_api import FusedOps

pytestmark = pytest.mark.usefixtures("lib")


def _gemm_backend():
    b = nnx.get_backend()
    if not b.fast_gemm_conv():
        pytest.skip("NumPy's BLAS here is not an OpenBLAS whose cblas GEMM the kernels can call")
    return b


CONV_CASES = [  # n, c, h, w, o, kh, kw, (top, left), out
    (5, 6, 14, 14, 16, 5, 5, (0, 0), (10, 10)),
    (3, 4, 9, 7, 5, 3, 3, (1, 1), (9, 7)),
    (4, 5, 8, 6, 3, 3, 2, (2, 1), (9, 6)),   # asymmetric padding: bottom 0, right 0
    (1, 9, 5, 5, 11, 1, 3, (0, 1), (5, 5)),
    (17, 2, 4, 4, 3, 2, 2, (0, 0), (3, 3)),  # more samples than the weight-gradient blocks
    (3, 7, 5, 6, 9, 1, 1, (0, 0), (5, 6)),   # pointwise: x's planes are the columns themselves
    (2, 3, 4, 4, 5, 1, 1, (1, 1), (6, 6)),   # 1x1 with padding: the general path
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_gemm_conv_matches_the_reference_and_is_bit_identical_at_every_thread_count(threads, case, dtype):
    with nnx.use_backend("numpy"):
        b = _gemm_backend()
        n, c, h, w, o, kh, kw, pads, out = case
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((o, c, kh, kw)).astype(dtype)
        bias = rng.standard_normal(o).astype(dtype)
        dy = rng.standard_normal((n, o, *out)).astype(dtype)
        want_y = FusedOps.conv2d_gemm(b, x, wt, bias, pads, out)
        want_dx, want_dw = FusedOps.conv2d_gemm_backward(b, x, wt, dy, pads)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        first = None
        for t in (1, 2, 3):
            threads(t)
            y = b.conv2d_gemm(x, wt, bias, pads, out)
            dx, dw = b.conv2d_gemm_backward(x, wt, dy, pads)
            _, dw_only = b.conv2d_gemm_backward(x, wt, dy, pads, input_grad=False)
            for got, want in ((y, want_y), (dx, want_dx), (dw, want_dw), (dw_only, want_dw)):
                assert got.shape == want.shape and got.dtype == want.dtype
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
            if first is None:
                first = (y, dx, dw)
            for a, a1 in zip((y, dx, dw), first, strict=True):
                assert np.array_equal(a, a1), f"{t} threads differ from one"


def test_gemm_conv_falls_back_where_it_does_not_apply():
    with nnx.use_backend("numpy"):
        b = _gemm_backend()
        x = np.ones((2, 3, 5, 5), dtype=np.float32)
        w = np.ones((4, 3, 3, 3), dtype=np.float32)
        ref = FusedOps.conv2d_gemm(b, x, w, None, (1, 1), (5, 5))
        for xx, ww in ((x.astype(np.float16), w.astype(np.float16)), (x, w.astype(np.float64)),
                       (np.asfortranarray(x), w)):  # other dtypes, mixed dtypes, not C-contiguous
            got = b.conv2d_gemm(xx, ww, None, (1, 1), (5, 5))
            np.testing.assert_allclose(np.asarray(got, dtype=np.float32), ref, rtol=1e-3)
        assert not _gemm_conv.applicable(b, x, w, (1, 1), (1, 1), 1, (1, 1, -1, 1))  # negative padding
        assert not _gemm_conv.applicable(b, x, w, (2, 2), (1, 1), 1, (1, 1, 1, 1))
        assert not _gemm_conv.applicable(b, x, w, (1, 1), (2, 2), 1, (1, 1, 1, 1))
        assert _gemm_conv.applicable(b, x, w, (1, 1), (1, 1), 1, (1, 1, 1, 1))


@pytest.mark.parametrize("padding", [0, 2, "same"])
def test_conv2d_layer_on_the_gemm_path_matches_torch(threads, monkeypatch, padding):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle of this test")
    monkeypatch.setattr(_direct_conv, "MAX_TAPS", None)
    taken = []
    monkeypatch.setattr(_gemm_conv, "conv2d_gemm_forward",
                        lambda *a, real=_gemm_conv.conv2d_gemm_forward: taken.append(1) or real(*a))
    with nnx.use_backend("numpy"):
        _gemm_backend()
        threads(2)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((6, 3, 11, 9)).astype(np.float32)
        w = rng.standard_normal((7, 3, 5, 5)).astype(np.float32)
        bias = rng.standard_normal(7).astype(np.float32)
        y, back = conv2d_forward(nnx.asarray(x), nnx.asarray(w), nnx.asarray(bias), 1, padding)
        dy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
        dx, (dw, db) = back(nnx.asarray(dy))
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, bias))
        ty = torch.nn.functional.conv2d(tx, tw, tb, padding=padding)
        ty.backward(torch.tensor(dy))
        assert taken, "the GEMM path was not taken"
        for got, want in ((y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa,sb", [((40, 30), (30, 50)), ((50, 30), (30, 8)), ((6, 9, 7), (7, 5)),
                                   ((9, 7), (6, 7, 4)), ((5, 6, 7), (5, 7, 3))])
def test_pool_matmul_is_numpy_matmul(threads, sa, sb, dtype):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    want = np.matmul(a, b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for t in (2, 3):
        threads(t)
        turned = (np.asfortranarray(a) if a.ndim == 2 else a, np.asfortranarray(b) if b.ndim == 2 else b)
        for aa, bb in ((a, b), turned):  # row-major operands and transposed ones
            got = T.pool_matmul(aa, bb)
            if got is None:
                assert T.cblas_gemm() is None, "pool_matmul refused a product it takes"
                pytest.skip("NumPy's BLAS here is not an OpenBLAS the pool can call")
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
            assert np.array_equal(got, T.pool_matmul(aa, bb)), "two runs differ"
        out = np.full((*want.shape[:-1], want.shape[-1] + 3), np.nan, dtype=dtype)[..., :want.shape[-1]]
        assert T.pool_matmul(a, b, out) is out
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_pool_matmul_leaves_what_it_does_not_take(threads, own_gemm):
    threads(1)
    a = np.ones((64, 64), dtype=np.float32)
    own_gemm(False)  # nnx's GEMM, where on, takes float32 products on one thread too
    assert T.pool_matmul(a, a) is None  # one thread
    threads(2)
    assert T.pool_matmul(a.astype(np.int64), a.astype(np.int64)) is None
    assert T.pool_matmul(a, a.astype(np.float64)) is None
    assert T.pool_matmul(a, np.ones((63, 2), dtype=np.float32)) is None  # numpy's own error follows
    assert T.pool_matmul(a, a, np.empty((64, 64), dtype=np.float64)) is None
    assert T.pool_matmul(a, a, a) is None  # the output overlaps an operand


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_recurrent_time_loop_split_by_rows_matches_one_thread(threads, mode):
    with nnx.use_backend("numpy"):
        if T.cblas_gemm() is None:
            pytest.skip("the time loop in C needs NumPy's BLAS to be an OpenBLAS it can call")
        layer_cls = {"LSTM": nnx.LSTM, "GRU": nnx.GRU, "RNN": nnx.RNN}[mode]
        rng = np.random.default_rng(3)
        x = nnx.asarray(rng.standard_normal((6, 7, 5)).astype(np.float32))
        dy = nnx.asarray(rng.standard_normal((6, 7, 2 * 8)).astype(np.float32))
        results = {}
        for t in (1, 3, 3):
            threads(t)
            nnx.manual_seed(0)
            layer = layer_cls(5, 8, num_layers=2, bidirectional=True)
            y, _ = layer(x)
            dx = layer.backward(dy)
            got = [np.array(y), np.array(dx)] + [np.array(p.grad) for p in layer.parameters()]
            if t in results:
                assert all(np.array_equal(a, c) for a, c in zip(got, results[t], strict=True)), "two runs differ"
            results[t] = got
        for a, c in zip(results[3], results[1], strict=True):
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_pool_shrinks_with_the_thread_setting(threads):
    threads(3)
    x = np.random.default_rng(0).standard_normal((8, 4, 6, 6)).astype(np.float32)
    with nnx.use_backend("numpy") as b:
        b.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1), (0, 0), (3, 3))
        assert HK.kernels().pool_workers() == 2
        threads(1)
        assert HK.kernels().pool_workers() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_pool_works_in_a_forked_child(threads):
    threads(2)
    x = np.random.default_rng(0).standard_normal((8, 4, 6, 6)).astype(np.float32)
    with nnx.use_backend("numpy") as b:
        want, _ = b.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1), (0, 0), (3, 3))
        pid = os.fork()
        if pid == 0:  # the child: the parent's workers are gone; a fresh pool must start
            try:
                got, _ = b.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1), (0, 0), (3, 3))
                os._exit(0 if np.array_equal(got, want) else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_parts_stay_thick_on_many_threads(monkeypatch):
    """On many threads a product is cut into parts of at least MIN_POOL_SIDE columns (rows) and
    MIN_POOL_MACS / 2 multiply-adds, and a time loop into parts of at least MIN_SCAN_ROWS rows."""
    seen = []
    real = HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "run", lambda self, name, dt, words, rows, *a: seen.append((name, rows))
                        or real(self, name, dt, words, rows, *a))
    old = T._state["threads"]
    try:
        nnx.set_num_threads(8)
        rng = np.random.default_rng(4)
        a = rng.standard_normal((64, 1024)).astype(np.float32)
        b = rng.standard_normal((1024, 128)).astype(np.float32)
        got = T.pool_matmul(a, b)
        if got is None:
            assert T.cblas_gemm() is None
            pytest.skip("NumPy's BLAS here is not an OpenBLAS the pool can call")
        assert seen == [("gemm", 4)]  # 128 columns / 32, and 8.4M multiply-adds / 2.1M
        np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-3)
        assert R._scan_parts(64) == 4 and R._scan_parts(20) == 1 and R._scan_parts(1000) == 8
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 6, 28, 28), (3, 1, 5), (2, 5, 3, 4, 2), (7, 33, 1, 1)])
def test_channel_sum_matches_numpy_and_is_bit_identical_at_every_thread_count(threads, shape, dtype):
    """A convolution's bias gradient (``Backend.channel_sum``) on the C pool, split by channels."""
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    want = np.sum(x.astype(np.float64), axis=(0, *range(2, x.ndim)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    with nnx.use_backend("numpy") as b:
        got = {}
        for t in (1, 2, 3):
            threads(t)
            got[t] = b.channel_sum(x)
            assert got[t].dtype == dtype and got[t].shape == (shape[1],)
            np.testing.assert_allclose(got[t], want, rtol=tol, atol=tol * np.sqrt(x.size / shape[1]))
        assert np.array_equal(got[1], got[2]) and np.array_equal(got[1], got[3])
        turned = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)  # not C-contiguous: NumPy's sum
        np.testing.assert_allclose(b.channel_sum(turned), want, rtol=tol, atol=tol * np.sqrt(x.size / shape[1]))
        assert b.channel_sum(np.zeros((0, 4, 3, 3), dtype=dtype)).tolist() == [0.0] * 4
