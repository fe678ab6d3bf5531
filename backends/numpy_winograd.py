"""NumPy overrides of the Winograd F(2x2, 3x3) and F(4x4, 3x3) tile transforms (``winograd.py``
is the reference): host kernels of ``host_kernels.c``, one pass per transform, split over nnx's
C thread pool by sample (each sample's tiles are the same arithmetic whatever the split); the
forward's whole block loop (transforms and one GEMM per tile position) is one C task. Other
dtypes, non-contiguous arrays and a machine without the host kernels take the reference.

At the ResNet block's sizes (16 x 64 x 32 x 32, float32, one thread), F(2x2, 3x3): input
transform 2.9 ms against 10.3 ms for the reference's strided passes, output transform 2.0 against
4.2 ms.
"""

from __future__ import annotations

import numpy as np

from . import host_kernels as hk
from .addresses import addr
from .threads import MIN_PARALLEL_ELEMENTS, blas_one_thread, cblas_gemm, get_num_threads, parallel_rows
from .winograd import TRANSFORMS

#: G (a x 3) of F(2x2) and F(4x4), in double, for the filter kernels
_G = {m: np.ascontiguousarray(TRANSFORMS[m][1], dtype=np.float64) for m in (2, 4)}

#: Transformed tiles per block of :meth:`NumpyWinograd.winograd_conv` (bytes; at least one sample).
WINOGRAD_BLOCK_BYTES = 1 << 20


def _scratch(kind: str, m: int, th: int, tw: int) -> int:
    """Entries of scratch each kernel of ``host_kernels.c`` needs per call (its comment says the same)."""
    if kind == "in":
        return 2 * (m + 2) * (m * tw + 2) if m == 2 else 4 * (tw + 1) * (4 * th + 9)
    if kind == "out":
        return 0 if m == 2 else 40 * tw
    return 6 * 2 * tw if m == 2 else 4 * tw * (4 * th + 7)  # "dy"


