"""The flat-shift convolution's col2im as one host-kernel pass (``nnx_shift_add``) against
``Backend.shift_add``'s pure-standard loop of ``at_add`` (the reference every other backend runs).

The convolution layers that use it (stride-1 convolutions whose output is smaller than the input:
LeNet's) are held to PyTorch and to gradcheck by the layer tests; here the kernel alone: chunks,
groups, overlapping shifts, threads, and the arguments it must refuse."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.threads as T
from nnx_backends.base import Backend


@pytest.fixture
def adapter(lib, monkeypatch):
    calls = []
    real, real_run = HK.HostKernels.fn, HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "fn", lambda self, name, dt: calls.append(name) or real(self, name, dt))
    monkeypatch.setattr(HK.HostKernels, "run",  # a kernel run as a task of the C pool
                        lambda self, name, dt, *a, **k: calls.append(f"nnx_{name}") or real_run(self, name, dt, *a,
                                                                                                 **k))
    with nnx.use_backend("numpy") as b:
        b.kernel_calls = calls
        yield b


def _case(rng, dtype, n=5, g=2, cg=3, kh=3, kw=4, wp=11, oh=6):
    offsets = [a * wp + c for a in range(kh) for c in range(kw)]  # overlapping shifts, as a 3x4 kernel's
    run = oh * wp
    length = (oh + kh) * wp
    out = rng.standard_normal((n + 2, g, cg, length)).astype(dtype)
    cols = rng.standard_normal((n, g, kh * kw, cg, run)).astype(dtype)
    return out, cols, offsets, run


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lo", [0, 2])
def test_shift_add_matches_the_at_add_loop(adapter, dtype, lo):
    out, cols, offsets, run = _case(np.random.default_rng(lo), dtype)
    ref = Backend.shift_add(adapter, out.copy(), cols, offsets, run, lo)
    got = out.copy()
    res = adapter.shift_add(got, cols, offsets, run, lo)
    assert res is got and adapter.kernel_calls == ["nnx_shift_add"]  # in place, through the kernel
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(got, ref, **tol)
    untouched = [i for i in range(out.shape[0]) if not lo <= i < lo + cols.shape[0]]
    np.testing.assert_array_equal(got[untouched], out[untouched])  # rows outside the chunk


def test_shift_add_is_thread_independent(adapter, monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    out, cols, offsets, run = _case(np.random.default_rng(5), "float32", n=7)
    old = T._state["threads"]
    results = []
    try:
        for n in (1, 2, 3):
            nnx.set_num_threads(n)
            results.append(adapter.shift_add(out.copy(), cols, offsets, run, 1))
    finally:
        nnx.set_num_threads(old if old is not None else T._default_threads())
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


def test_shift_add_refuses_what_would_write_out_of_bounds(adapter):
    """Offsets past the row, a chunk past the batch, other shapes or an overlapping out= never reach
    the kernel: the at_add loop's own error (or result) instead."""
    out, cols, offsets, run = _case(np.random.default_rng(6), "float32")
    for bad in ([*offsets[:-1], out.shape[3] - run + 1], [-1, *offsets[1:]]):
        with pytest.raises(ValueError):
            adapter.shift_add(out.copy(), cols, bad, run)
    with pytest.raises(ValueError):
        adapter.shift_add(out.copy(), cols, offsets, run, lo=3)  # rows 3..8 of 7
    one_group = cols[:, :1]  # one group of two: the loop broadcasts it, as NumPy's += does
    np.testing.assert_array_equal(adapter.shift_add(out.copy(), one_group, offsets, run),
                                  Backend.shift_add(adapter, out.copy(), one_group, offsets, run))
    assert adapter.kernel_calls == []
    alias = np.zeros(cols.size + out[:5].size, np.float32)
    o5 = alias[:out[:5].size].reshape(out[:5].shape)
    c5 = alias[out[:5].size - 4:][:cols.size].reshape(cols.shape)  # cols overlaps out's last elements
    adapter.shift_add(o5, c5, offsets, run)
    assert adapter.kernel_calls == []
