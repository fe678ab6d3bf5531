"""The NumPy adapter's cross-entropy of class indices in its plain case (no class weights, no
smoothing): the host kernel (``nnx_ce_fwd`` / ``nnx_ce_bwd``), the NumPy passes it falls back to
(no kernels; an incoming gradient of another dtype), and the standard reference of
``FusedOps``, against each other and, where installed, PyTorch; the split over the C pool
bit-identical at every thread count; and what the kernel does with a target no check let through."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnx_backends.numpy_fused as NF
from nnx_backends.fused_api import FusedOps

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=3e-6, atol=1e-6), "float64": dict(rtol=1e-13, atol=1e-14)}


@pytest.fixture
def adapter(lib):
    import nnx_backends

    return nnx_backends.get("numpy")


def _case(rng, n, c, dt, ignore_index=-100, ignored=(), tdtype=np.int64):
    z = np.asarray(rng.standard_normal((n, c)) * 3, dtype=dt)
    z[n // 2] += 500.0  # exp overflows without the row's maximum taken out first
    t = rng.integers(0, c, n).astype(tdtype)
    for i in ignored:
        t[i] = ignore_index
    return z, t


def _paths(adapter, monkeypatch, z, t, g, **kw):
    """(loss, grad) by the kernel, by the NumPy passes and by the reference."""
    out = []
    loss, saved = adapter.cross_entropy_forward(z, t, **kw)
    assert len(saved) == 5, "the plain case did not take the kernel"
    out.append((loss, adapter.cross_entropy_backward(g, saved, t, **kw)))
    with monkeypatch.context() as m:
        m.setattr(NF.hk, "kernels", lambda: None)
        loss, saved = adapter.cross_entropy_forward(z, t, **kw)
        assert len(saved) == 4
        out.append((loss, adapter.cross_entropy_backward(g, saved, t, **kw)))
    loss, saved = FusedOps.cross_entropy_forward(adapter, z, t, **kw)
    out.append((loss, FusedOps.cross_entropy_backward(adapter, g, saved, t, **kw)))
    return out


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [None, -100, 2], ids=["no-ignored", "ignore--100", "ignore-2-a-class"])
def test_kernel_numpy_passes_and_reference_agree(adapter, monkeypatch, dt, reduction, ignore):
    rng = np.random.default_rng(7)
    kw = dict(reduction=reduction)
    if ignore is None:
        z, t = _case(rng, 37, 11, dt)
    else:
        z, t = _case(rng, 37, 11, dt, ignore, ignored=(0, 5, 36))
        kw["ignore_index"] = ignore
    g = np.asarray(rng.standard_normal(37) if reduction == "none" else 1.7, dtype=dt)
    (lk, dk), (ln, dn), (lr, dr) = _paths(adapter, monkeypatch, z, t, g, **kw)
    for loss, d in ((lk, dk), (ln, dn)):
        assert loss.dtype == lr.dtype == np.dtype(dt) and loss.shape == lr.shape
        assert d.dtype == dr.dtype and d.shape == dr.shape
        np.testing.assert_allclose(loss, lr, **TOL[dt])
        np.testing.assert_allclose(d, dr, **TOL[dt])
    if ignore is not None:
        assert not dk[[0, 5, 36]].any(), "an ignored row got a gradient"


@pytest.mark.parametrize("dt", DTYPES)
def test_against_torch(adapter, torch, dt):
    rng = np.random.default_rng(8)
    z, t = _case(rng, 50, 7, dt, -100, ignored=(3, 4))
    for reduction in ("mean", "sum", "none"):
        tz = torch.tensor(z, requires_grad=True)
        tl = torch.nn.functional.cross_entropy(tz, torch.tensor(t), reduction=reduction)
        g = np.asarray(rng.standard_normal(50) if reduction == "none" else 0.6, dtype=dt)
        tl.backward(torch.tensor(g))
        loss, saved = adapter.cross_entropy_forward(z, t, reduction=reduction)
        d = adapter.cross_entropy_backward(g, saved, t, reduction=reduction)
        np.testing.assert_allclose(loss, tl.detach().numpy(), **TOL[dt])
        np.testing.assert_allclose(d, tz.grad.numpy(), **TOL[dt])


def test_int32_targets_and_nan_logits(adapter):
    rng = np.random.default_rng(9)
    z, t = _case(rng, 9, 4, "float32", tdtype=np.int32)
    z[2, 1] = np.nan
    loss, saved = adapter.cross_entropy_forward(z, t, reduction="none")
    ref, _ = FusedOps.cross_entropy_forward(adapter, z, t, reduction="none")
    assert np.isnan(loss[2]) and np.isnan(ref[2])
    np.testing.assert_allclose(np.delete(loss, 2), np.delete(ref, 2), **TOL["float32"])


def test_other_gradient_dtype_takes_numpy_passes(adapter):
    """A float64 incoming gradient on float32 logits promotes as NumPy does (the kernel would not)."""
    rng = np.random.default_rng(10)
    z, t = _case(rng, 12, 5, "float32", -100, ignored=(1,))
    for reduction, g in (("mean", np.asarray(2.0)), ("none", rng.standard_normal(12))):
        loss, saved = adapter.cross_entropy_forward(z, t, reduction=reduction)
        d = adapter.cross_entropy_backward(g, saved, t, reduction=reduction)
        _, rsaved = FusedOps.cross_entropy_forward(adapter, z, t, reduction=reduction)
        r = FusedOps.cross_entropy_backward(adapter, g, rsaved, t, reduction=reduction)
        assert d.dtype == r.dtype
        np.testing.assert_allclose(d, r, rtol=3e-6, atol=1e-6)


def test_every_row_ignored_is_nan_like_the_reference(adapter):
    z, t = _case(np.random.default_rng(11), 4, 3, "float64", -100, ignored=range(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss, _ = adapter.cross_entropy_forward(z, t)
        ref, _ = FusedOps.cross_entropy_forward(adapter, z, t)
    assert np.isnan(loss) and np.isnan(ref)


def test_split_over_threads_is_bit_identical(adapter, threads):
    rng = np.random.default_rng(12)
    z, t = _case(rng, 1001, 33, "float32", -100, ignored=(0, 500, 1000))
    got = []
    for n in (1, 2, 3):
        threads(n)
        loss, saved = adapter.cross_entropy_forward(z, t)
        got.append((loss, adapter.cross_entropy_backward(np.float32(1.0), saved, t)))
    for loss, d in got[1:]:
        np.testing.assert_array_equal(loss, got[0][0])
        np.testing.assert_array_equal(d, got[0][1])


def test_unchecked_bad_target_gives_nan_not_a_read(adapter, lib):
    """The functional API checks targets first; called directly, the kernel never indexes with a
    bad target: its row's loss and gradient are NaN."""
    z = np.zeros((3, 4), np.float32)
    t = np.array([1, 9, -5], np.int64)
    loss, saved = adapter.cross_entropy_forward(z, t, reduction="none")
    assert loss[0] == pytest.approx(np.log(4.0)) and np.isnan(loss[1]) and np.isnan(loss[2])
    d = adapter.cross_entropy_backward(np.ones(3, np.float32), saved, t, reduction="none")
    assert np.isfinite(d[0]).all() and np.isnan(d[1]).any() and np.isnan(d[2]).any()



