"""The NumPy adapter's cache-blocked, threaded layer-normalisation and column-softmax kernels
against the readable references (``nnx_backends.norm``, ``nnx_backends.softmax``): equal results on
shapes that span several blocks and a partial one, with and without affine parameters, in float32
and float64, bit-identical for every thread count. Each test runs twice: on the host kernels
(``host_kernels.c``, where a C compiler is found) and on the NumPy passes that stand in without one."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.numpy_norm as NN
import nnx_backends.threads as T
from nnx_backends import norm as R


@pytest.fixture(params=["host", "numpy"])
def adapter(request, monkeypatch):
    if request.param == "host":
        if HK.kernels() is None:
            pytest.skip(f"host kernels unavailable: {HK.reason()}")
    else:
        monkeypatch.setattr(HK, "kernels", lambda: None)  # the NumPy passes
    monkeypatch.setattr(NN, "BLOCK_ELEMENTS", 1000)  # (53, 40): blocks of 25 rows, the last one partial
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    old = T._state["threads"]
    with nnx.use_backend("numpy") as b:
        yield b
    nnx.set_num_threads(old if old is not None else T._default_threads())


def _vecdot(a, b, axis=-1):
    return np.sum(a * b, axis=axis)


def _run(b, dtype, affine, input_grad=True):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((53, 40)) * 3 + 1).astype(dtype)
    dy = rng.standard_normal((53, 40)).astype(dtype)
    w = rng.standard_normal(40).astype(dtype) if affine else None
    bias = rng.standard_normal(40).astype(dtype) if affine else None
    y, xhat, invstd = b.layer_norm_rows_forward(x, w, bias, 1e-5)
    dx, dw, db = b.layer_norm_rows_backward(dy, xhat, invstd, w, affine, input_grad)
    ry, rxhat, rinv = R.layer_norm_rows_forward(np, x, w, bias, 1e-5, _vecdot)
    rdx, rdw, rdb = R.layer_norm_rows_backward(np, dy, rxhat, rinv, w, affine, input_grad, _vecdot)
    return (y, xhat, invstd, dx, dw, db), (ry, rxhat, rinv, rdx, rdw, rdb)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("affine", [True, False])
def test_blocked_kernel_matches_reference(adapter, dtype, affine):
    got, ref = _run(adapter, dtype, affine)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for name, g, r in zip(("y", "xhat", "invstd", "dx", "dweight", "dbias"), got, ref, strict=True):
        if r is None:
            assert g is None, name
            continue
        assert g.dtype == r.dtype and g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=name)


def test_without_input_grad_only_parameter_grads(adapter):
    got, ref = _run(adapter, "float64", True, input_grad=False)
    assert got[3] is None and ref[3] is None
    np.testing.assert_allclose(got[4], ref[4], rtol=1e-12)
    np.testing.assert_allclose(got[5], ref[5], rtol=1e-12)


def test_bit_identical_for_every_thread_count(adapter):
    results = []
    for n in (1, 2, 3):
        nnx.set_num_threads(n)
        results.append(_run(adapter, "float32", True)[0])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


def test_softmax_columns_in_place_equals_reference(adapter):
    from nnx_backends import softmax as SM

    s = np.random.default_rng(1).standard_normal((2, 3, 6, 5)).astype(np.float32) * 4
    s[0, 2, :, 1] = -np.inf  # a query whose every key is masked
    p, lse = adapter.softmax_cols_forward(s.copy())
    rp, rlse = SM.softmax_cols_forward(np, s.copy())
    if HK.kernels() is None:  # the NumPy passes: the reference's operations, in place
        assert np.array_equal(p, rp) and np.array_equal(lse, rlse)
    else:  # C's logf may differ from NumPy's log by an ulp
        np.testing.assert_allclose(p, rp, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(lse, rlse, rtol=1e-6)
    assert lse.dtype == np.float32 and np.isposinf(lse[0, 2, 0, 1]) and not np.any(p[0, 2, :, 1])
