"""Convolutional-network layers (NCHW): convolutions, pooling, normalisation, channel dropout.

Names, arguments, defaults, parameter shapes, initialisation and state_dict keys follow
``torch.nn``. Each layer checks its input at the boundary (rank, channels, dtype, backend, and
that the kernel fits the padded input) and raises an error naming the layer, what it expected
and what it got. Only ``padding_mode="zeros"`` is supported; inputs must be batched (PyTorch
also accepts unbatched ``(C, H, W)``; here add the batch axis with ``x[None, ...]``).
"""

from __future__ import annotations

import math
from typing import Any

import nnx_backends as backends

from .. import init
from ..backend import get_backend, get_default_dtype
from ..errors import check_floating, check_positive_int, check_probability, check_same_backend
from .. import functional as F
from ..functional._validation import ntuple, pair
from ..functional.convolution import _conv2d_forward
from ..functional.workspace import Workspace
from ..module import Module, Parameter

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d", "ConvTranspose2d",
    "Dropout2d", "GroupNorm", "LayerNorm", "MaxPool2d",
]


def _backend_for(dtype: Any, backend: Any, device: Any) -> tuple[backends.Backend, Any]:
    b = get_backend() if backend is None and device is None else backends.get(
        backend if backend is not None else get_backend().name, device)
    return b, b.dtype(dtype if dtype is not None else get_default_dtype())


def _full(shape: tuple[int, ...], value: float, dtype: Any, backend: Any, device: Any) -> Any:
    b, dt = _backend_for(dtype, backend, device)
    return b.xp.full(shape, value, dtype=dt, device=b.device)


def _check_input(where: str, x: Any, ref: Any, ndims: tuple[int, ...], layout: str, channels: int) -> None:
    """The boundary checks shared by every layer here (run only when the fast test fails)."""
    check_same_backend(where, x, ref)
    check_floating(where, x, ref.dtype)
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{where}: expected {want} input of shape {layout}, got shape {tuple(x.shape)}"
                         + ("; add a batch axis with x[None, ...]" if x.ndim == min(ndims) - 1 else ""))
    if x.shape[1] != channels:
        raise ValueError(f"{where}: expected input with {channels} channels (dimension 1), "
                         f"got shape {tuple(x.shape)}")


def _check_plain_input(where: str, x: Any, ndims: tuple[int, ...], layout: str) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{where}: expected an array, got {type(x).__name__}")
    check_floating(where, x)
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{where}: expected {want} input of shape {layout}, got shape {tuple(x.shape)}"
                         + ("; add a batch axis with x[None, ...]" if x.ndim == min(ndims) - 1 else ""))


_FLOAT_DTYPES: set = set()


def _plain_ok(x: Any, ndims: tuple[int, ...]) -> bool:
    """Fast test for parameter-free layers: an array of an accepted rank and a known floating dtype."""
    try:
        return x.ndim in ndims and (type(x), x.dtype) in _FLOAT_DTYPES
    except (AttributeError, TypeError):
        return False


def _check_plain(where: str, x: Any, ndims: tuple[int, ...], layout: str) -> None:
    if not _plain_ok(x, ndims):
        _check_plain_input(where, x, ndims, layout)
        try:
            _FLOAT_DTYPES.add((type(x), x.dtype))  # the library's type first: no cross-library ==
        except TypeError:
            pass


def _check_fits(where: str, x: Any, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
                pad_totals: tuple[int, ...], ceil_mode: bool = False) -> None:
    spatial = tuple(x.shape[2:])
    for size, k, s, p, d in zip(spatial, kernel, stride, pad_totals, dilation):
        if F.conv_output_size(size, k, s, p, d, ceil_mode) <= 0:
            eff = tuple(dd * (kk - 1) + 1 for kk, dd in zip(kernel, dilation))
            raise ValueError(
                f"{where}: kernel size {tuple(kernel)} (dilated extent {eff}) is larger than the padded input: "
                f"spatial size {spatial} with total padding {tuple(pad_totals)}; got input shape {tuple(x.shape)}"
            )