@pytest.mark.parametrize("dt", DTYPES)
def test_masked_logits(adapter, monkeypatch, dt):
    """-inf logits (masked classes) in counted and in ignored rows: a finite loss and gradient on
    every path (an ignored row's -inf is never multiplied by its zero weight: that would be NaN)."""
    rng = np.random.default_rng(13)
    z, t = _case(rng, 6, 5, dt, -100, ignored=(2, 4))
    z[:, 0] = -np.inf
    t[t == 0] = 1
    g = np.asarray(1.0, dtype=dt)
    for loss, d in _paths(adapter, monkeypatch, z, t, g):
        assert np.isfinite(loss) and np.isfinite(d).all()
    (lk, dk), (ln, dn), (lr, dr) = _paths(adapter, monkeypatch, z, t, g)
    np.testing.assert_allclose(lk, lr, **TOL[dt])
    np.testing.assert_allclose(ln, lr, **TOL[dt])
    np.testing.assert_allclose(dk, dr, **TOL[dt])


def test_no_classes_is_refused_and_never_reaches_the_kernel(adapter, monkeypatch):
    """Logits with no class column, every target ignored (so the target check passes): the
    functional API says what is wrong; the adapter, called directly, does not run the kernel (which
    reads a row's first logit)."""
    import nnx.functional as F

    monkeypatch.setattr(NF.hk.HostKernels, "run", lambda self, name, *a, **k: pytest.fail(f"{name} ran"))
    z = np.zeros((3, 0), np.float32)
    t = np.full(3, -100, np.int64)
    with pytest.raises(ValueError, match="cross_entropy: input must have at least one class"):
        F.cross_entropy_forward(z, t)
    with pytest.raises(ValueError):  # NumPy's own: an empty maximum
        adapter.cross_entropy_forward(z, t)
