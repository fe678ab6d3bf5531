"""nnx's own float32 GEMM (``host_gemm.c``): the kernel against a float64 product over every edge of
its tiling (rows mod 8, columns mod 32, depth over several blocks), both transposes, beta 0, 1 and
other, strided operands; that a product does not depend on how its rows or columns are cut (the
pool's parts, bit for bit); the kernels that call it (recurrent time loops, GEMM and Winograd
convolutions) with it on against BLAS; the rule that turns it on (``NNX_GEMM``, OpenBLAS's core)."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.threads as T

pytestmark = pytest.mark.usefixtures("lib")


@pytest.fixture
def sgemm(lib):
    """``sgemm(a, b, ta, tb, beta, c)``: ``c = op(a) op(b) + beta c`` by nnx's kernel (a new ``c``
    where None); skips where the kernel is not built."""
    if not lib.own_gemm_available:
        pytest.skip("nnx's GEMM is not built here (the compiler does not target AVX-512 on this CPU)")

    def run(a, b, ta=0, tb=0, beta=0.0, c=None):
        m, k = (a.shape[1], a.shape[0]) if ta else a.shape
        n = b.shape[0] if tb else b.shape[1]
        if c is None:
            c = np.empty((m, n), dtype=np.float32)
        assert lib.sgemm(ta, tb, m, n, k, a.ctypes.data, a.strides[0] // 4, b.ctypes.data, b.strides[0] // 4,
                         beta, c.ctypes.data, c.strides[0] // 4) == 1
        return c

    return run


def _operand(rng, rows, cols, transposed, pad):
    """A float32 ``(rows, cols)`` operand as the kernel reads it: stored transposed where asked,
    rows ``pad`` elements longer than needed (a view into a wider array)."""
    shape = (cols, rows) if transposed else (rows, cols)
    wide = rng.standard_normal((shape[0], shape[1] + pad)).astype(np.float32)
    return wide[:, :shape[1]]


SHAPES = [(1, 1, 1), (8, 32, 1), (7, 31, 3), (9, 33, 17), (16, 16, 256), (15, 47, 257), (64, 512, 128),
          (33, 65, 513), (129, 161, 300), (20, 17, 1100), (3, 2050, 5), (2, 3, 0)]


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
def test_sgemm_matches_a_float64_product(sgemm, m, n, k, ta, tb):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = _operand(rng, m, k, ta, pad=3)
    b = _operand(rng, k, n, tb, pad=5)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    tol = 4e-6 * np.sqrt(k + 1) * 4
    c_wide = np.full((m, n + 7), np.nan, dtype=np.float32)  # beta 0 never reads C: NaN must not leak
    got = sgemm(a, b, ta, tb, 0.0, c_wide[:, :n])
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert np.isnan(c_wide[:, n:]).all(), "wrote past the columns of C"
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    for beta in (1.0, -0.5):
        np.testing.assert_allclose(sgemm(a, b, ta, tb, beta, c0.copy()), want + beta * c0.astype(np.float64),
                                   rtol=tol, atol=tol)


def test_sgemm_results_do_not_depend_on_how_the_product_is_cut(sgemm):
    """Each element is the same sum in the same order whichever block of rows or columns it is
    computed in: the pool's parts agree with the whole product bit for bit."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((70, 600)).astype(np.float32)
    b = rng.standard_normal((600, 90)).astype(np.float32)
    whole = sgemm(a, b)
    rows = np.concatenate([sgemm(a[lo:hi], b) for lo, hi in ((0, 13), (13, 41), (41, 70))])
    cols = np.concatenate([sgemm(a, np.ascontiguousarray(b[:, lo:hi])) for lo, hi in ((0, 7), (7, 50), (50, 90))],
                          axis=1)
    assert np.array_equal(whole, rows)
    assert np.array_equal(whole, cols)
    assert np.array_equal(whole, sgemm(a, b)), "two runs differ"


@pytest.mark.parametrize("sa,sb", [((40, 300), (300, 50)), ((200, 30), (30, 8)), ((6, 90, 70), (70, 50))])
def test_pool_matmul_on_nnx_gemm_is_bit_identical_at_every_thread_count(threads, own_gemm, sa, sb):
    own_gemm(True)
    if T.cblas_gemm() is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS the pool can call")
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    got = {}
    for t in (1, 2, 3):
        threads(t)
        got[t] = T.pool_matmul(a, b)
        assert got[t] is not None, f"nnx's GEMM did not take a float32 product at {t} thread(s)"
        np.testing.assert_allclose(got[t], want, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got[1], got[2]) and np.array_equal(got[1], got[3])


