"""NumPy override of max pooling (``fused_api.py``'s im2col/argmax formulation is the reference):
one host-kernel pass forward, keeping each window's maximum as an int32 index in its plane, and
one pass backward that adds ``dy`` at those indices, both split over nnx's C thread pool by plane. Other
dtypes, non-contiguous inputs and a machine without the host kernels take the reference.
"""

from __future__ import annotations

import numpy as np

from . import host_kernels as hk
from .addresses import addr


class NumpyPool:
    """Mixed into the NumPy adapter."""

    def fast_max_pool(self):
        return hk.kernels() is not None

    def max_pool2d_forward(self, x, kernel, stride, dilation, pads, out):
        lib = hk.kernels()
        if lib is None or x.ndim != 4 or not hk.supports(x) or x.size == 0 or x.shape[2] * x.shape[3] >= 2**31:
            y, saved = super().max_pool2d_forward(x, kernel, stride, dilation, pads, out)
            return y, ("reference", saved)
        n, c, h, w = x.shape
        y = np.empty((n, c, out[0], out[1]), dtype=x.dtype)
        idx = np.empty((n, c, out[0], out[1]), dtype=np.int32)
        lib.run("maxpool_fwd", x.dtype, (addr(x), h, w, kernel[0], kernel[1], stride[0], stride[1], dilation[0],
                                         dilation[1], pads[0], pads[1], out[0], out[1], addr(y), addr(idx)),
                n * c, x.size)
        return y, ("host", idx)

    def max_pool2d_backward(self, dy, saved, shape, kernel, stride, dilation, pads, out):
        kind, idx = saved
        if kind != "host":
            return super().max_pool2d_backward(dy, idx, shape, kernel, stride, dilation, pads, out)
        n, c, h, w = shape
        g = np.ascontiguousarray(dy)
        lib = hk.kernels()
        if not hk.supports(g):  # another dtype of dy: the same routing by np.add.at
            dx = np.zeros((n * c, h * w), dtype=g.dtype)
            np.add.at(dx, (np.arange(n * c)[:, None], idx.reshape(n * c, -1)), g.reshape(n * c, -1))
            return dx.reshape(shape)
        dx = np.empty(shape, dtype=g.dtype)
        lib.run("maxpool_bwd", g.dtype, (addr(g), addr(idx), h * w, out[0] * out[1], addr(dx)), n * c,
                dx.size)
        return dx
