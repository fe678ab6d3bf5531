"""Convolution kernels (NCHW), forward + backward: conv2d, conv1d, conv_transpose2d.

Every op ``name_forward(x, ...)`` returns ``(y, backward)`` with
``backward(dy, input_grad=True) -> (dx_or_None, parameter_grads)``; ``name(...)`` returns ``y``
only (as ``torch.nn.functional``).

How convolution is computed (the Array API standard has neither convolution nor strided views):

* **Stride 1** (the common case: LeNet, VGG, ResNet 3x3 blocks), on every backend: "flat
  shifts". The padded input is flattened per (sample, channel); for each kernel offset the
  inputs of all output positions, read row by row over the full padded width, are one
  contiguous slice. So im2col is ``kh*kw`` long contiguous copies and the
  convolution one batched ``matmul`` (one small GEMM per sample, which OpenBLAS's AVX-512
  small-matrix kernels run fastest); the few extra columns per row (``Wp - OW``) are computed
  and dropped. Pure standard, and the fastest formulation measured on NumPy (long contiguous
  copies instead of short strided ones).
* **Strided / 1x1** convolutions: im2col gathers, for every output position, the
  ``C/groups*kh*kw`` values it sees into ``(N, C*kh*kw, OH*OW)``, then one batched ``matmul``.
  The gather uses the backend's ``sliding_windows`` (NumPy's ``sliding_window_view``, CuPy's; a
  strided view, then one copy) where the adapter has it, and otherwise the pure-standard
  formulation: one strided slice of the padded input per kernel offset, stacked.
* **Stride-1 backward, "same" output size** (ResNet/VGG 3x3, padding 1): one im2col of ``dy``
  (written into a zero buffer, flat shifts by the flipped kernel offsets) gives both gradients:
  ``dx`` as a stride-1 "full" convolution with the flipped, transposed kernel (a forward-shaped
  GEMM and contiguous copies) and ``dW^T = D @ x^T`` with ``x`` read as a free view of the
  padded input; no im2col of ``x`` is rebuilt and there is no col2im. Taken when
  ``O <= 2C`` (``O <= C`` without the input gradient); otherwise the path below.
* **col2im** (the input gradient, and the transposed convolution's forward) runs the same
  offsets the other way: one sliced ``+=`` per kernel offset. Within one offset the positions
  are distinct, so this is exact in the standard (no scatter with repeated indices).
* **Max pooling** is separable (max over column taps, then over row taps, with ``maximum``);
  its backward routes ``dy`` back with equality masks, first maximum wins as in PyTorch: no
  scatter, no index array.

Memory: a forward closure keeps the (padded) input, never an im2col matrix (the stride-1
"same" backward needs none of ``x``; the others rebuild it). The batch is processed in chunks
so that no im2col block exceeds ``COLUMN_CHUNK_BYTES`` (8 MiB; one sample's columns at least).
After ``backward`` runs, the module drops the closure; a ``Conv2d`` layer gives its padded
input and padded ``dy`` (when at least ``POOL_MIN_BYTES``) back to its own workspace for the
next step (fresh multi-megabyte buffers every step cost more in page faults than the copies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from . import _direct_conv, _gemm_conv, winograd
from ._device import device_shaped
from ._device_conv import conv2d_device
from ._flat_shift import conv2d_stride1
from ._im2col import batch_chunks, col2im, conv_cols_grad, conv_matmul, conv_weight_grad, im2col
from ._unbatched import check_window_rank, unbatched_forward
from ._validation import ntuple, pair, rank_error
from ._windows import conv_output_size, output_sizes, pad2d
from .workspace import Workspace

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = [
    "conv1d", "conv1d_forward",
    "conv2d", "conv2d_forward",
    "conv_output_size",
    "conv_transpose2d", "conv_transpose2d_forward",
]


def conv_padding(where: str, padding: Any, stride: tuple[int, ...], n: int = 2,
                 transposed: bool = False) -> str | tuple[int, ...]:
    """Validated ``padding`` of an ``n``-D convolution: ``"same"``/``"valid"`` (not for a transposed
    convolution; ``"same"`` needs stride 1) or a tuple of ``n`` non-negative ints.

    >>> conv_padding("conv2d", 1, (1, 1))
    (1, 1)
    >>> conv_padding("conv2d", "same", (1, 1))
    'same'
    """
    if not isinstance(padding, str):
        return pair(where, "padding", padding, allow_zero=True) if n == 2 else ntuple(where, "padding", padding, n,
                                                                                     allow_zero=True)
    if transposed or padding not in ("same", "valid"):
        allowed = "an int or a tuple of ints" if transposed else "an int, a tuple of ints, 'same' or 'valid'"
        raise ValueError(f"{where}: padding must be {allowed}, got {padding!r}")
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError(f"{where}: padding='same' is not supported for strided convolutions "
                         f"(stride must be 1), got stride={tuple(stride)}")
    return padding


def check_output_padding(where: str, output_padding: tuple[int, ...], stride: tuple[int, ...],
                         dilation: tuple[int, ...]) -> None:
    """A transposed convolution's ``output_padding`` must be smaller than its stride or its dilation."""
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation, strict=True)):
        raise ValueError(f"{where}: output_padding must be smaller than either stride or dilation, got "
                         f"output_padding={tuple(output_padding)}, stride={tuple(stride)}, "
                         f"dilation={tuple(dilation)}")


