"""The recurrent cell kernels of ``backends/host_kernels.c`` (LSTM, GRU) and the vectorised exp,
tanh and sigmoid inlined into them, against the float64 references of ``backends/fused.py`` and
long-double math.

The layers that run them (``nnx.LSTM``, ``nnx.GRU``, the cells) are held to PyTorch and to float64
gradcheck by ``tests/layers/test_recurrent.py``; here each kernel is checked alone: accuracy,
special values, the in-place layout of the time loop's shared buffer, row-strided inputs, thread
independence, and that what a kernel cannot take safely (a partly overlapping or read-only output,
mismatched rows) goes to the NumPy rows."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends.numpy_recurrent as NR
import nnx_backends.threads as T
from nnx_backends import fused as FU

DTYPES = ["float32", "float64"]
#: how far a kernel may be from the float64 reference: a few roundings of values of order 1
TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-14, atol=1e-14)}


@pytest.fixture
def adapter(lib, monkeypatch):
    """The NumPy adapter with its NumPy row functions made to fail: whatever passes ran the kernels."""
    def refuse(*args, **kwargs):
        raise AssertionError("the NumPy rows ran where the cell kernel should have")

    for name in ("lstm_forward_rows", "lstm_backward_rows", "gru_forward_rows", "gru_backward_rows"):
        monkeypatch.setattr(NR, name, refuse)
    with nnx.use_backend("numpy") as b:
        yield b


def _call(lib, name, x):
    y = np.empty_like(x)
    lib.fn(name, x.dtype)(x.ctypes.data, x.size, y.ctypes.data)
    return y


def _ulps(got, ref, dtype):
    """|got - ref| in units of the last place of ``ref`` rounded to ``dtype`` (ref in long double)."""
    ulp = np.spacing(np.abs(ref.astype(dtype))).astype(np.longdouble)
    return np.abs(got.astype(np.longdouble) - ref) / ulp


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_and_sigmoid_within_4_ulp_of_long_double(lib, dtype):
    if dtype == "float64" and np.finfo(np.longdouble).nmant < 60:
        pytest.skip("long double here is no wider than float64: no reference for float64's last bits")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000) * s for s in (1e-30, 1e-7, 1e-3, 0.1, 0.5, 1, 3, 10, 40)]
                       + [np.linspace(-20, 20, 40001), np.linspace(-90, 90, 400001)]).astype(dtype)
    lx = x.astype(np.longdouble)
    tiny = np.finfo(dtype).tiny
    for name, ref in (("nnx_tanh", np.tanh(lx)), ("nnx_sigmoid", 1 / (1 + np.exp(-lx)))):
        got = _call(lib, name, x)
        normal = np.abs(ref) >= tiny
        err = _ulps(got[normal], ref[normal], dtype)
        assert err.max() <= 4, f"{name} {dtype}: {err.max():.2f} ulp at x={x[normal][np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_and_sigmoid_special_values(lib, dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 800.0, -800.0], dtype=dtype)
    t = _call(lib, "nnx_tanh", x)
    np.testing.assert_array_equal(t, [0.0, -0.0, 1.0, -1.0, np.nan, 1.0, -1.0, 1.0, -1.0])
    assert np.signbit(t[1]) and not np.signbit(t[0])  # tanh(-0) = -0
    s = _call(lib, "nnx_sigmoid", x)
    np.testing.assert_array_equal(s[:6], [0.5, 0.5, 1.0, 0.0, np.nan, 1.0])
    assert np.all((s[[6, 8]] >= 0) & (s[[6, 8]] <= 2 * np.finfo(dtype).tiny))  # underflows to (about) 0
    assert s[7] == 1.0


def _lstm_inputs(rng, n, hid, dtype):
    gates = (rng.standard_normal((n, 4 * hid)) * 3).astype(dtype)
    c_prev = rng.standard_normal((n, hid)).astype(dtype)
    return gates, c_prev


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hid", [1, 7, 128])
@pytest.mark.parametrize("with_dc", [True, False])
def test_lstm_cell_kernels_match_reference(adapter, dtype, hid, with_dc):
    rng = np.random.default_rng(hid)
    gates, c_prev = _lstm_inputs(rng, 19, hid, dtype)
    dh = rng.standard_normal((19, hid)).astype(dtype)
    dc = rng.standard_normal((19, hid)).astype(dtype) if with_dc else None
    h, c, act = adapter.lstm_cell_forward(gates, c_prev)
    rh, rc, ract = FU.lstm_cell_forward(np, gates.astype(np.float64), c_prev.astype(np.float64))
    for got, ref in ((h, rh), (c, rc), (act, ract)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **TOL[dtype])
    d, dcp = adapter.lstm_cell_backward(act, c_prev, dh, dc)
    rd, rdcp = FU.lstm_cell_backward(np, act.astype(np.float64), c_prev.astype(np.float64),
                                     dh.astype(np.float64), None if dc is None else dc.astype(np.float64))
    np.testing.assert_allclose(d, rd, **TOL[dtype])
    np.testing.assert_allclose(dcp, rdcp, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_cell_kernels_in_the_time_loops_shared_buffer(adapter, dtype):
    """The time loop's layout: the gates are a row-strided view of a (N, 5H) buffer, the step's
    activations are written over them (out= the buffer) and the gate gradients over those."""
    rng = np.random.default_rng(4)
    n, hid = 16, 9
    gates, c_prev = _lstm_inputs(rng, n, hid, dtype)
    dh, dc = (rng.standard_normal((n, hid)).astype(dtype) for _ in range(2))
    h, c, act = adapter.lstm_cell_forward(gates, c_prev)
    d, dcp = adapter.lstm_cell_backward(act, c_prev, dh, dc)
    buf = np.full((n, 5 * hid), np.nan, dtype=dtype)
    buf[:, :4 * hid] = gates
    h2, c2, act2 = adapter.lstm_cell_forward(buf[:, :4 * hid], c_prev, out=buf)
    assert act2 is buf
    for got, ref in ((h2, h), (c2, c), (act2, act)):
        np.testing.assert_array_equal(got, ref)
    d2, dcp2 = adapter.lstm_cell_backward(buf, c_prev, dh, dc, out=buf[:, :4 * hid])
    assert np.shares_memory(d2, buf)
    np.testing.assert_array_equal(d2, d)
    np.testing.assert_array_equal(dcp2, dcp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_cell_kernel_propagates_nan_and_saturates(adapter, dtype):
    rng = np.random.default_rng(5)
    gates, c_prev = _lstm_inputs(rng, 3, 4, dtype)
    gates[0, 0] = np.nan            # input gate of unit 0, row 0
    gates[1, 2 * 4 + 1] = np.inf    # candidate of unit 1, row 1: tanh = 1
    gates[2, 4 + 2] = -1e30         # forget gate of unit 2, row 2: sigmoid = 0, forgets c_prev
    h, c, act = adapter.lstm_cell_forward(gates, c_prev)
    assert np.isnan(h[0, 0]) and np.isnan(c[0, 0]) and np.isfinite(np.delete(h[0], 0)).all()
    assert act[1, 2 * 4 + 1] == 1.0
    assert act[2, 4 + 2] == 0.0 and c[2, 2] == act[2, 2] * act[2, 2 * 4 + 2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hid", [1, 7, 64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gru_cell_kernels_match_reference(adapter, dtype, hid, with_bias):
    rng = np.random.default_rng(hid + 1)
    n = 13
    gx, gh = ((rng.standard_normal((n, 3 * hid)) * 2).astype(dtype) for _ in range(2))
    h_prev, dh = (rng.standard_normal((n, hid)).astype(dtype) for _ in range(2))
    b_hn = rng.standard_normal(hid).astype(dtype) if with_bias else None
    h, act = adapter.gru_cell_forward(gx, gh, h_prev, b_hn)
    f64 = (lambda a: None if a is None else a.astype(np.float64))
    rh, ract = FU.gru_cell_forward(np, f64(gx), f64(gh), f64(h_prev), f64(b_hn))
    np.testing.assert_allclose(h, rh, **TOL[dtype])
    np.testing.assert_allclose(act, ract, **TOL[dtype])
    dgx, dgh, dhd = adapter.gru_cell_backward(act, h_prev, dh)
    for got, ref in zip((dgx, dgh, dhd), FU.gru_cell_backward(np, f64(act), f64(h_prev), f64(dh)), strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_cell_kernels_in_the_time_loops_shared_buffer(adapter, dtype):
    """As the LSTM's: gx a row-strided view of a (N, 4H) buffer, the activations written over it,
    the input-side gate gradients over those, the recurrent-side ones into their own buffer."""
    rng = np.random.default_rng(8)
    n, hid = 10, 5
    gx, gh = ((rng.standard_normal((n, 3 * hid)) * 2).astype(dtype) for _ in range(2))
    h_prev, dh = (rng.standard_normal((n, hid)).astype(dtype) for _ in range(2))
    b_hn = rng.standard_normal(hid).astype(dtype)
    h, act = adapter.gru_cell_forward(gx, gh, h_prev, b_hn)
    dgx, dgh, dhd = adapter.gru_cell_backward(act, h_prev, dh)
    buf = np.full((n, 4 * hid), np.nan, dtype=dtype)
    buf[:, :3 * hid] = gx
    h2, act2 = adapter.gru_cell_forward(buf[:, :3 * hid], gh, h_prev, b_hn, out=buf)
    assert act2 is buf
    np.testing.assert_array_equal(h2, h)
    np.testing.assert_array_equal(act2, act)
    gh_buf = np.empty((n, 3 * hid), dtype=dtype)
    dgx2, dgh2, dhd2 = adapter.gru_cell_backward(buf, h_prev, dh, out=buf[:, :3 * hid], out_gh=gh_buf)
    assert np.shares_memory(dgx2, buf) and dgh2 is gh_buf
    for got, ref in ((dgx2, dgx), (dgh2, dgh), (dhd2, dhd)):
        np.testing.assert_array_equal(got, ref)


def test_cell_kernels_thread_independent(adapter, monkeypatch):
    """Rows split over nnx's pool compute exactly what one call computes."""
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    rng = np.random.default_rng(9)
    gates, c_prev = _lstm_inputs(rng, 37, 33, "float32")
    dh = rng.standard_normal((37, 33)).astype(np.float32)
    old = T._state["threads"]
    try:
        outs = []
        for n in (1, 2, 3):
            nnx.set_num_threads(n)
            h, c, act = adapter.lstm_cell_forward(gates, c_prev)
            outs.append((h, c, act, *adapter.lstm_cell_backward(act, c_prev, dh, None)))
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_what_a_cell_kernel_cannot_take_goes_to_the_numpy_rows(lib):
    """A partly overlapping or read-only out=, mixed dtypes and mismatched rows never reach a kernel
    (it would read what it already wrote, or past an array's end)."""
    rng = np.random.default_rng(10)
    n, hid = 6, 4
    gates, c_prev = _lstm_inputs(rng, n, hid, "float32")
    ref = FU.lstm_cell_forward(np, gates, c_prev)
    with nnx.use_backend("numpy") as b:
        # out= the gates' buffer shifted by one row: row r of the activations lands on row r+1 of the gates
        buf = np.zeros((n + 1, 5 * hid), np.float32)
        buf[:n, :4 * hid] = gates
        h, c, act = b.lstm_cell_forward(buf[:n, :4 * hid], c_prev, out=buf[1:])
        np.testing.assert_allclose(h, ref[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(act, ref[2], rtol=1e-6, atol=1e-6)
        shifted, g_view = buf[1:], buf[:n, :4 * hid]
        assert NR._cell_kernel("nnx_lstm_fwd", (g_view, c_prev, shifted, h, c), (4 * hid, hid, 5 * hid, hid, hid),
                               (shifted,), in_place=((shifted, g_view),)) is None
        ro = np.empty((n, 5 * hid), np.float32)
        ro.flags.writeable = False
        assert NR._cell_kernel("nnx_lstm_fwd", (gates, c_prev, ro, h, c), (4 * hid, hid, 5 * hid, hid, hid),
                               (ro,)) is None
        assert NR._cell_kernel("nnx_lstm_fwd", (gates, c_prev.astype(np.float64), act, h, c),
                               (4 * hid, hid, 5 * hid, hid, hid), (act,)) is None
        assert NR._cell_kernel("nnx_lstm_fwd", (gates, c_prev[:-1], act, h, c),
                               (4 * hid, hid, 5 * hid, hid, hid), (act,)) is None
        assert NR._cell_kernel("nnx_lstm_fwd", (gates, c_prev, act, h, c),
                               (4 * hid, hid, 5 * hid, hid, hid), (act,)) is not None
        with pytest.raises(ValueError):
            b.lstm_cell_forward(gates, c_prev[:-1])  # the rows' own error, not a read past the end


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_sigmoid_activation_runs_the_kernel(lib, dtype, with_bias, monkeypatch):
    """The Sigmoid layer on NumPy takes the adapter's fused path (one kernel pass, not NumPy's three),
    with or without a bias, in place or not."""
    import nnx_backends.numpy_fused as NF

    monkeypatch.setattr(NF, "_sigmoid_", lambda z: (_ for _ in ()).throw(AssertionError("NumPy passes ran")))
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((33, 17)) * 5).astype(dtype)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    bias = rng.standard_normal(17).astype(dtype) if with_bias else None
    ref = FU.bias_act_forward(np, x.astype(np.float64), None if bias is None else bias.astype(np.float64),
                              "sigmoid")[0]
    with nnx.use_backend("numpy") as b:
        assert "sigmoid" in b.fast_activations()
        y, _ = b.bias_act_forward(x, bias, "sigmoid")
        np.testing.assert_allclose(y, ref, **TOL[dtype])
        assert np.isnan(y[0, 0])
        buf = x.copy()
        y2, _ = b.bias_act_forward(buf, bias, "sigmoid", out=buf)
        assert y2 is buf
        np.testing.assert_array_equal(y2, y)
        layer_y = nnx.Sigmoid()(nnx.asarray(x, dtype=dtype))
    if bias is None:
        np.testing.assert_array_equal(layer_y, y)
