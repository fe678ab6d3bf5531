"""NumPy override of the direct convolution (``fused_api.py``'s im2col + product is the reference):
``host_kernels.c``'s ``nnx_conv_direct_fwd`` / ``nnx_conv_direct_dw``, for the convolutions with
few taps per output that ``nnx/functional/_direct_conv.py``'s rule sends here (LeNet-5's first
layer: forward 0.95 -> 0.36 ms, weight gradient 0.53 ms against ~1 ms for the flat-shift path).
The forward is split over nnx's C thread pool by sample, the weight gradient by output channel (each
channel's sums in the same order whatever the split: bit-identical for every thread count).
Other dtypes and a machine without the host kernels take the reference.
"""

from __future__ import annotations

import numpy as np

from . import host_kernels as hk
from .addresses import addr
from .threads import get_num_threads

#: the kernels' block of positions and of output channels (NNX_DJ, NNX_DO in host_kernels.c)
_DJ, _DO = 32, 4


def _scratch(c: int, kh: int, kw: int, oh: int, ow: int) -> int:
    """Scratch entries of one call of either kernel (host_kernels.c says the same)."""
    wp = ow + kw - 1
    run = oh * wp
    runp = -(-run // _DJ) * _DJ
    return c * ((oh + kh - 1) * wp + runp - run + kw) + _DO * runp


class NumpyDirectConv:
    """Mixed into the NumPy adapter."""

    def fast_direct_conv(self):
        return hk.kernels() is not None

    def conv2d_direct(self, x, weight, bias, pads, out):
        lib = hk.kernels()
        if (lib is None or x.ndim != 4 or weight.ndim != 4 or not hk.supports(x, weight)
                or (bias is not None and not hk.supports(weight, bias)) or x.size == 0):
            return super().conv2d_direct(x, weight, bias, pads, out)
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        y = np.empty((n, o, out[0], out[1]), dtype=x.dtype)
        size = _scratch(c, kh, kw, out[0], out[1])
        t = get_num_threads()
        scratch = np.empty(size * min(n, t), dtype=x.dtype)  # one block per thread
        lib.run("conv_direct_fwd", x.dtype, (addr(x), c, h, w, addr(weight), o, kh, kw, pads[0], pads[1],
                                             out[0], out[1], hk.ptr(bias), addr(y), addr(scratch), size),
                n, y.size * c * kh * kw, t)
        return y

    def conv2d_direct_weight_grad(self, x, dy, kernel, pads):
        lib = hk.kernels()
        g = np.ascontiguousarray(dy)
        if lib is None or x.ndim != 4 or g.ndim != 4 or not hk.supports(x, g) or x.size == 0:
            return super().conv2d_direct_weight_grad(x, dy, kernel, pads)
        n, c, h, w = x.shape
        o, oh, ow = g.shape[1:]
        kh, kw = kernel
        dw = np.empty((o, c, kh, kw), dtype=x.dtype)
        size = _scratch(c, kh, kw, oh, ow)
        t = get_num_threads()
        scratch = np.empty(size * min(o, t), dtype=x.dtype)  # one block per thread
        lib.run("conv_direct_dw", x.dtype, (addr(x), addr(g), n, c, h, w, o, kh, kw, pads[0], pads[1], oh,
                                            ow, addr(dw), addr(scratch), size),
                o, g.size * c * kh * kw, t)
        return dw
