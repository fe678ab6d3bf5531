"""Sliding-window geometry shared by convolution and pooling: output sizes, padding, tap slices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["conv_output_size", "offset_slice", "output_sizes", "pad2d"]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding_total: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window along one axis (PyTorch's formula).

    ``floor((size + padding_total - dilation*(kernel-1) - 1) / stride) + 1``; with ``ceil_mode``
    the division rounds up, but the last window must start inside the input or left padding
    (as PyTorch). ``padding_total`` is the sum of both sides.

    >>> conv_output_size(28, 5, padding_total=4)
    28
    """
    span = size + padding_total - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding_total // 2:
            out -= 1
        return out
    return span // stride + 1


def output_sizes(where: str, x: Any, kernel: Sequence[int], stride: Sequence[int], pad_totals: Sequence[int],
                 dilation: Sequence[int], ceil_mode: bool = False) -> tuple[int, ...]:
    """Output size along each spatial axis of ``x`` (``(N, C, *spatial)``); raises when a window
    does not fit the padded input.

    >>> import pytest; xp = pytest.importorskip("array_api_strict")   # any Array API namespace
    >>> output_sizes("max_pool2d", xp.zeros((1, 1, 4, 4)), (2, 2), (2, 2), (0, 0), (1, 1))
    (2, 2)
    """
    spatial = tuple(x.shape[2:])
    out = tuple(conv_output_size(n, k, s, p, d, ceil_mode)
                for n, k, s, p, d in zip(spatial, kernel, stride, pad_totals, dilation, strict=True))
    if any(o <= 0 for o in out):
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
        raise ValueError(
            f"{where}: kernel size {tuple(kernel)} (dilated extent {eff}) is larger than the padded input: "
            f"spatial size {spatial} with total padding {tuple(pad_totals)}; got input shape {tuple(x.shape)}"
        )
    return out


def pad2d(b: Any, x: Any, pads: tuple[int, int, int, int], value: float, device: Any) -> Any:
    """Pad the last two axes of ``x`` by (top, bottom, left, right) with ``value``: a filled array
    with ``x`` written inside through the backend ``b`` (in place where the library allows)."""
    top, bottom, left, right = pads
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    out = b.xp.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype, device=device)
    return b.at_set(out, (slice(None), slice(None), slice(top, top + h), slice(left, left + w)), x)


def offset_slice(a: int, dil: int, stride: int, out: int) -> slice:
    """Positions ``a*dil + stride*i`` for ``i < out``: the inputs kernel offset ``a`` touches."""
    start = a * dil
    return slice(start, start + stride * (out - 1) + 1, stride)
