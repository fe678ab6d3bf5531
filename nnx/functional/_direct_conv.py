"""Direct convolution for few taps per output (the NumPy backend's host kernels; every other
adapter keeps the flat-shift / im2col paths): ``Backend.conv2d_direct`` computes each output
from the zero-padded input without an im2col buffer, ``Backend.conv2d_direct_weight_grad`` the
weight gradient the same way; the input gradient is ``W^T dy`` summed back by ``Backend.col2im``.

Where: stride 1, no dilation, one group, paddings at most ``k - 1``, at most ``MAX_IN``
input channels, ``MAX_OUT`` output channels and ``MAX_TAPS`` taps (``C * kh * kw``): a network's
first layers on images. Measured with ``benchmarks/bench_direct_conv.py`` (NumPy, float32, the
two paths interleaved, 2-vCPU Xeon VM): forward + weight gradient 1.5-1.9x faster than the
flat-shift path at 1 thread on LeNet-5's first layer (1 -> 6 channels, 5x5) and on 3 -> 6
channels 5x5, 1.5-2.6x at 2 threads; with the input gradient too it is 0.8-1.1x, which a first
layer does not need (``model.backward(..., input_grad=False)``). Past 8 output channels or 75 taps
the flat-shift path is about as fast or faster (docs/cpu_performance.md has the table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["MAX_IN", "MAX_OUT", "MAX_TAPS", "applicable", "conv2d_direct_forward"]

#: the rule's limits (``MAX_TAPS = None`` turns the direct path off)
MAX_TAPS: int | None = 75
MAX_IN = 3
MAX_OUT = 8


def applicable(b: Any, x: Array, weight: Array, stride: tuple[int, int], dilation: tuple[int, int], groups: int,
               pads: tuple[int, int, int, int]) -> bool:
    """Whether ``conv2d_forward`` takes :func:`conv2d_direct_forward` for these operands."""
    if MAX_TAPS is None or stride != (1, 1) or dilation != (1, 1) or groups != 1 or not b.fast_direct_conv():
        return False
    o, c, kh, kw = weight.shape
    if c * kh * kw > MAX_TAPS or c > MAX_IN or o > MAX_OUT:
        return False
    return max(pads[0], pads[1]) <= kh - 1 and max(pads[2], pads[3]) <= kw - 1 and min(pads) >= 0


def conv2d_direct_forward(b: Any, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
                          out: tuple[int, int]) -> tuple[Array, Backward]:
    """``conv2d_forward`` by the adapter's direct kernels: ``(y, backward)`` with
    ``backward(dy, input_grad=True) -> (dx or None, (dweight, dbias))``."""
    xp = b.xp
    kh, kw = weight.shape[2], weight.shape[3]
    h, w = x.shape[2], x.shape[3]
    y = b.conv2d_direct(x, weight, bias, (pads[0], pads[2]), out)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dweight = b.conv2d_direct_weight_grad(x, dy, (kh, kw), (pads[0], pads[2]))
        dbias = b.channel_sum(dy) if bias is not None else None
        dx = None
        if input_grad:  # W^T dy onto the taps, summed back by col2im (as a direct convolution of dy with
            # the turned filter it has O * kh * kw taps per output and C outputs: measured slower)
            n, o = dy.shape[0], weight.shape[0]
            dcols = xp.matmul(xp.matrix_transpose(xp.reshape(weight, (o, -1))),
                              xp.reshape(dy, (n, o, out[0] * out[1])))
            dx = b.col2im(dcols, (n, x.shape[1], h, w), (kh, kw), (1, 1), (1, 1), (pads[0], pads[2]), out)
        return dx, (dweight, dbias)

    return y, backward