# ============================================================================ convolutions
class _ConvNd(Module):
    _n = 2
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, groups: int, bias: bool, padding_mode: str, output_padding: Any,
                 dtype: Any, backend: Any, device: Any) -> None:
        super().__init__()
        name = type(self).__name__
        n = self._n
        # scratch buffers (padded input, im2col blocks) reused across calls, see F._conv2d_forward
        self._workspace = Workspace(max_shapes=4)
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        self.groups = check_positive_int(name, "groups", groups)
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels must be divisible by groups, got in_channels={in_channels}, "
                             f"groups={groups}")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels must be divisible by groups, got out_channels={out_channels}, "
                             f"groups={groups}")
        self.kernel_size = ntuple(name, "kernel_size", kernel_size, n, False)
        self.stride = ntuple(name, "stride", stride, n, False)
        self.dilation = ntuple(name, "dilation", dilation, n, False)
        if isinstance(padding, str):
            if self._transposed or padding not in ("same", "valid"):
                allowed = ("an int or a tuple of ints" if self._transposed
                           else "an int, a tuple of ints, 'same' or 'valid'")
                raise ValueError(f"{name}: padding must be {allowed}, got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions "
                                 f"(stride must be 1), got stride={self.stride}")
            self.padding: Any = padding
        else:
            self.padding = ntuple(name, "padding", padding, n, True)
        self.output_padding = ntuple(name, "output_padding", output_padding, n, True)
        if padding_mode != "zeros":
            raise NotImplementedError(f"{name}: only padding_mode='zeros' is supported, got {padding_mode!r}")
        self.padding_mode = padding_mode
        if self._transposed:
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= max(s, d):
                    raise ValueError(f"{name}: output_padding must be smaller than either stride or dilation, got "
                                     f"output_padding={self.output_padding}, stride={self.stride}, "
                                     f"dilation={self.dilation}")
            wshape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            wshape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(_full(wshape, 0.0, dtype, backend, device))
        if bias:
            self.bias = Parameter(_full((out_channels,), 0.0, dtype, backend, device))
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

    def _pad_totals(self) -> tuple[int, ...]:
        if self.padding == "valid":
            return (0,) * self._n
        if self.padding == "same":
            return tuple(d * (k - 1) for k, d in zip(self.kernel_size, self.dilation))
        return tuple(2 * p for p in self.padding)

    def _check(self, x: Any) -> None:
        layout = "(N, C, L)" if self._n == 1 else "(N, C, H, W)"
        _check_input(self._where, x, self.weight.data, (self._n + 2,), layout, self.in_channels)

    def _fast_ok(self, x: Any) -> bool:
        w = self.weight.data
        return type(x) is type(w) and x.dtype == w.dtype and x.ndim == self._n + 2 and x.shape[1] == self.in_channels

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._n:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def forward(self, x: Any) -> Any:
        if not self._fast_ok(x):
            self._check(x)
        _check_fits(self._where, x, self.kernel_size, self.stride, self.dilation, self._pad_totals())
        b = self.bias.data if self.bias is not None else None
        if type(self)._op is F.conv2d_forward:  # the 2-D kernel reuses this layer's scratch buffers
            y, backward = _conv2d_forward(x, self.weight.data, b, self.stride, self.padding, self.dilation,
                                            self.groups, self._workspace)
        else:
            y, backward = type(self)._op(x, self.weight.data, b, self.stride, self.padding, self.dilation,
                                         self.groups)
        return self.record(y, backward, params=("weight", "bias"))


