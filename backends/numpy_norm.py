"""NumPy overrides of the layer-normalisation kernels (``norm.py`` is the reference) and of the
column softmax's forward (``softmax.py``: the same passes, the exponential in place).

A row's normalisation is six elementwise or reduction passes forward and seven backward. Run
whole, each pass streams the full ``(rows, n)`` array through memory; here the rows go in blocks
of about 64 K elements, so a block's passes run on data still in the L2 cache, and the blocks are
split over nnx's thread pool. The per-row work does not depend on the blocking, and the column
sums (``dweight``, ``dbias``) are taken whole afterwards, so the results are bit-identical for
every thread count. Measured on a (4096, 256) float32 LayerNorm at 1 thread: forward + backward
about 5.7 ms whole-array vs 4.6 ms blocked (``benchmarks/bench_transformer.py`` step).

Where the host kernels are built (``host_kernels.py``: C, compiled on first use), the row work of
both kernels and the softmax's column passes run there instead, one or two passes per row or
column block: layer norm forward 2.2 -> 0.85 ms, its input gradient 1.9 -> 0.6 ms, softmax
forward 3.6 -> 2.1 ms, backward 2.0 -> 0.9 ms at the Transformer benchmark's sizes. The NumPy
passes below stay as the path without a compiler (and are tested as such). The batch-norm
kernels run on nnx's C thread pool (by channel); the layer-norm and softmax kernels still on the
Python pool.
"""

from __future__ import annotations

import numpy as np

from . import host_kernels as hk
from .addresses import addr
from .threads import parallel_rows

