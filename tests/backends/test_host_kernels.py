"""The NumPy adapter's fused host kernels (``backends/host_kernels.c``) against the readable
references, and the build: cached, turned off by ``NNX_HOST_KERNELS=0``, a failed build leaves the
NumPy passes (with the reason), never a broken adapter.

The layer norm and the forward column softmax are also run against the references, on and off,
block-split and threaded, in ``test_numpy_norm.py``; the layers that use them (LayerNorm,
MultiheadAttention, the Transformer layers, ReLU after a Linear) are held to PyTorch and to
gradcheck (float64, so through the ``f64`` kernels) by the layer tests."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.threads as T
from nnx_backends import fused as FU
from nnx_backends import norm as NR
from nnx_backends import softmax as SM

DTYPES = ["float32", "float64"]


def _tol(dtype, m=2):
    """Kernels against references that sum the same terms in another order. F(4x4, 3x3) sums up to
    six terms with weights up to 8 per pass (intermediates ~50x the data): float32 rounding there
    is ~5e-6 absolute, hence its wider bound."""
    if dtype != "float32":
        return dict(rtol=1e-13, atol=1e-13)
    return dict(rtol=2e-6, atol=2e-6 if m == 2 else 3e-5)


def _vecdot(a, b, axis=-1):
    return np.sum(a * b, axis=axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_rows_match_reference(lib, dtype, affine):
    rng = np.random.default_rng(3)
    rows, n = 37, 29
    x = (rng.standard_normal((rows, n)) * 2 - 1).astype(dtype)
    dy = rng.standard_normal((rows, n)).astype(dtype)
    w = rng.standard_normal(n).astype(dtype) if affine in ("both", "weight") else None
    b = rng.standard_normal(n).astype(dtype) if affine in ("both", "bias") else None
    y, xhat, inv = (np.empty_like(x), np.empty_like(x), np.empty((rows, 1), dtype=dtype))
    lib.fn("nnx_ln_fwd", x.dtype)(x.ctypes.data, HK.ptr(w), HK.ptr(b), rows, n, 1e-5, y.ctypes.data,
                                  xhat.ctypes.data, inv.ctypes.data)
    ry, rxhat, rinv = NR.layer_norm_rows_forward(np, x, w, b, 1e-5, _vecdot)
    for got, ref in ((y, ry), (xhat, rxhat), (inv, rinv)):
        np.testing.assert_allclose(got, ref, **_tol(dtype))
    dx = np.empty_like(x)
    lib.fn("nnx_ln_bwd", x.dtype)(dy.ctypes.data, xhat.ctypes.data, inv.ctypes.data, HK.ptr(w), rows, n, dx.ctypes.data)
    rdx = NR.layer_norm_rows_backward(np, dy, rxhat, rinv, w, b is not None, True, _vecdot)[0]
    np.testing.assert_allclose(dx, rdx, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_columns_match_reference_masked_and_nan(numpy_adapter, lib, dtype):
    rng = np.random.default_rng(4)
    s = (rng.standard_normal((3, 2, 7, 9)) * 4).astype(dtype)
    s[0, 1, :, 2] = -np.inf  # a query whose every key is masked: p 0, lse +inf
    s[1, 0, :3, 4] = -np.inf  # partly masked
    s[2, 1, 5, 6] = np.nan  # NaN spreads through its column as in the reference
    p, lse = numpy_adapter.softmax_cols_forward(s.copy())
    rp, rlse = SM.softmax_cols_forward(np, s.copy())
    np.testing.assert_allclose(p, rp, **_tol(dtype))
    np.testing.assert_allclose(lse, rlse, **_tol(dtype))
    assert np.isposinf(lse[0, 1, 0, 2]) and not np.any(p[0, 1, :, 2]) and np.all(np.isnan(p[2, 1, :, 6]))
    assert not np.any(np.isnan(np.delete(p[2, 1], 6, axis=-1)))

    dp = rng.standard_normal(s.shape).astype(dtype)
    got = numpy_adapter.softmax_cols_backward(dp.copy(), rp)
    ref = SM.softmax_cols_backward(np, dp.copy(), rp, lambda a, b, axis: np.sum(a * b, axis=axis))
    np.testing.assert_allclose(got, ref, **_tol(dtype))  # NaN where the reference has NaN


def test_softmax_backward_is_in_place_and_thread_independent(numpy_adapter, lib):
    rng = np.random.default_rng(5)
    p = SM.softmax_cols_forward(np, rng.standard_normal((6, 16, 16)).astype(np.float32))[0]
    dp = rng.standard_normal(p.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        nnx.set_num_threads(n)
        buf = dp.copy()
        out = numpy_adapter.softmax_cols_backward(buf, p)
        assert out is buf  # consumed, as the adapter's contract says
        outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_relu_matches_reference_and_may_alias(numpy_adapter, lib, dtype, with_bias):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 17)).astype(dtype)
    x[0, 0] = np.nan  # NaN propagates, as torch.relu
    bias = rng.standard_normal(17).astype(dtype) if with_bias else None
    ref = FU.bias_act_forward(np, x, bias, "relu")[0]
    y, saved = numpy_adapter.bias_act_forward(x, bias, "relu")
    np.testing.assert_array_equal(y, ref)
    assert saved is y and np.isnan(y[0, 0])
    buf = x.copy()  # in place: out is the input
    y2, _ = numpy_adapter.bias_act_forward(buf, bias, "relu", out=buf)
    assert y2 is buf
    np.testing.assert_array_equal(y2, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_gradient_matches_reference_and_may_alias(numpy_adapter, lib, dtype):
    rng = np.random.default_rng(6)
    z = rng.standard_normal((64, 33)).astype(dtype)
    z[0, :3] = 0.0  # relu'(0) = 0, as torch
    z[1, 0] = np.nan  # forward NaN: no gradient through it, as the reference
    y = FU.bias_act_forward(np, z, None, "relu")[0]
    g = rng.standard_normal(z.shape).astype(dtype)
    g[2, 1] = np.nan  # a NaN gradient where the unit is off stays 0 (where, not multiply)
    ref = FU.act_backward(np, g, y, "relu")
    got, _ = numpy_adapter.bias_act_backward(g.copy(), y, "relu", has_bias=False)
    np.testing.assert_array_equal(got, ref)
    buf = g.copy()  # the recurrent loop passes out= aliasing its inputs
    got2, _ = numpy_adapter.bias_act_backward(buf, y, "relu", has_bias=False, out=buf)
    np.testing.assert_array_equal(got2, ref)


def test_turned_off_and_failed_builds_leave_the_numpy_passes(monkeypatch, tmp_path):
    monkeypatch.setenv("NNX_CACHE_DIR", str(tmp_path))
    try:
        HK._reset()
        monkeypatch.setenv(HK.ENV, "0")
        assert HK.kernels() is None and HK.ENV in HK.reason()

        HK._reset()
        monkeypatch.delenv(HK.ENV)
        monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
        monkeypatch.setattr(HK, "_compiler", lambda: __import__("shutil").which("false"))
        assert HK.kernels() is None and "failed" in HK.reason()
        assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("tmp*"))  # nothing half-written

        with nnx.use_backend("numpy") as b:  # the adapter still works, on its NumPy passes
            x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
            y, xhat, inv = b.layer_norm_rows_forward(x, None, None, 1e-5)
            np.testing.assert_allclose(y, NR.layer_norm_rows_forward(np, x, None, None, 1e-5, _vecdot)[0], rtol=1e-5,
                                       atol=1e-6)
    finally:
        monkeypatch.undo()
        HK._reset()


def test_a_cache_folder_others_can_write_is_never_used(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("NNX_CACHE_DIR", str(shared))
    assert HK._cache_dir() != shared  # the next private candidate instead
    mine = tmp_path / "mine"
    monkeypatch.setenv("NNX_CACHE_DIR", str(mine))
    assert HK._cache_dir() == mine and not mine.stat().st_mode & 0o077  # created private


def test_build_is_cached_by_content(monkeypatch, tmp_path):
    if HK._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("NNX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(HK.ENV, raising=False)
    try:
        HK._reset()
        first = HK.kernels()
        assert first is not None, HK.reason()
        built = sorted(tmp_path.glob("host_kernels-*.so"))
        assert len(built) == 1 and first.path == built[0]
        mtime = built[0].stat().st_mtime_ns
        HK._reset()
        assert HK.kernels().path == built[0] and built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt
    finally:
        monkeypatch.undo()
        HK._reset()


def test_supports_only_contiguous_float32_float64_ndarrays():
    a = np.zeros((4, 4), dtype=np.float32)
    assert HK.supports(a, np.zeros(4, dtype=np.float32))
    assert not HK.supports(a, np.zeros(4, dtype=np.float64))  # mixed dtypes
    assert not HK.supports(a[:, ::2])  # strided
    assert not HK.supports(a.astype(np.float16))


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pads", [(0, 0), (1, 1), (2, 1), (0, 2)])
@pytest.mark.parametrize("hw", [(7, 9), (10, 13), (12, 8)])
def test_winograd_transforms_match_reference(numpy_adapter, lib, m, dtype, pads, hw):
    """F(2x2, 3x3) and F(4x4, 3x3) tiles of maps whose sides are and are not whole tiles (edge
    tiles cropped or zero-padded), each padding."""
    from nnx_backends import winograd as WG

    rng = np.random.default_rng(8)
    n, c, (h, w) = 3, 5, hw
    a = m + 2
    top, left = pads
    oh, ow = h + 2 * top - 2, w + 2 * left - 2
    th, tw = -(-oh // m), -(-ow // m)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    v = numpy_adapter.winograd_input_transform(x, m, top, left, th, tw)
    np.testing.assert_allclose(v, WG.input_transform(numpy_adapter, x, m, top, left, th, tw), **_tol(dtype, m))
    mm = rng.standard_normal((a * a, 4, n * th * tw)).astype(dtype)
    y = numpy_adapter.winograd_output_transform(mm, m, n, th, tw, oh, ow)
    np.testing.assert_allclose(y, WG.output_transform(numpy_adapter, mm, m, n, th, tw, oh, ow), **_tol(dtype, m))
    dy = rng.standard_normal((n, 4, oh, ow)).astype(dtype)
    d = numpy_adapter.winograd_dy_transform(dy, m, th, tw)
    np.testing.assert_allclose(d, WG.dy_transform(numpy_adapter, dy, m, th, tw), **_tol(dtype, m))
    assert v.shape == (a * a, c, n * th * tw) and y.shape == (n, 4, oh, ow) and d.shape == (a * a, 4, n * th * tw)


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_transforms_thread_independent(numpy_adapter, lib, m):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 3, 12, 10)).astype(np.float32)
    th, tw = 12 // m, -(-10 // m)
    outs = []
    for n in (1, 2, 3):
        nnx.set_num_threads(n)
        v = numpy_adapter.winograd_input_transform(x, m, 1, 1, th, tw)
        outs.append((v, numpy_adapter.winograd_dy_transform(x, m, th, tw),
                     numpy_adapter.winograd_output_transform(v[:, :2], m, 5, th, tw, 12, 10)))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [1, 3, 1 << 30])
def test_blocked_winograd_conv_matches_reference(numpy_adapter, lib, monkeypatch, m, dtype, block):
    """The NumPy adapter's winograd_conv (transforms and GEMMs per block of samples, blocks over
    the pool) against the reference's three whole passes: one sample per block, blocks of three
    with a partial last one, and one block; every thread count gives the same bits."""
    import nnx_backends.numpy_winograd as NW
    from nnx_backends import winograd as WG
    from nnx_backends.fused_api import FusedOps

    rng = np.random.default_rng(10)
    n, c, o, h, w = 7, 5, 6, 11, 9
    top, left = 1, 2
    oh, ow = h + 2 * top - 2, w + 2 * left - 2
    th, tw = -(-oh // m), -(-ow // m)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    u = np.ascontiguousarray(WG.filter_transform(numpy_adapter, wt, m))
    want = FusedOps.winograd_conv(numpy_adapter, x, u, m, top, left, th, tw, oh, ow)
    per_sample = (m + 2) ** 2 * max(c, o) * th * tw * np.dtype(dtype).itemsize
    monkeypatch.setattr(NW, "WINOGRAD_BLOCK_BYTES", block * per_sample)
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    runs = []
    for threads in (1, 2, 3):
        nnx.set_num_threads(threads)
        runs.append(numpy_adapter.winograd_conv(x, u, m, top, left, th, tw, oh, ow))
    assert runs[0].shape == (n, o, oh, ow)
    np.testing.assert_allclose(runs[0], want, **_tol(dtype, m))
    for got in runs[1:]:
        assert np.array_equal(got, runs[0])


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_filter_kernels_match_reference(numpy_adapter, lib, m, dtype):
    """``G w G^T`` (and of the flipped, transposed filter of the input gradient) and ``G^T dU G``
    against ``winograd.py``'s products, on a filter bank of odd sizes; the same bits whatever the
    rows' split over threads."""
    from nnx_backends import winograd as WG

    rng = np.random.default_rng(11)
    o, c, a = 7, 5, m + 2
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    du = rng.standard_normal((a * a, o, c)).astype(dtype)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-14, atol=1e-14)
    outs = []
    for threads in (1, 3):
        nnx.set_num_threads(threads)
        got = (numpy_adapter.winograd_filter_transform(w, m), numpy_adapter.winograd_filter_transform(w, m, flip=True),
               numpy_adapter.winograd_filter_grad(du, m))
        outs.append(got)
    want = (WG.filter_transform(numpy_adapter, w, m), WG.filter_transform(numpy_adapter, w, m, flip=True),
            WG.filter_grad(numpy_adapter, du, m))
    for g, r, shape in zip(outs[0], want, ((a * a, o, c), (a * a, c, o), (o, c, 3, 3)), strict=True):
        assert g.shape == shape and g.flags.c_contiguous
        np.testing.assert_allclose(g, r, **tol)
    for g, r in zip(outs[0], outs[1], strict=True):
        assert np.array_equal(g, r)
    # the flipped filter is the 180-degree turn of the transposed one, by definition
    turned = np.ascontiguousarray(np.flip(w.transpose(1, 0, 2, 3), axis=(2, 3)))
    np.testing.assert_allclose(outs[0][1], numpy_adapter.winograd_filter_transform(turned, m), **tol)


