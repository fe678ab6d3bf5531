"""The recurrent time loops of ``backends/host_kernels.c`` (``Backend.recurrent_scan``): a whole
direction of an RNN, LSTM or GRU layer in one call, its products through NumPy's own OpenBLAS
(``threads.cblas_gemm``), its weight gradients one product over ``[x | 1 | h_prev]``.

The reference is ``nnx/functional/recurrent.py``'s loop of per-step adapter kernels, run here on
the same layer with the scan turned off: outputs, final states, input, state and weight gradients
must agree for every cell, direction, depth, dtype and gradient pattern. The layers are held to
PyTorch and to a float64 gradcheck by ``tests/layers/test_recurrent.py``, which on the NumPy
backend now run through the scan."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import nnx
import nnx_backends.numpy_recurrent as NR
import nnx_backends.threads as T

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
CELLS = [("LSTM", {}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})]


@pytest.fixture(autouse=True)
def _scan_available(lib):
    if T.cblas_gemm() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose cblas_?gemm the time loops can call")
    with nnx.use_backend("numpy"):
        yield


@contextlib.contextmanager
def _scan(on: bool):
    """Run the block with the adapter's time loop on (counting its calls) or off (the step loop)."""
    calls = {"forward": 0, "backward": 0}
    cls = NR.NumpyRecurrentCells
    saved = cls.recurrent_scan, cls.recurrent_scan_forward, cls.recurrent_scan_backward

    def forward(self, *args):
        calls["forward"] += 1
        return saved[1](self, *args)

    def backward(self, *args):
        calls["backward"] += 1
        return saved[2](self, *args)

    cls.recurrent_scan_forward, cls.recurrent_scan_backward = forward, backward
    if not on:
        cls.recurrent_scan = lambda self, *args: False
    try:
        yield calls
    finally:
        cls.recurrent_scan, cls.recurrent_scan_forward, cls.recurrent_scan_backward = saved


def _pattern(shape, dtype, phase):
    return np.cos(np.arange(int(np.prod(shape))) * 0.37 + phase).reshape(shape).astype(dtype)


def _train_twice(name, kw, dtype, x, hx, grads_of):
    """Forward and backward twice (the second reuses the workspace's buffers); everything the
    second pass produced, flattened."""
    nnx.manual_seed(0)
    m = getattr(nnx, name)(**kw)
    if dtype == np.float64:
        m = m.double()
    for _ in range(2):
        m.zero_grad()
        y, state = m(x, hx) if hx is not None else m(x)
        states = state if isinstance(state, tuple) else (state,)
        dy = _pattern(y.shape, dtype, 0.0) if "output" in grads_of else None
        dst = [_pattern(s.shape, dtype, 1.0 + k) if f"state{k}" in grads_of else None for k, s in enumerate(states)]
        dx = m.backward(dy, *dst)
    flat = [y, *states]
    flat += list(dx[:1]) + list(dx[1]) if isinstance(dx, tuple) and isinstance(dx[1], tuple) else \
        list(dx) if isinstance(dx, tuple) else [dx]
    flat += [p.grad for p in m.parameters()]
    return flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,extra", CELLS)
@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 1), (False, 2), (True, 2)])
@pytest.mark.parametrize("given_hx", [False, True])
def test_scan_matches_the_step_loop(name, extra, bidirectional, layers, given_hx, dtype):
    rng = np.random.default_rng(3)
    kw = dict(input_size=5, hidden_size=7, num_layers=layers, bidirectional=bidirectional, **extra)
    x = rng.standard_normal((6, 3, 5)).astype(dtype)
    hx = None
    if given_hx:
        h = rng.standard_normal(((2 if bidirectional else 1) * layers, 3, 7)).astype(dtype)
        hx = (h, 0.5 * h[::-1].copy()) if name == "LSTM" else h
    grads_of = ("output", "state0", "state1")
    with _scan(True) as calls:
        got = _train_twice(name, kw, dtype, x, hx, grads_of)
    assert calls["forward"] == calls["backward"] == 2 * layers * (2 if bidirectional else 1)
    with _scan(False) as calls:
        want = _train_twice(name, kw, dtype, x, hx, grads_of)
    assert calls["forward"] == 0
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL[dtype])