def _pads(padding: str | tuple[int, int], kernel: tuple[int, int],
          dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from a checked padding (PyTorch's split of ``"same"``)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads: list[int] = []
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)  # type: ignore[return-value]
    ph, pw = padding
    return (ph, ph, pw, pw)


def _check_operands(where: str, x: Array, weight: Array, groups: int, layout: str = "(N, C, H, W)",
                    transposed: bool = False) -> None:
    """Input and weight ranks (``weight.ndim`` is the convolution's) and the input's channel count."""
    if x.ndim != weight.ndim:
        check_window_rank(where, x, weight.ndim - 2)
        raise rank_error(where, x, (weight.ndim,), layout)
    c = x.shape[1]
    want = weight.shape[0] if transposed else weight.shape[1] * groups
    if c != want:
        raise ValueError(f"{where}: expected input with {want} channels (dimension 1), got shape {tuple(x.shape)}")


def conv2d_forward(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1, *, workspace: Workspace | None = None,
                   where: str = "conv2d") -> tuple[Array, Backward]:
    """2-D cross-correlation (``torch.nn.functional.conv2d``), NCHW.

    Shapes: ``x`` ``(N, C, H, W)``, ``weight`` ``(O, C/groups, kh, kw)``, ``bias`` ``(O,)``;
    output ``(N, O, OH, OW)`` with ``OH = floor((H + 2*ph - dh*(kh-1) - 1)/sh) + 1``.
    ``padding`` is an int, a pair, ``"valid"`` or ``"same"`` (stride 1; odd total padding puts
    the extra row/column at the bottom/right, as PyTorch). ``backward(dy, input_grad=True)``
    returns ``(dx, (dweight, dbias))``. Errors start with ``where`` (a layer passes its name).

    With a ``workspace`` (a layer's own) the stride-1 path borrows its padded input and column
    buffers from it and gives them back when its backward has run, so that a training loop does
    not re-fault megabytes of fresh memory every step; such a backward may run once only (as a
    layer's tape guarantees).

    >>> import nnx
    >>> x, w = nnx.asarray([[[[1.0] * 4] * 4]]), nnx.asarray([[[[1.0] * 3] * 3]])
    >>> y, back = conv2d_forward(x, w, padding=1)
    >>> nnx.to_numpy(y)[0, 0, 0].tolist()
    [4.0, 6.0, 6.0, 4.0]
    >>> dx, (dw, db) = back(nnx.asarray([[[[1.0] * 4] * 4]]))
    >>> tuple(dx.shape), tuple(dw.shape), db
    ((1, 1, 4, 4), (1, 1, 3, 3), None)

    An unbatched ``(C, H, W)`` input gives a ``(O, OH, OW)`` output (as PyTorch).
    """
    if x.ndim == weight.ndim - 1:
        return unbatched_forward(conv2d_forward, x, weight, bias, stride, padding, dilation, groups,
                                 workspace=workspace, where=where)
    b = backends.backend_of(x)
    xp = b.xp
    stride_ = pair(where, "stride", stride)
    dilation_ = pair(where, "dilation", dilation)
    padding_ = conv_padding(where, padding, stride_)
    _check_operands(where, x, weight, groups)
    kernel = (weight.shape[2], weight.shape[3])
    pads = _pads(padding_, kernel, dilation_)
    n, _, h, w_in = x.shape
    out = output_sizes(where, x, kernel, stride_, (pads[0] + pads[1], pads[2] + pads[3]), dilation_)
    device = b.device_of(x)
    tile = winograd.applicable(b, x, weight, stride_, dilation_, groups, pads)  # 0: the im2col/flat-shift paths
    if tile:
        return winograd.conv2d_winograd_forward(x, weight, bias, pads, tile)
    if _direct_conv.applicable(b, x, weight, stride_, dilation_, groups, pads):
        return _direct_conv.conv2d_direct_forward(b, x, weight, bias, pads, out)
    if _gemm_conv.applicable(b, x, weight, stride_, dilation_, groups, pads):
        return _gemm_conv.conv2d_gemm_forward(b, x, weight, bias, pads, out)
    if device_shaped(b):  # GPUs: a few whole-batch operations (see _device_conv)
        return conv2d_device(b, x, weight, bias, pads, stride_, dilation_, groups, out)
    if stride_ == (1, 1) and kernel != (1, 1):
        return conv2d_stride1(b, x, weight, bias, pads, dilation_, groups, out, device,
                              workspace if b.mutable else None)
    xpad = pad2d(b, x, pads, 0.0, device)
    o = weight.shape[0]
    padded_shape = tuple(xpad.shape)
    w_shape = tuple(weight.shape)
    chunks = batch_chunks(xp, n, weight.shape[1] * groups * kernel[0] * kernel[1] * out[0] * out[1], x.dtype)
    parts = [conv_matmul(xp, weight, im2col(b, xpad[lo:hi, ...], kernel, stride_, dilation_, out), groups)
             for lo, hi in chunks]
    y = xp.reshape(parts[0] if len(parts) == 1 else xp.concat(parts, axis=0), (n, o, out[0], out[1]))
    del parts
    if bias is not None:
        y += xp.reshape(bias, (1, o, 1, 1))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dy3 = xp.reshape(dy, (n, o, out[0] * out[1]))
        dweight = None
        dx_parts = []
        for lo, hi in chunks:
            cols = im2col(b, xpad[lo:hi, ...], kernel, stride_, dilation_, out)
            part = conv_weight_grad(xp, dy3[lo:hi, ...], cols, groups, w_shape)
            dweight = part if dweight is None else dweight + part
            del cols
            if input_grad:
                dcols = conv_cols_grad(xp, weight, dy3[lo:hi, ...], groups)
                dx_parts.append(col2im(b, dcols, (hi - lo,) + padded_shape[1:], kernel, stride_, dilation_,
                                        out, device))
                del dcols
        dbias = b.channel_sum(dy) if bias is not None else None
        dx = None
        if input_grad:
            dxp = dx_parts[0] if len(dx_parts) == 1 else xp.concat(dx_parts, axis=0)
            top, _, left, _ = pads
            dx = dxp if dxp.shape == x.shape else dxp[:, :, top:top + h, left:left + w_in]
        return dx, (dweight, dbias)

    return y, backward


def conv2d(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """Functional form of :func:`conv2d_forward` (as ``torch.nn.functional.conv2d``)."""
    return conv2d_forward(x, weight, bias, stride, padding, dilation, groups)[0]


def conv1d_forward(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1, *, where: str = "conv1d") -> tuple[Array, Backward]:
    """1-D cross-correlation (``torch.nn.functional.conv1d``): ``x`` ``(N, C, L)``, weight
    ``(O, C/groups, k)``, output ``(N, O, L_out)``. Computed as a 2-D convolution of height 1.

    >>> import nnx
    >>> y, back = conv1d_forward(nnx.asarray([[[1.0, 2.0, 3.0]]]), nnx.asarray([[[1.0, 1.0]]]))
    >>> nnx.to_numpy(y).tolist()
    [[[3.0, 5.0]]]

    An unbatched ``(C, L)`` input gives a ``(O, L_out)`` output (as PyTorch).
    """
    if x.ndim == weight.ndim - 1:
        return unbatched_forward(conv1d_forward, x, weight, bias, stride, padding, dilation, groups, where=where)
    xp = backends.backend_of(x).xp
    (s,) = ntuple(where, "stride", stride, 1)
    (d,) = ntuple(where, "dilation", dilation, 1)
    padding_ = conv_padding(where, padding, (s,), n=1)
    _check_operands(where, x, weight, groups, "(N, C, L)")
    if isinstance(padding_, tuple):
        output_sizes(where, x, (weight.shape[2],), (s,), (2 * padding_[0],), (d,))
    pad2: Any = padding_ if isinstance(padding_, str) else (0, padding_[0])
    n, c, length = x.shape
    w4 = xp.reshape(weight, (weight.shape[0], weight.shape[1], 1, weight.shape[2]))
    y4, back4 = conv2d_forward(xp.reshape(x, (n, c, 1, length)), w4, bias, (1, s), pad2, (1, d), groups,
                               where=where)
    y = xp.reshape(y4, (n, y4.shape[1], y4.shape[3]))
    w_shape = tuple(weight.shape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dx4, (dw4, db) = back4(xp.reshape(dy, (n, dy.shape[1], 1, dy.shape[2])), input_grad)
        dx = xp.reshape(dx4, (n, c, length)) if dx4 is not None else None
        return dx, (xp.reshape(dw4, w_shape), db)

    return y, backward


def conv1d(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Array:
    """Functional form of :func:`conv1d_forward` (as ``torch.nn.functional.conv1d``)."""
    return conv1d_forward(x, weight, bias, stride, padding, dilation, groups)[0]


def conv_transpose2d_forward(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                             output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                             where: str = "conv_transpose2d") -> tuple[Array, Backward]:
    """2-D transposed convolution (``torch.nn.functional.conv_transpose2d``), NCHW.

    Shapes: ``x`` ``(N, Cin, H, W)``, ``weight`` ``(Cin, Cout/groups, kh, kw)``, output
    ``(N, Cout, OH, OW)`` with ``OH = (H-1)*sh - 2*ph + dh*(kh-1) + output_padding_h + 1``.
    It is the input gradient of :func:`conv2d` (col2im of ``weight^T @ x``); its backward is a
    convolution. Note PyTorch's argument order: ``groups`` comes before ``dilation``.

    >>> import nnx
    >>> x, w = nnx.asarray([[[[1.0] * 3] * 3]]), nnx.asarray([[[[1.0] * 4] * 4]])
    >>> y, back = conv_transpose2d_forward(x, w, stride=2, padding=1)   # doubles H and W
    >>> tuple(y.shape)
    (1, 1, 6, 6)

    An unbatched ``(Cin, H, W)`` input gives a ``(Cout, OH, OW)`` output (as PyTorch).
    """
    if x.ndim == weight.ndim - 1:
        return unbatched_forward(conv_transpose2d_forward, x, weight, bias, stride, padding, output_padding,
                                 groups, dilation, where=where)
    b = backends.backend_of(x)
    xp = b.xp
    stride_ = pair(where, "stride", stride)
    dilation_ = pair(where, "dilation", dilation)
    ph, pw = conv_padding(where, padding, stride_, transposed=True)
    oph, opw = pair(where, "output_padding", output_padding, allow_zero=True)
    check_output_padding(where, (oph, opw), stride_, dilation_)
    _check_operands(where, x, weight, groups, transposed=True)
    n, cin, h, w_in = x.shape
    kernel = (weight.shape[2], weight.shape[3])
    cout = weight.shape[1] * groups
    oh = (h - 1) * stride_[0] - 2 * ph + dilation_[0] * (kernel[0] - 1) + oph + 1
    ow = (w_in - 1) * stride_[1] - 2 * pw + dilation_[1] * (kernel[1] - 1) + opw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{where}: padding {(ph, pw)} leaves no output for input shape {tuple(x.shape)} "
                         f"(computed output size {(oh, ow)}); use less padding or a larger input")
    device = b.device_of(x)
    padded_shape = (n, cout, oh + 2 * ph, ow + 2 * pw)
    inner = (h, w_in)
    x3 = xp.reshape(x, (n, cin, h * w_in))
    dcols = conv_cols_grad(xp, weight, x3, groups)
    on_device = device_shaped(b)  # GPUs: the adapter's one-kernel col2im / im2col, padding implicit
    if on_device:
        y = b.col2im(dcols, (n, cout, oh, ow), kernel, stride_, dilation_, (ph, pw), inner)
    else:
        ypad = col2im(b, dcols, padded_shape, kernel, stride_, dilation_, inner, device)
        y = ypad[:, :, ph:ph + oh, pw:pw + ow] if (ph or pw) else ypad
    del dcols
    if bias is not None:
        y = y + xp.reshape(bias, (1, cout, 1, 1))
    w_shape = tuple(weight.shape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        if on_device:
            cols = b.im2col(dy, kernel, stride_, dilation_, (ph, pw), inner)
        else:
            cols = im2col(b, pad2d(b, dy, (ph, ph, pw, pw), 0.0, device), kernel, stride_, dilation_, inner)
        # weight is (Cin, Cout/g, kh, kw): dL/dW[ci, co, a, b] = sum x[ci] * cols[co, a, b]
        dweight = conv_weight_grad(xp, x3, cols, groups, w_shape)
        dbias = b.channel_sum(dy) if bias is not None else None
        dx = xp.reshape(conv_matmul(xp, weight, cols, groups), (n, cin, h, w_in)) if input_grad else None
        return dx, (dweight, dbias)

    return y, backward


def conv_transpose2d(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Array:
    """Functional form of :func:`conv_transpose2d_forward`."""
    return conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation)[0]

