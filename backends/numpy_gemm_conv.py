"""NumPy override of the GEMM convolution (``fused_api.py``'s im2col + product is the reference):
``host_kernels.c``'s ``nnx_gemm_conv_fwd`` / ``nnx_gemm_conv_bwd`` run, per sample, the zero
padding, an im2col of contiguous runs and NumPy's own cblas GEMM, on nnx's C thread pool with
OpenBLAS held at one thread (``HostKernels.run``). The forward is split by sample; the backward by
fixed blocks of samples, each block's weight gradient summed into its own slot and the slots added in order
afterwards, so the result is bit-identical for every thread count (the blocks depend on the
shapes only). Other dtypes, negative paddings, a BLAS that is not OpenBLAS and a machine without
the host kernels take the reference.
"""

from __future__ import annotations

import numpy as np

from . import host_kernels as hk
from .addresses import addr
from .threads import cblas_gemm, get_num_threads

#: the backward's weight-gradient slots: at most this many blocks of samples, and at most
#: ``_SLOT_BYTES`` for all slots together
_MAX_BLOCKS = 16
_SLOT_BYTES = 32 << 20


def _scratch(c: int, kh: int, kw: int, o: int, out: tuple[int, int]) -> int:
    """Scratch entries of one call of either kernel (host_kernels.c says the same)."""
    wp = out[1] + kw - 1
    run = out[0] * wp
    return c * ((out[0] + kh - 1) * wp + kw) + c * kh * kw * run + o * run


def blocks(n: int, o: int, kc: int, itemsize: int) -> tuple[int, int]:
    """``(samples per block, blocks)`` of the backward for a batch of ``n``: a function of the
    shapes only, so that the weight gradient's sums do not depend on the thread count."""
    most = max(1, min(n, _MAX_BLOCKS, _SLOT_BYTES // max(1, o * kc * itemsize)))
    per = -(-n // most)
    return per, -(-n // per)


class NumpyGemmConv:
    """Mixed into the NumPy adapter."""

    def fast_gemm_conv(self):
        return hk.kernels() is not None and cblas_gemm() is not None

    def _gemm_conv_ok(self, x, weight, pads, *more) -> bool:
        return (hk.kernels() is not None and cblas_gemm() is not None and x.ndim == 4 and weight.ndim == 4
                and hk.supports(x, weight, *more) and x.size > 0 and min(pads) >= 0)

    def conv2d_gemm(self, x, weight, bias, pads, out):
        if not self._gemm_conv_ok(x, weight, pads, *(() if bias is None else (bias,))):
            return super().conv2d_gemm(x, weight, bias, pads, out)
        lib, (sgemm, dgemm, ilp64) = hk.kernels(), cblas_gemm()
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        y = np.empty((n, o, out[0], out[1]), dtype=x.dtype)
        t = get_num_threads()
        size = _scratch(c, kh, kw, o, out)
        scratch = np.empty(size * min(n, t), dtype=x.dtype)  # one block per thread
        gemm = sgemm if x.dtype == np.float32 else dgemm
        lib.run("gemm_conv_fwd", x.dtype, (gemm, int(ilp64), addr(x), c, h, w, addr(weight), o, kh, kw,
                                           pads[0], pads[1], out[0], out[1], hk.ptr(bias), addr(y),
                                           addr(scratch), size),
                n, y.size * c * kh * kw, t)
        return y

    def conv2d_gemm_backward(self, x, weight, dy, pads, input_grad=True):
        g = np.ascontiguousarray(dy)
        if not self._gemm_conv_ok(x, weight, pads, g) or g.shape[0] != x.shape[0]:
            return super().conv2d_gemm_backward(x, weight, dy, pads, input_grad)
        lib, (sgemm, dgemm, ilp64) = hk.kernels(), cblas_gemm()
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        out = g.shape[2:]
        kc = c * kh * kw
        per, nblk = blocks(n, o, kc, x.itemsize)
        slots = np.empty((nblk, o, kc), dtype=x.dtype)
        dx = np.empty(x.shape, dtype=x.dtype) if input_grad else None
        t = get_num_threads()
        size = _scratch(c, kh, kw, o, out)
        scratch = np.empty(size * min(nblk, t), dtype=x.dtype)
        lib.run("gemm_conv_bwd", x.dtype, (sgemm if x.dtype == np.float32 else dgemm, int(ilp64), addr(x),
                                           addr(g), per, n, c, h, w, addr(weight), o, kh, kw, pads[0],
                                           pads[1], out[0], out[1], addr(slots), hk.ptr(dx),
                                           addr(scratch), size),
                nblk, g.size * kc * (2 if input_grad else 1), t)
        dweight = slots[0] if nblk == 1 else np.add.reduce(slots, axis=0)
        return dx, dweight.reshape(weight.shape)