def test_winograd_filter_kernels_fall_back_on_other_operands(numpy_adapter, lib, monkeypatch):
    from nnx_backends.fused_api import FusedOps

    calls = []
    for name in ("winograd_filter_transform", "winograd_filter_grad"):
        real = getattr(FusedOps, name)

        def spy(self, *args, _real=real, **kw):
            calls.append(1)
            return _real(self, *args, **kw)

        monkeypatch.setattr(FusedOps, name, spy)
    w = np.ones((4, 3, 3, 3), np.float32)
    numpy_adapter.winograd_filter_transform(w, 4)
    numpy_adapter.winograd_filter_grad(np.ones((36, 4, 3), np.float32), 4)
    assert calls == []  # the host path
    numpy_adapter.winograd_filter_transform(w[:, ::-1], 4)           # strided
    numpy_adapter.winograd_filter_grad(np.ones((36, 4, 3), np.float16), 4)  # float16
    assert len(calls) == 2


def test_blocked_winograd_conv_falls_back_on_other_operands(numpy_adapter, lib, monkeypatch):
    from nnx_backends.fused_api import FusedOps

    calls = []
    real = FusedOps.winograd_conv

    def spy(self, *args):
        calls.append(args[0].dtype)
        return real(self, *args)

    monkeypatch.setattr(FusedOps, "winograd_conv", spy)
    x = np.ones((2, 3, 6, 6), np.float32)
    u = np.ones((16, 4, 3), np.float32)
    numpy_adapter.winograd_conv(x, u, 2, 1, 1, 3, 3, 6, 6)
    assert calls == []  # the host path
    numpy_adapter.winograd_conv(x, u.astype(np.float64), 2, 1, 1, 3, 3, 6, 6)  # mixed dtypes
    numpy_adapter.winograd_conv(x[:, :, :, ::-1], u, 2, 1, 1, 3, 3, 6, 6)  # strided input
    assert len(calls) == 2


