"""Pooling layers: MaxPool1d/2d/3d, AvgPool1d/2d/3d, AdaptiveAvgPool1d/2d, AdaptiveMaxPool2d.

Arguments and defaults follow ``torch.nn``. A layer validates its arguments when built (with the
functional op's own checks, :mod:`nnx.functional.pooling`) and, at each call, that the input is a
floating-point array; the op checks the rest with errors that name the layer.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..functional._validation import check_array_input
from ..functional.pooling import adaptive_output_size, check_divisor_override, pool_arguments
from ..functional.pooling_extra import adaptive_output_size_1d, pool_arguments_nd
from ..module import Module

__all__ = ["AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
           "MaxPool1d", "MaxPool2d", "MaxPool3d"]


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


def _refuse_indices(name: str, return_indices: bool) -> None:
    if return_indices:
        raise NotImplementedError(f"{name}: return_indices=True is not supported")


class _MaxPoolNd(Module):
    _n = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        _refuse_indices(name, return_indices)
        k, s, p, d = pool_arguments_nd(name, self._n, kernel_size, stride, padding, dilation)
        one = self._n == 1  # the 1-D layer keeps ints, as torch.nn.MaxPool1d
        self.kernel_size, self.stride, self.padding, self.dilation = (v[0] if one else v for v in (k, s, p, d))
        self.return_indices = False
        self.ceil_mode = bool(ceil_mode)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"{type(self).__name__}({self.extra_repr()})"
        check_array_input(where, x)
        op = F.max_pool1d_forward if self._n == 1 else F.max_pool3d_forward
        y, backward = op(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """1-D max pooling of ``(N, C, L)`` (``torch.nn.MaxPool1d``).

    Args as :class:`MaxPool2d` with ints: ``kernel_size``, ``stride`` (default ``kernel_size``),
    ``padding`` (implicit -inf, at most half the kernel), ``dilation``, ``ceil_mode``; the gradient
    goes to the first maximum. ``return_indices`` is not supported. Computed as the 2-D pool of
    the ``(N, C, 1, L)`` view.

    >>> import nnx
    >>> nnx.to_numpy(nnx.MaxPool1d(2)(nnx.asarray([[[1.0, 3.0, 2.0, 0.0]]]))).tolist()
    [[[3.0, 2.0]]]
    """

    _n = 1


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling of ``(N, C, D, H, W)`` (``torch.nn.MaxPool3d``).

    Args as :class:`MaxPool2d` with ints or triples. The gradient goes to the first maximum in
    ``(d, h, w)`` order, as PyTorch. ``return_indices`` is not supported. Computed separably: a
    2-D pool over (H, W), then one over D.

    >>> import nnx
    >>> tuple(nnx.MaxPool3d(2)(nnx.asarray([[[[[1.0] * 4] * 4] * 4]])).shape)
    (1, 1, 2, 2, 2)
    """

    _n = 3


class _AvgPoolNd(Module):
    """The 1-D and 3-D average pools (the 2-D one keeps its own pair-based validation)."""

    _n = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        k, s, p, _ = pool_arguments_nd(name, self._n, kernel_size, stride, padding)
        one = self._n == 1  # the 1-D layer keeps ints, as torch.nn.AvgPool1d
        self.kernel_size, self.stride, self.padding = (v[0] if one else v for v in (k, s, p))
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if not one:
            check_divisor_override(name, divisor_override)
            self.divisor_override = divisor_override

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"{type(self).__name__}({self.extra_repr()})"
        check_array_input(where, x)
        args = (x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)
        if self._n == 1:
            y, backward = F.avg_pool1d_forward(*args, where=where)
        else:
            y, backward = F.avg_pool3d_forward(*args, self.divisor_override, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """1-D average pooling of ``(N, C, L)`` (``torch.nn.AvgPool1d``).

    Args: ``kernel_size``, ``stride`` (default ``kernel_size``), ``padding`` (zeros, at most half
    the kernel), ``ceil_mode``, ``count_include_pad=True``.

    >>> import nnx
    >>> nnx.to_numpy(nnx.AvgPool1d(2)(nnx.asarray([[[1.0, 3.0, 2.0, 0.0]]]))).tolist()
    [[[2.0, 1.0]]]
    """

    _n = 1

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:  # no divisor_override, as torch.nn.AvgPool1d
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool3d(_AvgPoolNd):
    """3-D average pooling of ``(N, C, D, H, W)`` (``torch.nn.AvgPool3d``).

    Args as :class:`AvgPool2d` with ints or triples: ``kernel_size``, ``stride``, ``padding``,
    ``ceil_mode``, ``count_include_pad=True``, ``divisor_override``. Computed separably (the
    divisor is the product of the per-axis counts, as PyTorch's).

    >>> import nnx
    >>> tuple(nnx.AvgPool3d(2)(nnx.asarray([[[[[1.0] * 4] * 4] * 4]])).shape)
    (1, 1, 2, 2, 2)
    """

    _n = 3


class AdaptiveAvgPool1d(Module):
    """Adaptive 1-D average pooling of ``(N, C, L)`` to ``output_size`` positions (``torch.nn.AdaptiveAvgPool1d``).

    >>> import nnx
    >>> nnx.to_numpy(nnx.AdaptiveAvgPool1d(1)(nnx.asarray([[[1.0, 3.0, 2.0]]]))).tolist()
    [[[2.0]]]
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        adaptive_output_size_1d("AdaptiveAvgPool1d", output_size)
        self.output_size = output_size

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"AdaptiveAvgPool1d(output_size={self.output_size!r})"
        check_array_input(where, x)
        y, backward = F.adaptive_avg_pool1d_forward(x, self.output_size, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"


class AdaptiveMaxPool2d(Module):
    """Adaptive 2-D max pooling to a fixed output size (``torch.nn.AdaptiveMaxPool2d``), NCHW.

    ``output_size``: an int or a pair (``None`` in a pair keeps that input size); PyTorch's
    (possibly overlapping) windows; the gradient goes to the first maximum of each window.
    ``return_indices`` is not supported.

    >>> import nnx
    >>> nnx.to_numpy(nnx.AdaptiveMaxPool2d(1)(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]))).tolist()
    [[[[4.0]]]]
    """

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__()
        _refuse_indices("AdaptiveMaxPool2d", return_indices)
        adaptive_output_size("AdaptiveMaxPool2d", output_size)
        self.output_size = output_size
        self.return_indices = False

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"AdaptiveMaxPool2d(output_size={self.output_size!r})"
        check_array_input(where, x)
        y, backward = F.adaptive_max_pool2d_forward(x, self.output_size, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"
