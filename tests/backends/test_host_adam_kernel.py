"""Adam's update as one host-kernel pass (``nnx_adam`` in ``backends/host_kernels.c``) against the
pure-standard update of ``Backend.adam_update_`` (PyTorch's arithmetic order).

The optimizer tests (``tests/optim``) hold ``nnx.optim.Adam``/``AdamW`` to ``torch.optim`` step by
step, on NumPy through this kernel; here the kernel is checked alone: several steps, both dtypes,
row-chunked over threads, and the cases it must leave to the NumPy passes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.numpy_fused as NF
import nnx_backends.threads as T
from nnx_backends.base import Backend

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-6, atol=1e-7), "float64": dict(rtol=1e-14, atol=1e-16)}


@pytest.fixture
def adapter(lib):
    with nnx.use_backend("numpy") as b:
        yield b


def _state(rng, n, dtype):
    return [rng.standard_normal(n).astype(dtype) for _ in range(2)] + [np.zeros(n, dtype), np.zeros(n, dtype)]


def _steps(update, state, grads, **kw):
    p, _, m, v = (a.copy() for a in state)
    for t, g in enumerate(grads, start=1):
        p, m, v, _ = update(p, g, m, v, bias_correction1=1 - kw["beta1"] ** t,
                            bias_correction2=1 - kw["beta2"] ** t, **kw)
    return p, m, v


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_matches_the_standard_update(adapter, dtype, monkeypatch):
    calls = []
    real = HK.HostKernels.run

    def spy(self, name, dt, *args, **kw):  # the kernel runs as a task of nnx's C pool
        calls.append(f"nnx_{name}")
        return real(self, name, dt, *args, **kw)

    monkeypatch.setattr(HK.HostKernels, "run", spy)
    monkeypatch.setattr(HK, "MIN_TASK_ELEMENTS", 0)  # split over the threads too
    rng = np.random.default_rng(0)
    state = _state(rng, 1037, dtype)
    grads = [(rng.standard_normal(1037) * 10 ** rng.uniform(-3, 1)).astype(dtype) for _ in range(5)]
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
    got = _steps(adapter.adam_update_, state, grads, **kw)
    assert calls.count("nnx_adam") == 5
    ref = _steps(lambda *a, **k: Backend.adam_update_(adapter, *a, **k), state, grads, **kw)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, r, **TOL[dtype])


def test_adam_kernel_updates_in_place_and_is_thread_independent(adapter, monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    rng = np.random.default_rng(1)
    state = _state(rng, (64, 33), "float32")
    kw = dict(lr=1e-3, beta1=0.8, beta2=0.99, eps=1e-6, bias_correction1=0.2, bias_correction2=0.01)
    old = T._state["threads"]
    outs = []
    try:
        for n in (1, 2, 3):
            nnx.set_num_threads(n)
            p, g, m, v = (a.copy() for a in state)
            res = adapter.adam_update_(p, g, m, v, **kw)
            assert res[0] is p and res[1] is m and res[2] is v  # in place, as the adapter's contract says
            outs.append((p, m, v))
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    p0, g0 = state[0], state[1]
    m1 = 0.2 * g0
    v1 = 0.01 * g0 * g0
    np.testing.assert_allclose(outs[0][0], p0 - 1e-3 / 0.2 * m1 / (np.sqrt(v1) / math.sqrt(0.01) + 1e-6), rtol=1e-5)


def test_overlapping_or_mixed_arrays_take_the_numpy_passes(adapter, monkeypatch):
    """A gradient that overlaps the parameter with an offset, or mixed dtypes, never reach the kernel."""
    rng = np.random.default_rng(2)
    buf = rng.standard_normal(101).astype(np.float32)
    p, g = buf[:100], buf[1:]  # the gradient is the parameter shifted by one element
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, bc1=0.1, bc2=0.001)
    ref = [p.copy(), g.copy(), np.zeros(100, np.float32), np.zeros(100, np.float32)]
    NF._adam_update_flat(*ref, **kw)  # apart: the kernel's result
    monkeypatch.setattr(HK.HostKernels, "fn", lambda self, name, dt: pytest.fail(f"{name} was called"))
    monkeypatch.setattr(HK.HostKernels, "run", lambda self, name, *a, **k: pytest.fail(f"{name} was run"))
    m, v = np.zeros(100, np.float32), np.zeros(100, np.float32)
    NF._adam_update_flat(p, g, m, v, **kw)
    np.testing.assert_allclose(p, ref[0], **TOL["float32"])
    np.testing.assert_allclose(m, ref[2], **TOL["float32"])
    NF._adam_update_flat(p.copy(), g.astype(np.float64), m, v, **kw)  # mixed dtypes
