"""Convolution layers: Conv1d, Conv2d, Conv3d, ConvTranspose2d.

Names, arguments, defaults, parameter shapes, initialisation and state_dict keys follow
``torch.nn``. A layer checks its hyper-parameters when built and, at each call, that the input
lives with its parameters and has their dtype; the functional op (:mod:`nnx.functional.convolution`)
checks the rest (rank, channels, that the kernel fits) with errors that name the layer.
``padding_mode`` "reflect", "replicate" and "circular" pad the input with :func:`nnx.functional.pad`
before a convolution without padding (as PyTorch); the transposed convolution takes "zeros" only.
Inputs may be batched or unbatched (``(C, L)``, ``(C, H, W)``, ``(C, D, H, W)``), as PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

from .. import functional as F
from .. import init
from ..errors import check_positive_int
from ..functional._unbatched import check_window_rank
from ..functional._validation import check_input, ntuple, rank_error
from ..functional.convolution import check_output_padding, conv_padding
from ..functional.workspace import Workspace
from ..module import Module, Parameter
from ._parameters import full

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def reversed_padding_repeated_twice(padding: str | tuple[int, ...], kernel: tuple[int, ...],
                                    dilation: tuple[int, ...]) -> tuple[int, ...]:
    """The ``F.pad`` tuple of a convolution's padding (last axis first, left then right; PyTorch's split
    of ``"same"``: the extra element on the right).

    >>> reversed_padding_repeated_twice((1, 2), (3, 5), (1, 1))
    (2, 2, 1, 1)
    """
    pads: list[int] = []
    for i in reversed(range(len(kernel))):
        if padding == "valid":
            pads += [0, 0]
        elif padding == "same":
            total = dilation[i] * (kernel[i] - 1)
            pads += [total // 2, total - total // 2]
        else:
            pads += [padding[i], padding[i]]  # type: ignore[index]
    return tuple(pads)


class _ConvNd(Module):
    _n = 2
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, groups: int, bias: bool, padding_mode: str, output_padding: Any,
                 dtype: Any, backend: Any, device: Any) -> None:
        super().__init__()
        name = type(self).__name__
        n = self._n
        # scratch buffers (padded input, im2col blocks) reused across calls, see F.conv2d_forward
        self._workspace = Workspace(max_shapes=4)
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        self.groups = check_positive_int(name, "groups", groups)
        for what, count in (("in_channels", in_channels), ("out_channels", out_channels)):
            if count % groups:
                raise ValueError(f"{name}: {what} must be divisible by groups, got {what}={count}, groups={groups}")
        self.kernel_size = ntuple(name, "kernel_size", kernel_size, n)
        self.stride = ntuple(name, "stride", stride, n)
        self.dilation = ntuple(name, "dilation", dilation, n)
        self.padding: Any = conv_padding(name, padding, self.stride, n, self._transposed)
        self.output_padding = ntuple(name, "output_padding", output_padding, n, allow_zero=True)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported for a transposed convolution "
                             f"(as PyTorch), got {padding_mode!r}")
        self.padding_mode = padding_mode
        if self._transposed:
            check_output_padding(name, self.output_padding, self.stride, self.dilation)
            wshape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            wshape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(full(wshape, 0.0, dtype, backend, device))
        if bias:
            self.bias = Parameter(full((out_channels,), 0.0, dtype, backend, device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's init: kaiming_uniform_(a=sqrt(5)) for the weight, U(+-1/sqrt(fan_in)) for the bias."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1]
            for k in self.kernel_size:
                fan_in *= k
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    @property
    def _where(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._n:
            s += f", padding={self.padding}"  # as torch: padding=same
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def _conv(self, x: Any, op: Any, **kwargs: Any) -> Any:
        """Run the convolution ``op(x, w, b, stride, padding, dilation, groups, **kwargs)`` and record it;
        with a non-zero ``padding_mode`` the input is padded first (``F.pad``) and the convolution has
        no padding of its own; the recorded backward runs both backwards."""
        w, b = self._weights(x)
        if self.padding_mode == "zeros":
            y, backward = op(x, w, b, self.stride, self.padding, self.dilation, self.groups, where=self._where,
                             **kwargs)
            return self.record(y, backward, params=("weight", "bias"))
        if x.ndim == self._n + 1:  # unbatched, as PyTorch: run on a batch of one
            y, backward = self._padded_conv(x[None, ...], op, w, b, **kwargs)

            def unbatched_backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
                dx, grads = backward(dy[None, ...], input_grad)
                return (dx[0, ...] if dx is not None else None), grads

            return self.record(y[0, ...], unbatched_backward, params=("weight", "bias"))
        if x.ndim != self._n + 2:
            layout = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}[self._n]
            raise rank_error(self._where, x, (self._n + 1, self._n + 2), layout + " or unbatched")
        y, backward = self._padded_conv(x, op, w, b, **kwargs)
        return self.record(y, backward, params=("weight", "bias"))

    def _padded_conv(self, x: Any, op: Any, w: Any, b: Any, **kwargs: Any) -> tuple[Any, Any]:
        try:
            xpad, pad_backward = F.pad_forward(x, reversed_padding_repeated_twice(self.padding, self.kernel_size,
                                                                                  self.dilation), self.padding_mode)
        except ValueError as e:
            raise ValueError(f"{self._where}: {e}") from None
        y, conv_backward = op(xpad, w, b, self.stride, 0, self.dilation, self.groups, where=self._where, **kwargs)

        def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
            dxpad, grads = conv_backward(dy, input_grad)
            return (pad_backward(dxpad)[0] if input_grad else None), grads

        return y, backward

    def _weights(self, x: Any) -> tuple[Any, Any]:
        """``(weight, bias)`` arrays, after the boundary check of ``x`` against them."""
        w = self.weight.data
        if type(x) is not type(w) or x.dtype != w.dtype:
            check_input(self._where, x, w)
        return w, (self.bias.data if self.bias is not None else None)


class Conv2d(_ConvNd):
    """2-D convolution over NCHW images (``torch.nn.Conv2d``).

    Args:
        in_channels, out_channels: channels of input and output.
        kernel_size, stride, dilation: an int or a pair.
        padding: an int, a pair, ``"valid"`` (no padding) or ``"same"`` (output size = input
            size; stride 1 only; odd total padding puts the extra row/column bottom/right).
        groups: split channels into groups (``groups == in_channels`` is a depthwise convolution).
        bias: learn an additive bias (default True).
        padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or ``"circular"``: how the
            ``padding`` is filled (the non-zero modes pad with :func:`nnx.functional.pad` first).
        dtype, backend, device: where the parameters are created (``backend`` is nnx's addition).

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, out_channels, OH, OW)`` with
    ``OH = floor((H + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; weight
    ``(out_channels, in_channels/groups, kh, kw)``, bias ``(out_channels,)``. Init as PyTorch.

    >>> import nnx
    >>> conv = nnx.Conv2d(1, 6, 5, padding=2)
    >>> y = conv(nnx.asarray([[[[0.5] * 8] * 8]] * 2))
    >>> tuple(y.shape), tuple(conv.backward(y).shape)
    ((2, 6, 8, 8), (2, 1, 8, 8))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, dtype, backend, device)

    def forward(self, input: Any) -> Any:
        return self._conv(input, F.conv2d_forward, workspace=self._workspace)


class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C, L)`` sequences (``torch.nn.Conv1d``).

    Same arguments as :class:`Conv2d` with ints (or 1-tuples) for ``kernel_size``, ``stride``,
    ``padding`` (or ``"same"``/``"valid"``) and ``dilation``, and the same ``padding_mode``. Weight ``(out_channels,
    in_channels/groups, k)``. Computed as a 2-D convolution of height 1.

    >>> import nnx
    >>> conv = nnx.Conv1d(4, 8, 3, padding="same")
    >>> tuple(conv(nnx.asarray([[[1.0] * 10] * 4])).shape)
    (1, 8, 10)
    """

    _n = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, dtype, backend, device)

    def forward(self, input: Any) -> Any:
        return self._conv(input, F.conv1d_forward)


class Conv3d(_ConvNd):
    """3-D convolution over ``(N, C, D, H, W)`` volumes (``torch.nn.Conv3d``).

    Same arguments as :class:`Conv2d` with ints or triples for ``kernel_size``, ``stride``,
    ``padding`` (or ``"same"``/``"valid"``) and ``dilation``, and the same ``padding_mode``.
    Weight ``(out_channels, in_channels/groups, kd, kh, kw)``. Computed as ``kd`` 2-D
    convolutions of the depth slices (see :mod:`nnx.functional.convolution3d`).

    >>> import nnx
    >>> conv = nnx.Conv3d(2, 4, 3, padding=1)
    >>> tuple(conv(nnx.asarray([[[[[1.0] * 5] * 5] * 5] * 2])).shape)
    (1, 4, 5, 5, 5)
    """

    _n = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, dtype, backend, device)

    def forward(self, input: Any) -> Any:
        return self._conv(input, F.conv3d_forward)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution ("deconvolution", ``torch.nn.ConvTranspose2d``), NCHW.

    Args as PyTorch: ``in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros"``.

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, out_channels, OH, OW)`` with
    ``OH = (H-1)*stride - 2*padding + dilation*(kernel-1) + output_padding + 1``; weight
    ``(in_channels, out_channels/groups, kh, kw)``. ``forward(x, output_size=None)`` may ask
    for a specific output size (it picks ``output_padding``, as PyTorch).

    >>> import nnx
    >>> up = nnx.ConvTranspose2d(2, 1, 4, stride=2, padding=1)   # doubles H and W
    >>> tuple(up(nnx.asarray([[[[1.0] * 3] * 3] * 2])).shape)
    (1, 1, 6, 6)
    """

    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 padding_mode: str = "zeros", *, dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, dtype, backend, device)

    def _output_padding(self, x: Any, output_size: Any) -> tuple[int, int]:
        """The ``output_padding`` that gives ``output_size`` (PyTorch's rule), or the layer's own."""
        if output_size is None:
            return self.output_padding  # type: ignore[return-value]
        if x.ndim not in (3, 4):
            check_window_rank(self._where, x, 2)
        sizes = tuple(output_size)[-2:]
        out = []
        for i, want in enumerate(sizes):
            smallest = ((x.shape[x.ndim - 2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                        + self.dilation[i] * (self.kernel_size[i] - 1) + 1)
            extra = want - smallest
            if not 0 <= extra < max(self.stride[i], self.dilation[i]):
                raise ValueError(f"{self._where}: requested output size {tuple(sizes)} is not reachable from input "
                                 f"shape {tuple(x.shape)}; along axis {2 + i} it must be in "
                                 f"[{smallest}, {smallest + max(self.stride[i], self.dilation[i]) - 1}]")
            out.append(extra)
        return tuple(out)  # type: ignore[return-value]

    def forward(self, input: Any, output_size: Any = None) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        w, b = self._weights(x)
        op = self._output_padding(x, output_size)
        y, backward = F.conv_transpose2d_forward(x, w, b, self.stride, self.padding, op, self.groups,
                                                 self.dilation, where=self._where)
        return self.record(y, backward, params=("weight", "bias"))
