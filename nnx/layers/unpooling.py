"""Max unpooling: MaxUnpool2d (``torch.nn.MaxUnpool2d``), the partial inverse of MaxPool2d."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..functional._validation import check_array_input, pair
from ..module import Module

__all__ = ["MaxUnpool2d"]


class MaxUnpool2d(Module):
    """Partial inverse of :class:`MaxPool2d` (``torch.nn.MaxUnpool2d``): the values of the
    pooled input go back to the positions ``indices`` says (``MaxPool2d(return_indices=True)``),
    every other output element is zero.

    Args as PyTorch: ``kernel_size``, ``stride`` (default ``kernel_size``), ``padding``.
    ``forward(input, indices, output_size=None)``: ``input`` ``(N, C, H, W)`` or ``(C, H, W)``,
    ``indices`` of the same shape; the output is ``(N, C, OH, OW)`` with
    ``OH = (H-1)*stride - 2*padding + kernel_size``, or ``output_size`` (within ``stride`` of it:
    give the pooled input's size when pooling dropped rows). ``backward(dy)`` returns the
    gradient of ``input`` (``dy`` gathered at the indices).

    >>> import nnx
    >>> pool, unpool = nnx.MaxPool2d(2, return_indices=True), nnx.MaxUnpool2d(2)
    >>> y, idx = pool(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]))
    >>> nnx.to_numpy(unpool(y, idx)).tolist()
    [[[[0.0, 0.0], [4.0, 0.0]]]]
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size = pair("MaxUnpool2d", "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair("MaxUnpool2d", "stride", stride)
        self.padding = pair("MaxUnpool2d", "padding", padding, allow_zero=True)

    def forward(self, input: Any, indices: Any, output_size: Any = None) -> Any:
        where = f"MaxUnpool2d({self.extra_repr()})"
        check_array_input(where, input)
        y, backward = F.max_unpool2d_forward(input, indices, self.kernel_size, self.stride, self.padding,
                                             output_size, where=where)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