#: elements per cache block (64 K float32 = 256 KB per array; a block touches three or four arrays)
BLOCK_ELEMENTS = 1 << 16
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _blocks(lo: int, hi: int, n: int):
    step = max(1, BLOCK_ELEMENTS // max(n, 1))
    for a in range(lo, hi, step):
        yield a, min(a + step, hi)


def _fits(x: np.ndarray, n: int, weight, bias) -> bool:
    """The host layer-norm kernels take C-contiguous float32/float64 rows and ``(n,)`` parameters."""
    params = [a for a in (weight, bias) if a is not None]
    return hk.supports(x, *params) and all(a.size == n for a in params) and x.shape[0] > 0


def _softmax_cols_host(lib: hk.HostKernels, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column softmax of ``s`` (..., S, L) in place with the host kernels: per block of
    batches, the max down each column and the subtraction (one pass), NumPy's exponential in
    place, the column sums and the scaling (one pass): the block stays in cache between them."""
    S, L = s.shape[-2], s.shape[-1]
    batches = s.size // (S * L)
    flat = s.reshape(batches, S, L)
    lse = np.empty((*s.shape[:-2], 1, L), dtype=s.dtype)
    m = np.empty((batches, L), dtype=s.dtype)
    z = np.empty((batches, L), dtype=s.dtype)
    sub, scale, item = lib.fn("nnx_colmax_sub", s.dtype), lib.fn("nnx_colsum_scale", s.dtype), s.itemsize
    sa, ma, la, za = addr(s), addr(m), addr(lse), addr(z)
    step = max(1, (2 * BLOCK_ELEMENTS) // (S * L))

    def work(lo: int, hi: int) -> None:
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            sub(sa + a * S * L * item, b - a, S, L, ma + a * L * item)
            np.exp(flat[a:b], out=flat[a:b])
            scale(sa + a * S * L * item, b - a, S, L, ma + a * L * item, la + a * L * item, za + a * L * item)

    parallel_rows(work, batches, s.size)
    return s, lse


def _bn_fits(x: np.ndarray, *per_channel) -> bool:
    """The host batch-norm kernels take C-contiguous float32/float64 ``(N, C, L)`` and ``(C,)`` arrays."""
    given = [a for a in per_channel if a is not None]
    return (x.ndim == 3 and hk.supports(x, *given) and all(a.shape == (x.shape[1],) for a in given)
            and x.size > 0)


class NumpyNorm:
    """Mixed into the NumPy adapter."""

    # Batch norm on (N, C, L): per channel, the statistics in two read passes (sums in double), the
    # normalisation in one, the backward in two; channels split over the thread pool. Forward +
    # backward of the ResNet block's (16, 64, 1024): see docs/cpu_performance.md.
    def fast_batch_norm(self) -> bool:
        return hk.kernels() is not None

    def batch_norm_stats(self, x):
        lib = hk.kernels()
        if lib is None or not _bn_fits(x):
            return super().batch_norm_stats(x)
        n, c, ln = x.shape
        mean, var = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
        lib.run("bn_stats", x.dtype, (addr(x), n, c, ln, addr(mean), addr(var)), c, x.size)
        return mean, var

    def batch_norm_forward(self, x, mean, var, weight, bias, eps):
        lib = hk.kernels()
        if lib is None or not _bn_fits(x, mean, var, weight, bias):
            return super().batch_norm_forward(x, mean, var, weight, bias, eps)
        n, c, ln = x.shape
        y, invstd = np.empty_like(x), np.empty(c, dtype=x.dtype)
        lib.run("bn_fwd", x.dtype, (addr(x), n, c, ln, addr(mean), addr(var), hk.ptr(weight),
                                    hk.ptr(bias), *hk.words(float(eps)), addr(y), addr(invstd)), c, x.size)
        return y, invstd

    def batch_norm_backward(self, dy, x, mean, invstd, weight):
        lib = hk.kernels()
        if lib is None or not _bn_fits(x, mean, invstd, weight) or not hk.supports(dy, x) or dy.shape != x.shape:
            return super().batch_norm_backward(dy, x, mean, invstd, weight)
        n, c, ln = x.shape
        dx, dweight, dbias = np.empty_like(x), np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
        lib.run("bn_bwd", x.dtype, (addr(dy), addr(x), n, c, ln, addr(mean), addr(invstd),
                                    hk.ptr(weight), addr(dx), addr(dweight), addr(dbias)), c, x.size)
        return dx, dweight, dbias

    def layer_norm_rows_forward(self, x, weight, bias, eps):
        if x.ndim != 2 or x.dtype not in _FLOATS:  # float16: the reference (NumPy's mean accumulates wider)
            return super().layer_norm_rows_forward(x, weight, bias, eps)
        rows, n = x.shape
        xhat = np.empty_like(x, order="C")
        y = np.empty_like(xhat)
        invstd = np.empty((rows, 1), dtype=x.dtype)
        lib = hk.kernels()
        if lib is not None and _fits(x, n, weight, bias):
            f, item = lib.fn("nnx_ln_fwd", x.dtype), x.itemsize
            xa, ya, ha, ia = addr(x), addr(y), addr(xhat), addr(invstd)
            wa, ba = hk.ptr(weight), hk.ptr(bias)
            parallel_rows(lambda lo, hi: f(xa + lo * n * item, wa, ba, hi - lo, n, eps, ya + lo * n * item,
                                           ha + lo * n * item, ia + lo * item), rows, x.size)
            return y, xhat, invstd
        inv_n = 1.0 / n
        ones = np.ones(n, dtype=x.dtype)

        def work(lo: int, hi: int) -> None:
            for a, b in _blocks(lo, hi, n):
                xb, hb, ib, yb = x[a:b], xhat[a:b], invstd[a:b], y[a:b]
                mean = np.vecdot(xb, ones)[:, None]  # a row sum as a dot with ones: faster than add.reduce
                mean *= inv_n
                np.subtract(xb, mean, out=hb)
                var = np.vecdot(hb, hb)[:, None]
                var *= inv_n
                var += eps
                np.sqrt(var, out=var)
                np.divide(1.0, var, out=ib)
                hb *= ib
                if weight is not None:
                    np.multiply(hb, weight, out=yb)
                else:
                    np.copyto(yb, hb)
                if bias is not None:
                    yb += bias

        parallel_rows(work, rows, x.size)
        return y, xhat, invstd

    def softmax_cols_forward(self, s):
        if not (isinstance(s, np.ndarray) and s.dtype in _FLOATS and s.flags.writeable):
            return super().softmax_cols_forward(s)
        lib = hk.kernels()
        if lib is not None and s.ndim >= 2 and hk.supports(s) and s.size:
            return _softmax_cols_host(lib, s)
        m = s.max(axis=-2, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0).astype(s.dtype, copy=False)
        s -= m
        np.exp(s, out=s)  # in place: no second (..., S, L) block
        z = s.sum(axis=-2, keepdims=True)
        safe = np.where(z == 0, 1.0, z).astype(s.dtype, copy=False)
        s *= 1.0 / safe
        lse = np.where(z == 0, np.inf, np.log(safe) + m).astype(s.dtype, copy=False)
        return s, lse

    def softmax_cols_backward(self, dp, p):
        lib = hk.kernels()
        if (lib is None or dp.ndim < 2 or not hk.supports(dp, p) or dp.shape != p.shape
                or not hk.writable_over(dp, p) or not dp.size):
            return super().softmax_cols_backward(dp, p)
        S, L = dp.shape[-2], dp.shape[-1]
        f, step = lib.fn("nnx_softmax_cols_bwd", dp.dtype), S * L * dp.itemsize
        da, pa = addr(dp), addr(p)

        def work(lo: int, hi: int) -> None:
            c = np.empty(L, dtype=dp.dtype)  # the column sums, per thread
            f(da + lo * step, pa + lo * step, hi - lo, S, L, addr(c))

        parallel_rows(work, dp.size // (S * L), dp.size)
        return dp

    def layer_norm_rows_backward(self, dy, xhat, invstd, weight, has_bias, input_grad):
        if dy.ndim != 2 or dy.shape != xhat.shape or dy.dtype != xhat.dtype or dy.dtype not in _FLOATS:
            return super().layer_norm_rows_backward(dy, xhat, invstd, weight, has_bias, input_grad)
        dweight = np.einsum("ij,ij->j", dy, xhat) if weight is not None else None
        dbias = np.add.reduce(dy, axis=0) if has_bias else None
        if not input_grad:
            return None, dweight, dbias
        rows, n = dy.shape
        dx = np.empty_like(xhat)
        lib = hk.kernels()
        if lib is not None and _fits(dy, n, weight, None) and hk.supports(dy, xhat, invstd):
            f, item = lib.fn("nnx_ln_bwd", dy.dtype), dy.itemsize
            da, ha, ia, xa, wa = addr(dy), addr(xhat), addr(invstd), addr(dx), hk.ptr(weight)
            parallel_rows(lambda lo, hi: f(da + lo * n * item, ha + lo * n * item, ia + lo * item, wa, hi - lo, n,
                                           xa + lo * n * item), rows, dy.size)
            return dx, dweight, dbias
        inv_n = 1.0 / n
        ones = np.ones(n, dtype=dx.dtype)

        def work(lo: int, hi: int) -> None:
            tmp = np.empty((min(hi - lo, max(1, BLOCK_ELEMENTS // max(n, 1))), n), dtype=dx.dtype)
            for a, b in _blocks(lo, hi, n):
                g, hb, t = dx[a:b], xhat[a:b], tmp[:b - a]
                if weight is not None:
                    np.multiply(dy[a:b], weight, out=g)
                else:
                    np.copyto(g, dy[a:b])
                m1 = np.vecdot(g, ones)[:, None]
                m1 *= inv_n
                m2 = np.vecdot(g, hb)[:, None]
                m2 *= inv_n
                np.multiply(hb, m2, out=t)
                t += m1
                g -= t
                g *= invstd[a:b]

        parallel_rows(work, rows, dy.size)
        return dx, dweight, dbias
