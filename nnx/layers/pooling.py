"""Pooling layers (NCHW): MaxPool2d, AvgPool2d, AdaptiveAvgPool2d.

Arguments and defaults follow ``torch.nn``. A layer validates its arguments when built (with the
functional op's own checks, :mod:`nnx.functional.pooling`) and, at each call, that the input is a
floating-point array; the op checks the rest with errors that name the layer.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..functional._validation import check_array_input
from ..functional.pooling import adaptive_output_size, check_divisor_override, pool_arguments
from ..module import Module

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d"]


class MaxPool2d(Module):
    """2-D max pooling (``torch.nn.MaxPool2d``): the maximum of each ``kernel_size`` window.

    Args: ``kernel_size``, ``stride`` (default: ``kernel_size``), ``padding`` (implicit -inf,
    at most half the kernel), ``dilation``, ``ceil_mode`` (round the output size up). The
    gradient goes to the first maximum of each window, as PyTorch. ``return_indices=True``
    returns ``(output, indices)``: int64, flat in each input ``H*W`` plane, as PyTorch (for
    :class:`MaxUnpool2d`); ``backward`` takes the gradient of the output only.

    >>> import nnx
    >>> pool = nnx.MaxPool2d(2)
    >>> nnx.to_numpy(pool(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]))).tolist()
    [[[[4.0]]]]
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = pool_arguments(
            "MaxPool2d", kernel_size, stride, padding, dilation)
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"MaxPool2d({self.extra_repr()})"
        check_array_input(where, x)
        y, backward = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                           self.ceil_mode, self.return_indices, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (``torch.nn.AvgPool2d``).

    Args: ``kernel_size``, ``stride`` (default: ``kernel_size``), ``padding`` (zeros, at most
    half the kernel), ``ceil_mode``, ``count_include_pad`` (count padded zeros in the divisor,
    default True), ``divisor_override``.

    >>> import nnx
    >>> pool = nnx.AvgPool2d(2)
    >>> nnx.to_numpy(pool(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]))).tolist()
    [[[[2.5]]]]
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, _ = pool_arguments("AvgPool2d", kernel_size, stride, padding)
        check_divisor_override("AvgPool2d", divisor_override)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"AvgPool2d({self.extra_repr()})"
        check_array_input(where, x)
        y, backward = F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                           self.count_include_pad, self.divisor_override, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive 2-D average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``).

    ``output_size``: an int or a pair (``None`` in a pair keeps that input size). Any sizes
    work, including ones that do not divide the input (PyTorch's overlapping windows).

    >>> import nnx
    >>> gap = nnx.AdaptiveAvgPool2d(1)     # global average pooling -> (N, C, 1, 1)
    >>> nnx.to_numpy(gap(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]))).tolist()
    [[[[2.5]]]]
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        adaptive_output_size("AdaptiveAvgPool2d", output_size)
        self.output_size = output_size

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"AdaptiveAvgPool2d(output_size={self.output_size!r})"
        check_array_input(where, x)
        y, backward = F.adaptive_avg_pool2d_forward(x, self.output_size, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"
