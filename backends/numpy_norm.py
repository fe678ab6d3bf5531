"""NumPy overrides of the layer-normalisation kernels (``norm.py`` is the reference) and of the
column softmax's forward (``softmax.py``: the same passes, the exponential in place).

A row's normalisation is six elementwise or reduction passes forward and seven backward. Run
whole, each pass streams the full ``(rows, n)`` array through memory; here the rows go in blocks
of about 64 K elements, so a block's passes run on data still in the L2 cache, and the blocks are
split over nnx's thread pool. The per-row work does not depend on the blocking, and the column
sums (``dweight``, ``dbias``) are taken whole afterwards, so the results are bit-identical for
every thread count. Measured on a (4096, 256) float32 LayerNorm at 1 thread: forward + backward
about 5.7 ms whole-array vs 4.6 ms blocked (``benchmarks/bench_transformer.py`` step).
"""

from __future__ import annotations

import numpy as np

from .threads import parallel_rows

#: elements per cache block (64 K float32 = 256 KB per array; a block touches three or four arrays)
BLOCK_ELEMENTS = 1 << 16
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _blocks(lo: int, hi: int, n: int):
    step = max(1, BLOCK_ELEMENTS // max(n, 1))
    for a in range(lo, hi, step):
        yield a, min(a + step, hi)


class NumpyNorm:
    """Mixed into the NumPy adapter."""

    def layer_norm_rows_forward(self, x, weight, bias, eps):
        if x.ndim != 2 or x.dtype not in _FLOATS:  # float16: the reference (NumPy's mean accumulates wider)
            return super().layer_norm_rows_forward(x, weight, bias, eps)
        rows, n = x.shape
        xhat = np.empty_like(x, order="C")
        y = np.empty_like(xhat)
        invstd = np.empty((rows, 1), dtype=x.dtype)
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
        m = s.max(axis=-2, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0).astype(s.dtype, copy=False)
        s -= m
        np.exp(s, out=s)  # in place: no second (..., S, L) block
        z = s.sum(axis=-2, keepdims=True)
        safe = np.where(z > 0, z, 1.0).astype(s.dtype, copy=False)
        s *= 1.0 / safe
        with np.errstate(divide="ignore"):
            lse = np.where(z > 0, np.log(safe) + m, np.inf).astype(s.dtype, copy=False)
        return s, lse

    def layer_norm_rows_backward(self, dy, xhat, invstd, weight, has_bias, input_grad):
        if dy.ndim != 2 or dy.shape != xhat.shape or dy.dtype != xhat.dtype or dy.dtype not in _FLOATS:
            return super().layer_norm_rows_backward(dy, xhat, invstd, weight, has_bias, input_grad)
        dweight = np.einsum("ij,ij->j", dy, xhat) if weight is not None else None
        dbias = np.add.reduce(dy, axis=0) if has_bias else None
        if not input_grad:
            return None, dweight, dbias
        rows, n = dy.shape
        dx = np.empty_like(xhat)
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
