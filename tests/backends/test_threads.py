"""nnx.set_num_threads / get_num_threads and the NumPy adapter's elementwise thread pool: every
fused kernel gives bit-identical results whatever the thread count, and agrees with the reference."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.threads as T
from nnx_backends import fused as F

from helpers import host


@pytest.fixture
def pool_always(monkeypatch):
    """Split every kernel (no single-thread threshold) and restore the thread setting afterwards."""
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(HK, "MIN_TASK_ELEMENTS", 0)
    old = T._state["threads"]
    yield
    nnx.set_num_threads(old if old is not None else T._default_threads())


def _data(shape, seed, b):
    return b.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _kernels(b):
    """Run every pooled kernel once on fixed float32 data; return the host results in order."""
    out = []
    x, bias = _data((7, 5, 33), 0, b), _data((33,), 1, b)
    for act in ("relu", "tanh", "sigmoid"):
        z, saved = b.bias_act_forward(x, bias, act)
        dz, db = b.bias_act_backward(_data((7, 5, 33), 2, b), saved, act)
        out += [host(z), host(dz), host(db)]
    gates, c_prev = _data((9, 4 * 6), 3, b), _data((9, 6), 4, b)
    h, c, act = b.lstm_cell_forward(gates, c_prev)
    d, dct = b.lstm_cell_backward(act, c_prev, _data((9, 6), 5, b), _data((9, 6), 6, b))
    out += [host(h), host(c), host(d), host(dct)]
    p, g, m, v, mx = (_data((11, 13), s, b) for s in range(7, 12))
    v, mx = v * v, mx * mx
    b.adam_update_(p, g, m, v, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, bias_correction1=0.1,
                   bias_correction2=0.01)
    b.adam_step_(p, g, m, v, mx, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=3, weight_decay=0.1)
    buf = _data((11, 13), 12, b)
    b.sgd_step_(p, g, buf, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    out += [host(a) for a in (p, m, v, mx, buf)]
    return out


def test_results_bit_identical_for_every_thread_count(backend, pool_always):
    b = nnx.get_backend()
    if not b.mutable:
        pytest.skip("the in-place *_step_ kernels are for mutable libraries; the thread pool is NumPy's")
    nnx.set_num_threads(1)
    one = _kernels(b)
    for n in (2, 3, 4):
        nnx.set_num_threads(n)
        first, second = _kernels(b), _kernels(b)
        for i, (a1, an, an2) in enumerate(zip(one, first, second, strict=True)):
            assert np.array_equal(an, an2), f"result {i}: two runs at {n} threads differ"
            assert np.array_equal(a1, an), f"result {i}: {n} threads differ from 1 thread"


def test_pooled_kernels_match_the_reference(pool_always):
    """The chunked NumPy kernels compute what the pure-standard reference computes."""
    with nnx.use_backend("numpy") as b:
        nnx.set_num_threads(3)
        x, bias, dy = _data((6, 40), 0, b), _data((40,), 1, b), _data((6, 40), 2, b)
        for act in ("relu", "tanh", "sigmoid"):
            z, saved = b.bias_act_forward(x, bias, act)
            zr, savedr = F.bias_act_forward(np, x, bias, act, b.erf)
            np.testing.assert_allclose(z, zr, rtol=1e-6, atol=1e-6)
            dz, db = b.bias_act_backward(dy, saved, act)
            np.testing.assert_allclose(dz, F.act_backward(np, dy, savedr, act, b.erf), rtol=1e-5, atol=1e-6)
        gates, c_prev = _data((5, 4 * 8), 3, b), _data((5, 8), 4, b)
        h, c, _ = b.lstm_cell_forward(gates, c_prev)
        hr, cr, _ = F.lstm_cell_forward(np, gates, c_prev)
        np.testing.assert_allclose(h, hr, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, cr, rtol=1e-5, atol=1e-6)


def test_kernels_write_through_to_non_contiguous_parameters(pool_always):
    """A non-contiguous parameter is updated in place (the single-thread fallback)."""
    with nnx.use_backend("numpy") as b:
        nnx.set_num_threads(2)
        base = np.ones((8, 8), dtype=np.float32)
        p = base[:, ::2]
        b.sgd_step_(p, np.ones_like(p), None, lr=0.5)
        assert np.all(base[:, ::2] == 0.5) and np.all(base[:, 1::2] == 1.0)


def test_set_num_threads_sets_blas_and_pool(pool_always):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl sets the BLAS threads")
    nnx.set_num_threads(2)
    assert nnx.get_num_threads() == 2
    blas = [d for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    assert blas and all(d["num_threads"] == 2 for d in blas)
    nnx.set_num_threads(1)
    assert nnx.get_num_threads() == 1
    assert all(d["num_threads"] == 1 for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="set_num_threads: expected a positive int"):
        nnx.set_num_threads(bad)


def test_worker_exception_propagates(pool_always):
    nnx.set_num_threads(2)
    seen = []

    def work(lo, hi):
        seen.append((lo, hi))
        if lo > 0:
            raise RuntimeError("boom in a worker")

    with pytest.raises(RuntimeError, match="boom in a worker"):
        T.parallel_rows(work, 10, 10)
    assert sorted(seen) == [(0, 5), (5, 10)]


def test_small_arrays_stay_on_one_thread(monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 100)
    old = T._state["threads"]
    try:
        nnx.set_num_threads(2)
        calls = []
        T.parallel_rows(lambda lo, hi: calls.append((lo, hi)), 10, 99)
        assert calls == [(0, 10)]
        calls.clear()
        T.parallel_rows(lambda lo, hi: calls.append((lo, hi)), 10, 100)
        assert sorted(calls) == [(0, 5), (5, 10)]
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())


def test_row_chunks_cover_the_rows():
    assert T.row_chunks(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert T.row_chunks(2, 4) == [(0, 1), (1, 2)]


# ------------------------------------------------------------ batched GEMMs split over the pool
SPLIT_SHAPES = [((6, 5, 7), (6, 7, 3)), ((5, 7), (9, 7, 4)), ((9, 5, 7), (7, 4)), ((3, 5, 7), (3, 7, 2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa,sb", SPLIT_SHAPES)
def test_split_matmul_is_numpy_matmul_at_every_thread_count(monkeypatch, sa, sb, dtype):
    """Every split of the batch gives numpy.matmul's result bit for bit: each product is the same
    one-thread GEMM whatever the chunk it falls in."""
    if T._openblas_functions() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS: split_matmul always takes numpy.matmul")
    monkeypatch.setattr(T, "MIN_SPLIT_MACS", 0)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    old = T._state["threads"]
    try:
        nnx.set_num_threads(1)
        with T.blas_one_thread():
            want = np.matmul(a, b)
        for n in (1, 2, 3):
            nnx.set_num_threads(n)
            got = T.split_matmul(a, b)
            assert got.shape == want.shape and got.dtype == want.dtype
            assert np.array_equal(got, want), f"{n} threads differ from one-thread numpy.matmul"
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())


def test_split_matmul_splits_and_restores_the_blas_threads(monkeypatch):
    if T._openblas_functions() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS: nothing to hold")
    monkeypatch.setattr(T, "MIN_SPLIT_MACS", 0)
    set_n, get_n = T._openblas_functions()
    seen = []
    real = T.parallel_rows

    def spy(fn, rows, n_elements):
        seen.append((rows, get_n()))
        return real(fn, rows, n_elements)

    monkeypatch.setattr(T, "parallel_rows", spy)
    old = T._state["threads"]
    try:
        nnx.set_num_threads(2)
        a = np.ones((4, 3, 5), np.float32)
        T.split_matmul(a, np.ones((4, 5, 2), np.float32))
        assert seen == [(4, 1)], "the batch goes to the pool with OpenBLAS held at one thread"
        assert get_n() == 2, "the BLAS thread count is restored afterwards"
        with pytest.raises(RuntimeError, match="inside"), T.blas_one_thread():
            raise RuntimeError("inside")
        assert get_n() == 2, "restored after an exception too"
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())


@pytest.mark.parametrize("sa,sb,why", [
    ((4, 3, 5), (4, 5, 2), "one thread"),
    ((2, 4, 3, 5), (2, 4, 5, 2), "4-d"),
    ((4, 3, 5), (2, 5, 2), "batch mismatch (numpy's own error)"),
    ((3, 5), (5, 2), "2-d"),
    ((1, 3, 5), (1, 5, 2), "batch under the thread count"),
])
def test_split_matmul_leaves_other_shapes_whole(monkeypatch, sa, sb, why):
    """Not split: computed by numpy.matmul on the calling thread (with OpenBLAS held at one thread
    when nnx has more: a 2-d product must not wake OpenBLAS's spinning workers either)."""
    monkeypatch.setattr(T, "MIN_SPLIT_MACS", 0)
    monkeypatch.setattr(T, "parallel_rows", lambda *a: pytest.fail(f"{why}: must not be split"))
    fns = T._openblas_functions()
    seen = []
    real = np.matmul

    def spy(x, y, **kw):
        seen.append(fns[1]() if fns else None)
        return real(x, y, **kw)

    old = T._state["threads"]
    try:
        nnx.set_num_threads(1 if why == "one thread" else 2)
        a, b = np.ones(sa, np.float32), np.ones(sb, np.float32)
        if why.startswith("batch mismatch"):
            with pytest.raises(ValueError):
                T.split_matmul(a, b)
            return
        want = np.matmul(a, b)
        monkeypatch.setattr(np, "matmul", spy)
        assert np.array_equal(T.split_matmul(a, b), want)
        if fns is not None and why in ("2-d", "batch under the thread count"):
            assert seen == [1], "OpenBLAS held at one thread around the product"
        monkeypatch.setattr(np, "matmul", real)
        ints = T.split_matmul(a.astype(np.int64), b.astype(np.int64))  # integer products: numpy's
        assert ints.dtype == np.int64 and np.array_equal(ints, want)
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pool_works_in_a_forked_child(pool_always):
    """A child forked after the parent used the pool has none of its threads; its first parallel
    pass must start a new pool instead of queueing work nobody runs (the child would hang)."""
    nnx.set_num_threads(2)
    T.parallel_rows(lambda lo, hi: None, 4, 4)  # the parent's pool exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the rows its two chunks covered, then exit at once
        try:
            seen = []
            T.parallel_rows(lambda lo, hi: seen.append((lo, hi)), 4, 4)
            os.write(write, repr(sorted(seen)).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's parallel pass hung")
    with os.fdopen(read) as f:
        assert f.read() == "[(0, 2), (2, 4)]"