def test_winograd_is_chosen_only_with_fused_transforms(numpy_adapter, monkeypatch):
    from nnx.functional import winograd

    x, w = np.zeros((2, 64, 32, 32), np.float32), np.zeros((64, 64, 3, 3), np.float32)
    want = 4 if HK.kernels() is not None else 0
    assert winograd.applicable(numpy_adapter, x, w, (1, 1), (1, 1), 1, (1, 1, 1, 1)) == want
    monkeypatch.setattr(HK, "kernels", lambda: None)
    assert winograd.applicable(numpy_adapter, x, w, (1, 1), (1, 1), 1, (1, 1, 1, 1)) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_reference(numpy_adapter, lib, dtype, affine):
    from nnx_backends import fused_train as FT

    rng = np.random.default_rng(10)
    x = (rng.standard_normal((5, 6, 37)) * 2 + 3).astype(dtype)  # a mean well away from 0
    dy = rng.standard_normal(x.shape).astype(dtype)
    w = rng.standard_normal(6).astype(dtype) if affine else None
    b = rng.standard_normal(6).astype(dtype) if affine else None
    mean, var = numpy_adapter.batch_norm_stats(x)
    rmean, rvar = FT.batch_norm_stats(np, x)
    np.testing.assert_allclose(mean, rmean, **_tol(dtype))
    np.testing.assert_allclose(var, rvar, **_tol(dtype))
    y, invstd = numpy_adapter.batch_norm_forward(x, mean, var, w, b, 1e-5)
    ry, rinv = FT.batch_norm_forward(np, x, rmean, rvar, w, b, 1e-5)
    np.testing.assert_allclose(y, ry, **_tol(dtype))
    np.testing.assert_allclose(invstd, rinv, **_tol(dtype))
    got = numpy_adapter.batch_norm_backward(dy, x, mean, invstd, w)
    ref = FT.batch_norm_backward(np, dy, x, rmean, rinv, w)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else _tol(dtype)  # sums over 185 values
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, r, **tol)