def _run_layer(layer_cls, x, dy, **kw):
    nnx.manual_seed(0)
    layer = layer_cls(x.shape[-1], dy.shape[-1] // 2, **kw)
    y, _ = layer(nnx.asarray(x))
    dx = layer.backward(nnx.asarray(dy))
    return [np.array(y), np.array(dx)] + [np.array(p.grad) for p in layer.parameters()]


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_recurrent_time_loops_on_nnx_gemm_match_blas(threads, own_gemm, mode, n_threads):
    """The scans multiply by a W_hh packed once per sequence (nnx_own_pack): forward, backward and
    every weight gradient as with BLAS's products, for row counts that are no multiple of 8 and a
    hidden size whose gates (4H, 3H) span two depth blocks of the packed W_hh in the backward."""
    with nnx.use_backend("numpy"):
        if T.cblas_gemm() is None:
            pytest.skip("the time loop in C needs NumPy's BLAS to be an OpenBLAS it can call")
        threads(n_threads)
        layer_cls = {"LSTM": nnx.LSTM, "GRU": nnx.GRU, "RNN": nnx.RNN}[mode]
        rng = np.random.default_rng(3)
        x = rng.standard_normal((6, 21, 13)).astype(np.float32)
        dy = rng.standard_normal((6, 21, 2 * 180)).astype(np.float32)
        own_gemm(False)
        ref = _run_layer(layer_cls, x, dy, num_layers=2, bidirectional=True)
        own_gemm(True)
        got = _run_layer(layer_cls, x, dy, num_layers=2, bidirectional=True)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5)
        assert all(np.array_equal(a, b) for a, b in zip(
            got, _run_layer(layer_cls, x, dy, num_layers=2, bidirectional=True), strict=True)), "two runs differ"


@pytest.mark.parametrize("channels,size", [(16, 12), (64, 8)])  # GEMM convolution, Winograd
def test_convolutions_on_nnx_gemm_match_blas(own_gemm, channels, size):
    with nnx.use_backend("numpy"):
        rng = np.random.default_rng(4)
        x = rng.standard_normal((3, channels, size, size)).astype(np.float32)
        dy = rng.standard_normal((3, channels, size, size)).astype(np.float32)

        def run():
            nnx.manual_seed(0)
            conv = nnx.Conv2d(channels, channels, 3, padding=1)
            y = conv(nnx.asarray(x))
            dx = conv.backward(nnx.asarray(dy))
            return [np.array(y), np.array(dx), np.array(conv.weight.grad), np.array(conv.bias.grad)]

        own_gemm(False)
        ref = run()
        own_gemm(True)
        for g, r in zip(run(), ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


class _Controller:
    def __init__(self, cores):
        self.cores = cores

    def select(self, **_):
        return self

    def info(self):
        return [{"architecture": c} for c in self.cores]


@pytest.mark.parametrize("env,cores,want", [
    ("", ["Haswell"], True), ("auto", ["Zen"], True), ("", ["SkylakeX"], False), ("", ["Cooperlake"], False),
    ("", [], False), ("", ["Haswell", "SkylakeX"], False), ("nnx", ["SkylakeX"], True), ("blas", ["Haswell"], False),
    (" NNX ", ["SkylakeX"], True)])
def test_own_gemm_rule(monkeypatch, env, cores, want):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setenv(HK.GEMM_ENV, env)
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", lambda: _Controller(cores))
    on, why = HK.own_gemm_wanted(True)
    assert on is want, why
    assert HK.own_gemm_wanted(False)[0] is False  # not built: never


def test_own_gemm_setting_is_checked(monkeypatch):
    monkeypatch.setenv(HK.GEMM_ENV, "mkl")
    with pytest.raises(ValueError, match="NNX_GEMM must be 'auto', 'nnx' or 'blas', got 'mkl'"):
        HK.own_gemm_wanted(True)


def test_own_gemm_switch(lib, own_gemm):
    own_gemm(False)
    assert lib.own_gemm is False
    own_gemm(True)
    assert lib.own_gemm is True
    assert lib.set_own_gemm(False) is True and lib.own_gemm is False