class Conv2d(_ConvNd):
    """2-D convolution over NCHW images (``torch.nn.Conv2d``).

    Args:
        in_channels, out_channels: channels of input and output.
        kernel_size, stride, dilation: an int or a pair.
        padding: an int, a pair, ``"valid"`` (no padding) or ``"same"`` (output size = input
            size; stride 1 only; odd total padding puts the extra row/column bottom/right).
        groups: split channels into groups (``groups == in_channels`` is a depthwise convolution).
        bias: learn an additive bias (default True).
        padding_mode: only ``"zeros"`` is supported.
        dtype, backend, device: where the parameters are created (``backend`` is nnx's addition).

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, out_channels, OH, OW)`` with
    ``OH = floor((H + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; weight
    ``(out_channels, in_channels/groups, kh, kw)``, bias ``(out_channels,)``. Init as PyTorch.

    >>> conv = nnx.Conv2d(1, 6, 5, padding=2)      # doctest: +SKIP
    >>> y = conv(x); dx = conv.backward(dy)         # doctest: +SKIP
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, dtype, backend, device)

    _op = staticmethod(F.conv2d_forward)


class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C, L)`` sequences (``torch.nn.Conv1d``).

    Same arguments as :class:`Conv2d` with ints (or 1-tuples) for ``kernel_size``, ``stride``,
    ``padding`` (or ``"same"``/``"valid"``) and ``dilation``. Weight ``(out_channels,
    in_channels/groups, k)``. Computed as a 2-D convolution of height 1.

    >>> conv = nnx.Conv1d(4, 8, 3, padding="same")   # doctest: +SKIP
    """

    _n = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, 0, dtype, backend, device)

    _op = staticmethod(F.conv1d_forward)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution ("deconvolution", ``torch.nn.ConvTranspose2d``), NCHW.

    Args as PyTorch: ``in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros"``.

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, out_channels, OH, OW)`` with
    ``OH = (H-1)*stride - 2*padding + dilation*(kernel-1) + output_padding + 1``; weight
    ``(in_channels, out_channels/groups, kh, kw)``. ``forward(x, output_size=None)`` may ask
    for a specific output size (it picks ``output_padding``, as PyTorch).

    >>> up = nnx.ConvTranspose2d(16, 8, 4, stride=2, padding=1)   # doubles H and W  # doctest: +SKIP
    """

    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 padding_mode: str = "zeros", *, dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, dtype, backend, device)

    def _output_padding(self, x: Any, output_size: Any) -> tuple[int, int]:
        if output_size is None:
            return self.output_padding  # type: ignore[return-value]
        sizes = tuple(output_size)[-2:]
        out = []
        for i, want in enumerate(sizes):
            smallest = ((x.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                        + self.dilation[i] * (self.kernel_size[i] - 1) + 1)
            extra = want - smallest
            if not 0 <= extra < max(self.stride[i], self.dilation[i]):
                raise ValueError(f"{self._where}: requested output size {tuple(sizes)} is not reachable from input "
                                 f"shape {tuple(x.shape)}; along axis {2 + i} it must be in "
                                 f"[{smallest}, {smallest + max(self.stride[i], self.dilation[i]) - 1}]")
            out.append(extra)
        return tuple(out)  # type: ignore[return-value]

    def forward(self, x: Any, output_size: Any = None) -> Any:
        if not self._fast_ok(x):
            self._check(x)
        op = self._output_padding(x, output_size)
        sizes = tuple((x.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                      + self.dilation[i] * (self.kernel_size[i] - 1) + op[i] + 1 for i in range(2))
        if min(sizes) <= 0:
            raise ValueError(f"{self._where}: padding {self.padding} leaves no output for input shape "
                             f"{tuple(x.shape)} (computed output size {sizes}); use less padding or a larger input")
        b = self.bias.data if self.bias is not None else None
        y, backward = F.conv_transpose2d_forward(x, self.weight.data, b, self.stride, self.padding, op, self.groups,
                                                 self.dilation)
        return self.record(y, backward, params=("weight", "bias"))


# ============================================================================ pooling
class MaxPool2d(Module):
    """2-D max pooling (``torch.nn.MaxPool2d``): the maximum of each ``kernel_size`` window.

    Args: ``kernel_size``, ``stride`` (default: ``kernel_size``), ``padding`` (implicit -inf,
    at most half the kernel), ``dilation``, ``ceil_mode`` (round the output size up). The
    gradient goes to the first maximum of each window, as PyTorch. ``return_indices`` is not
    supported.

    >>> pool = nnx.MaxPool2d(2)         # (N, C, 28, 28) -> (N, C, 14, 14)   # doctest: +SKIP
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        name = "MaxPool2d"
        if return_indices:
            raise NotImplementedError(f"{name}: return_indices=True is not supported")
        k = pair(name, "kernel_size", kernel_size)
        s = k if stride is None else pair(name, "stride", stride)
        p = pair(name, "padding", padding, allow_zero=True)
        d = pair(name, "dilation", dilation)
        if any(2 * pp > kk for pp, kk in zip(p, k)):
            raise ValueError(f"{name}: padding should be at most half of the kernel size, got padding={p}, "
                             f"kernel_size={k}")
        self.kernel_size, self.stride, self.padding, self.dilation = k, s, p, d
        self.return_indices = False
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: Any) -> Any:
        where = f"MaxPool2d({self.extra_repr()})"
        _check_plain(where, x, (4,), "(N, C, H, W)")
        _check_fits(where, x, self.kernel_size, self.stride, self.dilation, tuple(2 * p for p in self.padding),
                    self.ceil_mode)
        y, backward = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                           self.ceil_mode)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (``torch.nn.AvgPool2d``).

    Args: ``kernel_size``, ``stride`` (default: ``kernel_size``), ``padding`` (zeros, at most
    half the kernel), ``ceil_mode``, ``count_include_pad`` (count padded zeros in the divisor,
    default True), ``divisor_override``.

    >>> pool = nnx.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)   # doctest: +SKIP
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        name = "AvgPool2d"
        k = pair(name, "kernel_size", kernel_size)
        s = k if stride is None else pair(name, "stride", stride)
        p = pair(name, "padding", padding, allow_zero=True)
        if any(2 * pp > kk for pp, kk in zip(p, k)):
            raise ValueError(f"{name}: padding should be at most half of the kernel size, got padding={p}, "
                             f"kernel_size={k}")
        if divisor_override is not None and (isinstance(divisor_override, bool)
                                             or not isinstance(divisor_override, int) or divisor_override == 0):
            raise ValueError(f"{name}: divisor_override must be a non-zero integer, got {divisor_override!r}")
        self.kernel_size, self.stride, self.padding = k, s, p
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x: Any) -> Any:
        where = f"AvgPool2d({self.extra_repr()})"
        _check_plain(where, x, (4,), "(N, C, H, W)")
        _check_fits(where, x, self.kernel_size, self.stride, (1, 1), tuple(2 * p for p in self.padding),
                    self.ceil_mode)
        y, backward = F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                           self.count_include_pad, self.divisor_override)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive 2-D average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``).

    ``output_size``: an int or a pair (``None`` in a pair keeps that input size). Any sizes
    work, including ones that do not divide the input (PyTorch's overlapping windows).

    >>> gap = nnx.AdaptiveAvgPool2d(1)     # global average pooling -> (N, C, 1, 1)   # doctest: +SKIP
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if len(sizes) != 2 or any(s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1)
                                  for s in sizes):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be a positive integer or a pair of positive "
                             f"integers (or None), got {output_size!r}")
        self.output_size = output_size

    def forward(self, x: Any) -> Any:
        _check_plain(f"AdaptiveAvgPool2d(output_size={self.output_size!r})", x, (4,), "(N, C, H, W)")
        y, backward = F.adaptive_avg_pool2d_forward(x, self.output_size)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"