@pytest.mark.parametrize("name,extra", CELLS)
@pytest.mark.parametrize("grads_of", [("output",), ("state0",), ("state1",), ("output", "state1")])
def test_each_gradient_alone_and_no_bias(name, extra, grads_of):
    """Only the output's, only h_n's, only c_n's gradient (the time loop's absent dout / dh_n / dc_n);
    without biases (no ones column in ``[x | 1 | h]``); batch-first; a batch and a sequence of one."""
    if "state1" in grads_of and name != "LSTM":
        grads_of = tuple(g for g in grads_of if g != "state1") or ("state0",)
    rng = np.random.default_rng(4)
    for shape, kw in (((4, 5, 3), dict(bias=False)), ((1, 1, 3), {}), ((5, 4, 3), dict(batch_first=True))):
        kw = dict(input_size=3, hidden_size=9, **extra, **kw)
        x = rng.standard_normal(shape).astype(np.float32)
        with _scan(True) as calls:
            got = _train_twice(name, kw, np.float32, x, None, grads_of)
        assert calls["forward"] == 2
        with _scan(False):
            want = _train_twice(name, kw, np.float32, x, None, grads_of)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, **TOL[np.float32])


def test_weight_gradients_are_separate_contiguous_arrays():
    """The joint product's gradients are copied out: each parameter's gradient is its own array (an
    in-place update of one, e.g. ``p.grad *= s``, must not touch another), on both paths."""
    x = np.ones((3, 2, 4), np.float32)
    for on in (True, False):
        with _scan(on):
            m = nnx.LSTM(4, 6)
            _, (h, c) = m(x)
            m.backward(None, h, c)
        grads = [p.grad for p in m.parameters()]
        assert all(g.flags.c_contiguous for g in grads)
        assert not any(np.shares_memory(a, b) for i, a in enumerate(grads) for b in grads[i + 1:])


def test_bit_identical_between_runs():
    x = np.random.default_rng(5).standard_normal((8, 16, 12)).astype(np.float32)
    runs = []
    for _ in range(2):
        with _scan(True):
            runs.append(_train_twice("LSTM", dict(input_size=12, hidden_size=32), np.float32, x, None, ("output",)))
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a, b)


def test_what_the_scan_does_not_take_runs_the_step_loop(monkeypatch):
    """Variable lengths, projections, float16 and a NumPy whose BLAS cannot be called take the
    step loop; results stay those of the loop."""
    x = np.random.default_rng(6).standard_normal((5, 3, 4)).astype(np.float32)
    with _scan(True) as calls:
        m = nnx.LSTM(4, 6)
        m(x, lengths=[5, 3, 2])
        nnx.LSTM(4, 6, proj_size=3)(x)
        nnx.GRU(4, 6).to(dtype="float16")(x.astype(np.float16))
    assert calls["forward"] == 0
    monkeypatch.setattr(T, "cblas_gemm", lambda: None)
    with _scan(True) as calls:
        nnx.manual_seed(0)
        y, _ = nnx.LSTM(4, 6)(x)
    assert calls["forward"] == 0
    monkeypatch.undo()
    with _scan(True) as calls:
        nnx.manual_seed(0)
        y2, _ = nnx.LSTM(4, 6)(x)
    assert calls["forward"] == 1
    np.testing.assert_allclose(y, y2, **TOL[np.float32])


def test_cblas_gemm_is_numpys_openblas():
    """The pointers are NumPy's OpenBLAS's, with its integer width: a product through them equals
    np.matmul's (exercised via a one-step RNN with zero input weights: h' = tanh(h0 W_hh^T + b))."""
    sgemm, dgemm, ilp64 = T.cblas_gemm()
    assert sgemm and dgemm and sgemm != dgemm
    import ctypes
    lib = T._numpy_openblas()
    config = T._symbol(lib, ("scipy_openblas_get_config64_", "scipy_openblas_get_config", "openblas_get_config64_",
                             "openblas_get_config"))
    config.restype = ctypes.c_char_p
    assert ilp64 == (b"USE64BITINT" in config().split())
    rng = np.random.default_rng(7)
    m = nnx.RNN(3, 70).double()
    m.weight_ih_l0.data[...] = 0.0
    h0 = rng.standard_normal((1, 33, 70))
    with _scan(True) as calls:
        y, _ = m(np.zeros((1, 33, 3)), h0)
    assert calls["forward"] == 1
    want = np.tanh(h0[0] @ m.weight_hh_l0.data.T + m.bias_ih_l0.data + m.bias_hh_l0.data)
    np.testing.assert_allclose(y[0], want, rtol=1e-13, atol=1e-14)