class NumpyWinograd:
    """Mixed into the NumPy adapter."""

    def fast_winograd_tiles(self):
        return (2, 4) if hk.kernels() is not None else ()

    def winograd_filter_transform(self, weight, m, flip=False):
        lib = hk.kernels()
        if lib is None or m not in (2, 4) or weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3) \
                or not hk.supports(weight):
            return super().winograd_filter_transform(weight, m, flip)
        o, c = weight.shape[:2]
        rows, cols = (c, o) if flip else (o, c)
        a = m + 2
        u = np.empty((a * a, rows, cols), dtype=weight.dtype)
        g = _G[m]
        lib.run("wino_filter", weight.dtype,
                (addr(weight), rows, cols, a, addr(g), int(flip), addr(u)), rows, u.size)
        return u

    def winograd_filter_grad(self, du, m):
        lib = hk.kernels()
        if lib is None or m not in (2, 4) or du.ndim != 3 or du.shape[0] != (m + 2) ** 2 or not hk.supports(du):
            return super().winograd_filter_grad(du, m)
        o, c = du.shape[1:]
        dw = np.empty((o, c, 3, 3), dtype=du.dtype)
        g = _G[m]
        lib.run("wino_filter_grad", du.dtype, (addr(du), o, c, m + 2, addr(g), addr(dw)), o, du.size)
        return dw

    def winograd_input_transform(self, x, m, top, left, th, tw):
        lib = hk.kernels()
        if lib is None or m not in (2, 4) or x.ndim != 4 or not hk.supports(x) or x.size == 0:
            return super().winograd_input_transform(x, m, top, left, th, tw)
        n, c, h, w = x.shape
        a = m + 2
        v = np.empty((a * a, c, n * th * tw), dtype=x.dtype)
        size, t = _scratch("in", m, th, tw), get_num_threads()
        scratch = np.empty(size * min(n, t), dtype=x.dtype)  # one block per thread
        lib.run("wino_in", x.dtype,
                (m, addr(x), n, c, h, w, top, left, th, tw, addr(v), addr(scratch), size),
                n, v.size, t)
        return v

    def winograd_conv(self, x, u, m, top, left, th, tw, oh, ow):
        """Input transform, GEMMs and output transform per block of ``WINOGRAD_BLOCK_BYTES`` of
        transformed tiles, so the tiles and the products stay in the core's cache instead of
        going through memory three times; the blocks (fixed whatever the thread count) are split
        over nnx's C pool (one task, NumPy's cblas GEMM; the Python pool where that BLAS is not
        OpenBLAS), each block's GEMMs one-thread OpenBLAS calls."""
        lib = hk.kernels()
        if (lib is None or m not in (2, 4) or x.ndim != 4 or u.ndim != 3 or not hk.supports(x, u)
                or x.size == 0 or u.shape[2] != x.shape[1]):
            return super().winograd_conv(x, u, m, top, left, th, tw, oh, ow)
        n, c, h, w = x.shape
        a2, o = (m + 2) ** 2, u.shape[1]
        p = th * tw
        item = x.itemsize
        per_sample = a2 * max(c, o) * p * item
        nb = max(1, min(n, WINOGRAD_BLOCK_BYTES // per_sample))
        blocks = -(-n // nb)
        y = np.empty((n, o, oh, ow), dtype=x.dtype)
        gemm = cblas_gemm()
        if gemm is not None:  # the whole block loop in C, on nnx's C pool
            t = min(blocks, get_num_threads())
            sizes = (a2 * c * nb * p, a2 * o * nb * p, max(_scratch("in", m, th, tw), _scratch("out", m, th, tw)))
            bufs = [np.empty(size * t, dtype=x.dtype) for size in sizes]
            fn = gemm[0] if x.dtype == np.float32 else gemm[1]
            lib.run("wino_block", x.dtype, (fn, int(gemm[2]), m, addr(x), n, c, h, w, top, left, th, tw,
                                            addr(u), o, oh, ow, addr(y), nb,
                                            *(addr(b) for b in bufs), *sizes),
                    blocks, hk.MIN_TASK_ELEMENTS if blocks > 1 else 0, t)
            return y
        fin, fout = lib.fn(f"nnx_wino{m}_in", x.dtype), lib.fn(f"nnx_wino{m}_out", x.dtype)
        xa, ya = addr(x), addr(y)
        x_step, y_step = c * h * w * item, o * oh * ow * item

        def work(lo: int, hi: int) -> None:
            vbuf = np.empty(a2 * c * nb * p, dtype=x.dtype)
            mbuf = np.empty(a2 * o * nb * p, dtype=x.dtype)
            scratch = np.empty(max(_scratch("in", m, th, tw), _scratch("out", m, th, tw)), dtype=x.dtype)
            for blk in range(lo, hi):
                s0 = blk * nb
                k = min(n, s0 + nb) - s0
                v = vbuf[:a2 * c * k * p].reshape(a2, c, k * p)
                mm = mbuf[:a2 * o * k * p].reshape(a2, o, k * p)
                fin(xa + s0 * x_step, 0, k, k, c, h, w, top, left, th, tw, addr(v), addr(scratch))
                np.matmul(u, v, out=mm)
                if m == 2:
                    fout(addr(mm), 0, k, k, o, th, tw, oh, ow, ya + s0 * y_step)
                else:
                    fout(addr(mm), 0, k, k, o, th, tw, oh, ow, ya + s0 * y_step, addr(scratch))

        with blas_one_thread():
            parallel_rows(work, blocks, MIN_PARALLEL_ELEMENTS if blocks > 1 else 0)
        return y

    def winograd_output_transform(self, mm, m, n, th, tw, oh, ow):
        lib = hk.kernels()
        if lib is None or m not in (2, 4) or mm.ndim != 3 or not hk.supports(mm) or mm.size == 0:
            return super().winograd_output_transform(mm, m, n, th, tw, oh, ow)
        o = mm.shape[1]
        y = np.empty((n, o, oh, ow), dtype=mm.dtype)
        size, t = _scratch("out", m, th, tw), get_num_threads()
        scratch = np.empty(size * min(n, t), dtype=mm.dtype)
        lib.run("wino_out", mm.dtype,
                (m, addr(mm), n, o, th, tw, oh, ow, addr(y), addr(scratch), size), n, mm.size, t)
        return y

    def winograd_dy_transform(self, dy, m, th, tw):
        lib = hk.kernels()
        if lib is None or m not in (2, 4) or dy.ndim != 4 or not hk.supports(dy) or dy.size == 0:
            return super().winograd_dy_transform(dy, m, th, tw)
        n, o, oh, ow = dy.shape
        a = m + 2
        d = np.empty((a * a, o, n * th * tw), dtype=dy.dtype)
        size, t = _scratch("dy", m, th, tw), get_num_threads()
        scratch = np.empty(size * min(n, t), dtype=dy.dtype)
        lib.run("wino_dy", dy.dtype,
                (m, addr(dy), n, o, oh, ow, th, tw, addr(d), addr(scratch), size), n, d.size, t)
        return d
