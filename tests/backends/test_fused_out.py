"""The ``out=`` destinations of the recurrent cell kernels and bias + activation, on every mutable
backend, for the adapter's method and the pure-standard fallback (``FusedOps``).

The recurrent time loop passes ``out`` on mutable host-memory libraries: a strided view of its
shared per-step buffer that aliases the kernel's own input (the forward's ``gx`` / ``gates``, the
backward's saved activations). Each kernel must read its inputs before it writes ``out``; the
results must equal those without ``out`` and land in ``out``.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx_backends.fused_api import FusedOps

DT = ["float32", "float64"]
N, H = 3, 4


def tol(dt):
    return {"rtol": 2e-5, "atol": 2e-6} if dt == "float32" else {"rtol": 1e-12, "atol": 1e-13}


def host(b, x):
    return np.asarray(b.to_numpy(x))


def close(b, got, want, dt):
    np.testing.assert_allclose(host(b, got), host(b, want) if not isinstance(want, np.ndarray) else want, **tol(dt))


def kernels(b):
    """The adapter's methods and the fallback's, as ``(name, callable)``."""
    return [("adapter", lambda name, *a, **kw: getattr(b, name)(*a, **kw)),
            ("fallback", lambda name, *a, **kw: getattr(FusedOps, name)(b, *a, **kw))]


def mutable_only(b):
    if not b.mutable:
        pytest.skip(f"{b.name}: immutable arrays; the time loop passes out= on mutable libraries only")


def wide(b, r, cols, extra, dt):
    """A ``(N, cols + extra)`` buffer of random values: its first ``cols`` columns are a strided view."""
    return nnx.asarray(r.standard_normal((N, cols + extra)), dt)


@pytest.mark.parametrize("dt", DT)
def test_lstm_cell_out_aliasing_inputs(backend, dt):
    mutable_only(backend)
    r = np.random.default_rng(0)
    c_prev, dh, dc = (nnx.asarray(r.standard_normal((N, H)), dt) for _ in range(3))
    for _label, k in kernels(backend):
        buf = wide(backend, r, 5 * H, 0, dt)  # shared step: the gates in its first 4H columns
        gates = nnx.asarray(host(backend, buf)[:, :4 * H], dt)
        h0, c0, act0 = k("lstm_cell_forward", gates, c_prev)
        h, c, act = k("lstm_cell_forward", buf[:, :4 * H], c_prev, out=buf)
        for got, want in ((h, h0), (c, c0), (act, act0), (buf, act0)):
            close(backend, got, want, dt)
        d0, dcp0 = k("lstm_cell_backward", act0, c_prev, dh, dc)
        d, dcp = k("lstm_cell_backward", buf, c_prev, dh, dc, out=buf[:, :4 * H])  # gradients over i, f, g, o
        for got, want in ((d, d0), (dcp, dcp0), (buf[:, :4 * H], d0), (buf[:, 4 * H:], act0[:, 4 * H:])):
            close(backend, got, want, dt)


@pytest.mark.parametrize("dt", DT)
def test_gru_cell_out_aliasing_inputs(backend, dt):
    mutable_only(backend)
    r = np.random.default_rng(1)
    gh = nnx.asarray(r.standard_normal((N, 3 * H)), dt)
    h_prev, dh = (nnx.asarray(r.standard_normal((N, H)), dt) for _ in range(2))
    b_hn = nnx.asarray(r.standard_normal(H), dt)
    for _label, k in kernels(backend):
        buf = wide(backend, r, 4 * H, 0, dt)  # shared step: gx in its first 3H columns
        gx = nnx.asarray(host(backend, buf)[:, :3 * H], dt)
        h0, act0 = k("gru_cell_forward", gx, gh, h_prev, b_hn)
        h, act = k("gru_cell_forward", buf[:, :3 * H], gh, h_prev, b_hn, out=buf)
        for got, want in ((h, h0), (act, act0), (buf, act0)):
            close(backend, got, want, dt)
        dgx0, dgh0, dd0 = k("gru_cell_backward", act0, h_prev, dh)
        gh_buf = wide(backend, r, 3 * H, 2, dt)
        dgx, dgh, dd = k("gru_cell_backward", buf, h_prev, dh, out=buf[:, :3 * H], out_gh=gh_buf[:, :3 * H])
        for got, want in ((dgx, dgx0), (dgh, dgh0), (dd, dd0), (buf[:, :3 * H], dgx0), (gh_buf[:, :3 * H], dgh0)):
            close(backend, got, want, dt)


@pytest.mark.parametrize("dt", DT)
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "gelu_tanh", "silu"])
def test_bias_act_out(backend, act, dt):
    """Forward: ``out`` is the addend itself (the Elman step's ``gx``); backward: ``out`` is ``saved``."""
    mutable_only(backend)
    r = np.random.default_rng(2)
    x, dy = (nnx.asarray(r.standard_normal((N, H)), dt) for _ in range(2))
    for _label, k in kernels(backend):
        buf = wide(backend, r, H, 3, dt)
        addend = nnx.asarray(host(backend, buf)[:, :H], dt)
        y0, saved0 = k("bias_act_forward", x, addend, act)
        y, saved = k("bias_act_forward", x, buf[:, :H], act, out=buf[:, :H])
        close(backend, y, y0, dt)
        close(backend, buf[:, :H], y0, dt)
        close(backend, saved, saved0, dt)
        dz0, _ = k("bias_act_backward", dy, saved0, act, has_bias=False)
        if saved0 is y0 or act in ("relu", "tanh", "sigmoid"):  # saved is the output: overwrite it
            dz, _ = k("bias_act_backward", dy, buf[:, :H], act, has_bias=False, out=buf[:, :H])
        else:
            dz, _ = k("bias_act_backward", dy, saved, act, has_bias=False, out=buf[:, :H])
        close(backend, dz, dz0, dt)
        close(backend, buf[:, :H], dz0, dt)


def test_fallback_refuses_out_on_immutable_libraries(backend):
    if backend.mutable:
        pytest.skip(f"{backend.name}: mutable; out= is written in place")
    x = nnx.asarray(np.ones((N, 4 * H)), "float32")
    c = nnx.asarray(np.ones((N, H)), "float32")
    with pytest.raises(TypeError, match="lstm_cell_forward: out= needs a mutable array library"):
        FusedOps.lstm_cell_forward(backend, x, c, out=nnx.asarray(np.ones((N, 5 * H)), "float32"))
