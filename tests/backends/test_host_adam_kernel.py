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


def _group(rng, sizes, dtype):
    """A parameter group: params, grads, exp_avgs, exp_avg_sqs (moments already non-zero)."""
    return [[(rng.standard_normal(s) * f).astype(dtype) for s in sizes] for f in (1.0, 0.3, 0.1, 0.0)]


def _per_tensor(adapter, group, **kw):
    out = [[a.copy() for a in arrays] for arrays in group]
    for p, g, m, v in zip(*out, strict=True):
        Backend.adam_step_(adapter, p, g, m, v, **kw)  # FusedOps' standard step, tensor by tensor
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [(0.0, False), (0.05, False), (0.05, True)], ids=["plain", "l2", "decoupled"])
def test_adam_multi_matches_per_tensor_steps_at_every_thread_count(adapter, threads, monkeypatch, dtype, wd):
    """The group kernel (one ``adam_multi`` run; slices of every tensor per thread) against the
    standard step per tensor; bit-identical between 1, 2 and 3 threads; sizes smaller than the
    thread count and empty tensors included."""
    ran = []
    real = HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "run",
                        lambda self, name, *a, **k: ran.append(name) or real(self, name, *a, **k))
    rng = np.random.default_rng(3)
    group = _group(rng, (1037, 1, 0, 2, 64 * 33), dtype)
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=3.0, weight_decay=wd[0], decoupled=wd[1])
    ref = _per_tensor(adapter, group, **kw)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        got = [[a.copy() for a in arrays] for arrays in group]
        ran.clear()
        adapter.adam_multi_step_(*got, **kw)
        assert ran == ["adam_multi"], ran
        outs.append(got)
        for which in (0, 2, 3):  # params, exp_avgs, exp_avg_sqs
            for a, r in zip(got[which], ref[which], strict=True):
                np.testing.assert_allclose(a, r, **TOL[dtype])
        assert all(np.array_equal(a, b) for a, b in zip(got[1], group[1], strict=True)), "a gradient was written"
    for other in outs[1:]:
        for arrays, first in zip(other, outs[0], strict=True):
            for a, b in zip(arrays, first, strict=True):
                np.testing.assert_array_equal(a, b)


def test_adam_multi_refuses_what_one_pass_cannot_do(adapter, monkeypatch):
    """Arrays shared between tensors of the group, mixed dtypes, a strided parameter or AMSGrad: the
    group goes tensor by tensor (the group kernel never runs), with the numbers of that path."""
    from nnx_backends.fused_api import FusedOps

    kw = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=2.0)
    real = HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "run", lambda self, name, *a, **k: (
        pytest.fail("adam_multi ran") if name == "adam_multi" else real(self, name, *a, **k)))

    def shared(g):  # the second tensor's gradient is the first one's exp_avg
        g[1][1] = g[2][0][:30]

    def mixed(g):
        g[1][1] = g[1][1].astype(np.float64)

    def strided(g):
        g[0][0] = np.repeat(g[0][0], 2)[::2]

    for mutate in (shared, mixed, strided):
        got, ref = (_group(np.random.default_rng(4), (50, 30), "float32") for _ in range(2))
        mutate(got)
        mutate(ref)
        adapter.adam_multi_step_(*got, **kw)
        FusedOps.adam_multi_step_(adapter, *ref, **kw)  # tensor by tensor, the same aliasing
        for arrays, r in zip(got, ref, strict=True):
            for a, b in zip(arrays, r, strict=True):
                np.testing.assert_array_equal(a, b)
    group = _group(np.random.default_rng(4), (50,), "float32")
    vmax = [np.zeros(50, np.float32)]
    adapter.adam_multi_step_(*group, vmax, **kw)
    assert vmax[0].any()


def test_adam_takes_the_group_kernel_on_numpy(adapter, monkeypatch):
    """``nnx.optim.Adam`` on NumPy updates a group in one run, with the per-parameter path's numbers."""
    import nnx.functional._device as device

    monkeypatch.setattr(device, "DEVICE_PATHS", "never")  # the CPU-shaped formulation (CI also runs "always")
    ran = []
    real = HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "run",
                        lambda self, name, *a, **k: ran.append(name) or real(self, name, *a, **k))
    results = []
    for kinds in (("adam",), ()):
        monkeypatch.setattr(NF.NumpyFused, "multi_tensor_kinds", lambda self, k=kinds: k)
        nnx.manual_seed(0)
        model = nnx.Sequential(nnx.Linear(6, 5), nnx.Tanh(), nnx.Linear(5, 2))
        opt = nnx.optim.AdamW(model.parameters(), lr=0.1)
        rng = np.random.default_rng(5)
        for _ in range(3):
            for p in model.parameters():
                p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
            ran.clear()
            opt.step()
            assert ran == (["adam_multi"] if kinds else ["adam"] * 4), ran
        results.append([np.array(p.data) for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