def test_batch_norm_thread_independent_and_used_by_the_layer(numpy_adapter, lib, monkeypatch):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 7, 50)).astype(np.float32)
    runs = []
    for n in (1, 2, 3):
        nnx.set_num_threads(n)
        mean, var = numpy_adapter.batch_norm_stats(x)
        y, inv = numpy_adapter.batch_norm_forward(x, mean, var, None, None, 1e-5)
        runs.append((mean, var, y, *numpy_adapter.batch_norm_backward(x, x, mean, inv, None)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert np.array_equal(a, b)
    calls = []
    real = type(numpy_adapter).batch_norm_stats
    monkeypatch.setattr(type(numpy_adapter), "batch_norm_stats",
                        lambda self, x: calls.append(x.shape) or real(self, x))
    bn = nnx.BatchNorm2d(7)
    bn(nnx.asarray(rng.standard_normal((2, 7, 3, 3)).astype(np.float32)))
    assert calls == [(2, 7, 9)]  # training-mode BatchNorm took the fused kernels


def test_partly_overlapping_or_read_only_outputs_take_the_numpy_pass(numpy_adapter, lib):
    """A caller's out= that overlaps an input with an offset, or is read-only, never reaches a kernel
    (it would read entries it has already written); the result is the reference's."""
    rng = np.random.default_rng(12)
    buf = rng.standard_normal((9, 8)).astype(np.float32)
    x, out = buf[:-1], buf[1:]  # out is x shifted down one row: row r is written before it is read
    ref = FU.bias_act_forward(np, x.copy(), None, "relu")[0]
    got, _ = numpy_adapter.bias_act_forward(x, None, "relu", out=out)
    np.testing.assert_array_equal(got, ref)
    ro = np.empty((8, 8), np.float32)
    ro.flags.writeable = False
    assert not HK.writable_over(ro, x)
    assert HK.writable_over(buf, buf) and not HK.writable_over(out, x)
