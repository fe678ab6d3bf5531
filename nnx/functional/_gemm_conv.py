"""Convolution as one GEMM per sample on the adapter's own threads (the NumPy backend's host
kernels; every other adapter keeps the flat-shift / im2col paths): ``Backend.conv2d_gemm`` pads
each sample, builds its im2col from contiguous runs and multiplies it by the weight, all inside
one call that the adapter splits over its C thread pool by sample; ``conv2d_gemm_backward``
gives the input and weight gradients the same way, the weight gradient summed over fixed blocks
of samples (bit-identical for every thread count).

Where: the stride-1, undilated, one-group convolutions with non-negative padding that neither
the Winograd nor the direct path takes (LeNet-5's second layer, 5x5 kernels, 3x3 layers below
Winograd's sizes). Why: the flat-shift path's im2col is ``kh*kw`` NumPy copies and its products
one batched ``matmul``, each a separate pass on one core, and a hand-off to Python's thread pool
costs ~100 us on the 2-vCPU VM; one call per layer runs on every core. Measured with
``benchmarks/bench_gemm_conv.py`` (docs/cpu_performance.md has the table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["ENABLED", "applicable", "conv2d_gemm_forward"]

#: False turns the path off (the tests pin the flat-shift path with it)
ENABLED = True


def applicable(b: Any, x: Array, weight: Array, stride: tuple[int, int], dilation: tuple[int, int], groups: int,
               pads: tuple[int, int, int, int]) -> bool:
    """Whether ``conv2d_forward`` takes :func:`conv2d_gemm_forward` for these operands."""
    return (ENABLED and stride == (1, 1) and dilation == (1, 1) and groups == 1 and min(pads) >= 0
            and b.fast_gemm_conv())


def conv2d_gemm_forward(b: Any, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
                        out: tuple[int, int]) -> tuple[Array, Backward]:
    """``conv2d_forward`` by the adapter's GEMM kernels: ``(y, backward)`` with
    ``backward(dy, input_grad=True) -> (dx or None, (dweight, dbias))``."""
    y = b.conv2d_gemm(x, weight, bias, (pads[0], pads[2]), out)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dx, dweight = b.conv2d_gemm_backward(x, weight, dy, (pads[0], pads[2]), input_grad)
        return dx, (dweight, b.channel_sum(dy) if bias is not None else None)

    return y, backward