# ============================================================================ normalisation
def _register_affine(module: Module, shape: tuple[int, ...], affine: bool, bias: bool, dtype: Any, backend: Any,
                     device: Any) -> None:
    """The normalisation layers' ``weight`` (ones) and ``bias`` (zeros) of ``shape``, or None for each absent one."""
    module.register_parameter("weight", Parameter(_full(shape, 1.0, dtype, backend, device)) if affine else None)
    module.register_parameter("bias", Parameter(_full(shape, 0.0, dtype, backend, device)) if affine and bias
                              else None)


def _reset_affine(module: Module) -> None:
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class _BatchNorm(Module):
    _ndims: tuple[int, ...] = (4,)
    _layout = "(N, C, H, W)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, dtype: Any = None, backend: Any = None,
                 device: Any = None, bias: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_positive_int(name, "num_features", num_features)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"{name}: momentum must be a number in [0, 1] or None, got {momentum!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f"{name}: eps must be a non-negative number, got {eps!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        _register_affine(self, (num_features,), affine, bias, dtype, backend, device)
        if track_running_stats:
            self.register_buffer("running_mean", _full((num_features,), 0.0, dtype, backend, device))
            self.register_buffer("running_var", _full((num_features,), 1.0, dtype, backend, device))
            b, _ = _backend_for(dtype, backend, device)
            self.register_buffer("num_batches_tracked", b.xp.asarray(0, dtype=b.xp.int64, device=b.device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches counted."""
        if self.track_running_stats:
            xp = backends.backend_of(self.running_mean).xp
            self.running_mean = xp.zeros_like(self.running_mean)
            self.running_var = xp.ones_like(self.running_var)
            self.num_batches_tracked = xp.zeros_like(self.num_batches_tracked)

    def reset_parameters(self) -> None:
        """Running statistics reset; weight 1, bias 0."""
        self.reset_running_stats()
        _reset_affine(self)

    def _ref(self) -> Any:
        if self.weight is not None:
            return self.weight.data
        return self.running_mean

    def forward(self, x: Any) -> Any:
        where = f"{type(self).__name__}({self.extra_repr()})"
        ref = self._ref()
        if ref is not None:
            if type(x) is not type(ref) or x.dtype != ref.dtype or x.ndim not in self._ndims \
                    or x.shape[1] != self.num_features:
                _check_input(where, x, ref, self._ndims, self._layout, self.num_features)
        else:
            if getattr(x, "ndim", None) not in self._ndims or x.shape[1] != self.num_features:
                _check_plain_input(where, x, self._ndims, self._layout)
                raise ValueError(f"{where}: expected input with {self.num_features} channels (dimension 1), "
                                 f"got shape {tuple(x.shape)}")
        training = self.training
        use_batch = training or not self.track_running_stats
        if use_batch:
            count = x.shape[0]
            for s in x.shape[2:]:
                count *= s
            if count <= 1:
                raise ValueError(f"{where}: expected more than 1 value per channel when training, got input "
                                 f"shape {tuple(x.shape)}")
        momentum: Any = 0.0 if self.momentum is None else self.momentum
        if training and self.track_running_stats:
            self.num_batches_tracked = self.num_batches_tracked + 1
            if self.momentum is None:  # cumulative moving average, on the device (no host read)
                xp = backends.backend_of(self.running_mean).xp
                momentum = 1.0 / xp.astype(self.num_batches_tracked, self.running_mean.dtype)
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        rm = self.running_mean if self.track_running_stats else None
        rv = self.running_var if self.track_running_stats else None
        y, backward = F.batch_norm_forward(x, rm, rv, w, b, use_batch, momentum, self.eps)
        return self.record(y, backward, params=("weight", "bias"))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of NCHW images per channel (``torch.nn.BatchNorm2d``).

    Args: ``num_features`` (C), ``eps=1e-5``, ``momentum=0.1`` (``None``: cumulative average
    over all batches seen), ``affine=True`` (learn ``weight``/``bias`` of shape ``(C,)``; ``bias=False``
    keeps only the weight, as PyTorch 2.13),
    ``track_running_stats=True`` (buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked``; the running variance is unbiased, as PyTorch).

    Training uses batch statistics and updates the running ones; eval mode uses the running
    statistics (or batch statistics when they are not tracked).

    >>> bn = nnx.BatchNorm2d(16)     # doctest: +SKIP
    """

    _ndims = (4,)
    _layout = "(N, C, H, W)"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs per channel (``torch.nn.BatchNorm1d``).

    Same arguments and buffers as :class:`BatchNorm2d`.

    >>> bn = nnx.BatchNorm1d(64)     # doctest: +SKIP
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes (``torch.nn.LayerNorm``).

    Args: ``normalized_shape`` (int or tuple), ``eps=1e-5``, ``elementwise_affine=True``
    (learn ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``), ``bias=True``.

    >>> ln = nnx.LayerNorm(64)     # x (..., 64)    # doctest: +SKIP
    """

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool) \
            else tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else None
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive integer or a tuple of positive "
                             f"integers, got {normalized_shape!r}")
        self.normalized_shape = shape
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        _register_affine(self, shape, elementwise_affine, bias, dtype, backend, device)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        _reset_affine(self)

    def forward(self, x: Any) -> Any:
        k = len(self.normalized_shape)
        w = self.weight.data if self.weight is not None else None
        if getattr(x, "ndim", 0) < k or tuple(x.shape[x.ndim - k:]) != self.normalized_shape or \
                (w is not None and (type(x) is not type(w) or x.dtype != w.dtype)):
            where = f"LayerNorm({self.extra_repr()})"
            trailing = ", ".join(map(str, self.normalized_shape))
            if w is not None:
                check_same_backend(where, x, w)
                check_floating(where, x, w.dtype)
            else:
                _check_plain_input(where, x, tuple(range(k, k + 8)), f"(*, {trailing})")
            raise ValueError(f"{where}: expected input of shape (*, {trailing}), "
                             f"got shape {tuple(getattr(x, 'shape', ()))}")
        b = self.bias.data if self.bias is not None else None
        y, backward = F.layer_norm_forward(x, self.normalized_shape, w, b, self.eps)
        return self.record(y, backward, params=("weight", "bias"))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Group normalisation (``torch.nn.GroupNorm``): channels in ``num_groups`` groups, each
    normalised over its channels and spatial positions, then a per-channel affine transform.

    Args: ``num_groups``, ``num_channels`` (divisible by ``num_groups``), ``eps=1e-5``,
    ``affine=True`` (``weight`` ones, ``bias`` zeros, shape ``(num_channels,)``; ``bias=False`` drops the bias).
    Input ``(N, C, *)``.

    >>> gn = nnx.GroupNorm(4, 16)     # doctest: +SKIP
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 dtype: Any = None, backend: Any = None, device: Any = None, bias: bool = True) -> None:
        super().__init__()
        self.num_groups = check_positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = check_positive_int("GroupNorm", "num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels must be divisible by num_groups, got num_channels="
                             f"{num_channels}, num_groups={num_groups}")
        self.eps = float(eps)
        self.affine = bool(affine)
        _register_affine(self, (num_channels,), affine, bias, dtype, backend, device)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        _reset_affine(self)

    def forward(self, x: Any) -> Any:
        w = self.weight.data if self.weight is not None else None
        if getattr(x, "ndim", 0) < 2 or x.shape[1] != self.num_channels or \
                (w is not None and (type(x) is not type(w) or x.dtype != w.dtype)):
            where = f"GroupNorm({self.extra_repr()})"
            if w is not None:
                _check_input(where, x, w, tuple(range(2, 10)), "(N, C, *)", self.num_channels)
            else:
                _check_plain_input(where, x, tuple(range(2, 10)), "(N, C, *)")
                raise ValueError(f"{where}: expected input with {self.num_channels} channels (dimension 1), "
                                 f"got shape {tuple(x.shape)}")
        b = self.bias.data if self.bias is not None else None
        y, backward = F.group_norm_forward(x, self.num_groups, w, b, self.eps)
        return self.record(y, backward, params=("weight", "bias"))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class Dropout2d(Module):
    """Channel dropout (``torch.nn.Dropout2d``): while training, zero each whole channel of
    each sample with probability ``p`` and scale the rest by ``1/(1-p)``. Input ``(N, C, H, W)``
    (or ``(N, C, L)``, channel-wise as PyTorch does for 3-D input).

    >>> drop = nnx.Dropout2d(0.1)     # doctest: +SKIP
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_probability("Dropout2d", "p", p, inclusive_high=True)

    def forward(self, x: Any) -> Any:
        _check_plain(f"Dropout2d(p={self.p})", x, (3, 4), "(N, C, H, W)")
        y, backward = F.dropout2d_forward(x, self.p, self.training)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"p={self.p}"
