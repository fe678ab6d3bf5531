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

from ._flat_shift import conv2d_stride1
from ._im2col import batch_chunks, col2im, conv_cols_grad, conv_matmul, conv_weight_grad, im2col
from ._validation import ntuple, pair
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


# ---------------------------------------------------------------------------- convolution
def _resolve_padding(where: str, padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair, ``"valid"`` or ``"same"`` (PyTorch's split)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{where}: padding='same' is not supported for strided convolutions "
                                 f"(stride must be 1), got stride={stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)  # type: ignore[return-value]
        raise ValueError(f"{where}: padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(where, "padding", padding, allow_zero=True)
    return (ph, ph, pw, pw)


def _check_conv_operands(where: str, x: Array, weight: Array, groups: int, transposed: bool = False) -> None:
    if x.ndim != 4:
        raise ValueError(f"{where}: expected 4-D input of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"{where}: expected a 4-D weight, got shape {tuple(weight.shape)}")
    c = x.shape[1]
    want = weight.shape[0] if transposed else weight.shape[1] * groups
    if c != want:
        raise ValueError(f"{where}: expected input with {want} channels (dimension 1), got shape {tuple(x.shape)}")


def conv2d_forward(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1) -> tuple[Array, Backward]:
    """2-D cross-correlation (``torch.nn.functional.conv2d``), NCHW.

    Shapes: ``x`` ``(N, C, H, W)``, ``weight`` ``(O, C/groups, kh, kw)``, ``bias`` ``(O,)``;
    output ``(N, O, OH, OW)`` with ``OH = floor((H + 2*ph - dh*(kh-1) - 1)/sh) + 1``.
    ``padding`` is an int, a pair, ``"valid"`` or ``"same"`` (stride 1; odd total padding puts
    the extra row/column at the bottom/right, as PyTorch). ``backward(dy, input_grad=True)``
    returns ``(dx, (dweight, dbias))``.

    >>> y, back = conv2d_forward(x, w, b, padding=1)      # doctest: +SKIP
    >>> dx, (dw, db) = back(dy)                            # doctest: +SKIP
    """
    return _conv2d_forward(x, weight, bias, stride, padding, dilation, groups, None)


def _conv2d_forward(x: Array, weight: Array, bias: Array | None, stride: Any, padding: Any, dilation: Any,
                    groups: int, workspace: Workspace | None) -> tuple[Array, Backward]:
    """:func:`conv2d_forward`; with a ``workspace`` (a layer's own) the stride-1 path borrows its
    padded input and column buffers from it and gives them back when its backward has run, so
    that a training loop does not re-fault megabytes of fresh memory every step. The backward
    of a call made with a workspace may run once only (as a layer's tape guarantees)."""
    where = "conv2d"
    b = backends.backend_of(x)
    xp = b.xp
    stride_ = pair(where, "stride", stride)
    dilation_ = pair(where, "dilation", dilation)
    _check_conv_operands(where, x, weight, groups)
    kernel = (weight.shape[2], weight.shape[3])
    pads = _resolve_padding(where, padding, kernel, stride_, dilation_)
    n, _, h, w_in = x.shape
    out = output_sizes(where, x, kernel, stride_, (pads[0] + pads[1], pads[2] + pads[3]), dilation_)
    device = b.device_of(x)
    if stride_ == (1, 1) and kernel != (1, 1):
        return conv2d_stride1(xp, x, weight, bias, pads, dilation_, groups, out, device, workspace)
    xpad = pad2d(xp, x, pads, 0.0, device)
    o = weight.shape[0]
    padded_shape = tuple(xpad.shape)
    w_shape = tuple(weight.shape)
    chunks = batch_chunks(n, weight.shape[1] * groups * kernel[0] * kernel[1] * out[0] * out[1], x.dtype)
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
                dx_parts.append(col2im(xp, dcols, (hi - lo,) + padded_shape[1:], kernel, stride_, dilation_,
                                        out, device))
                del dcols
        dbias = xp.sum(dy, axis=(0, 2, 3)) if bias is not None else None
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
                   dilation: Any = 1, groups: int = 1) -> tuple[Array, Backward]:
    """1-D cross-correlation (``torch.nn.functional.conv1d``): ``x`` ``(N, C, L)``, weight
    ``(O, C/groups, k)``, output ``(N, O, L_out)``. Computed as a 2-D convolution of height 1.

    >>> y, back = conv1d_forward(x, w, padding="same")    # doctest: +SKIP
    """
    where = "conv1d"
    xp = backends.backend_of(x).xp
    if x.ndim != 3:
        raise ValueError(f"{where}: expected 3-D input of shape (N, C, L), got shape {tuple(x.shape)}")
    if weight.ndim != 3:
        raise ValueError(f"{where}: expected a 3-D weight, got shape {tuple(weight.shape)}")
    (s,) = ntuple(where, "stride", stride, 1, False)
    (d,) = ntuple(where, "dilation", dilation, 1, False)
    pad2: Any = padding if isinstance(padding, str) else (0, ntuple(where, "padding", padding, 1, True)[0])
    n, c, length = x.shape
    w4 = xp.reshape(weight, (weight.shape[0], weight.shape[1], 1, weight.shape[2]))
    y4, back4 = conv2d_forward(xp.reshape(x, (n, c, 1, length)), w4, bias, (1, s), pad2, (1, d), groups)
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
                             output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> tuple[Array, Backward]:
    """2-D transposed convolution (``torch.nn.functional.conv_transpose2d``), NCHW.

    Shapes: ``x`` ``(N, Cin, H, W)``, ``weight`` ``(Cin, Cout/groups, kh, kw)``, output
    ``(N, Cout, OH, OW)`` with ``OH = (H-1)*sh - 2*ph + dh*(kh-1) + output_padding_h + 1``.
    It is the input gradient of :func:`conv2d` (col2im of ``weight^T @ x``); its backward is a
    convolution. Note PyTorch's argument order: ``groups`` comes before ``dilation``.

    >>> y, back = conv_transpose2d_forward(x, w, stride=2, padding=1, output_padding=1)  # doctest: +SKIP
    """
    where = "conv_transpose2d"
    b = backends.backend_of(x)
    xp = b.xp
    stride_ = pair(where, "stride", stride)
    dilation_ = pair(where, "dilation", dilation)
    ph, pw = pair(where, "padding", padding, allow_zero=True)
    oph, opw = pair(where, "output_padding", output_padding, allow_zero=True)
    if oph >= max(stride_[0], dilation_[0]) or opw >= max(stride_[1], dilation_[1]):
        raise ValueError(f"{where}: output_padding must be smaller than either stride or dilation, got "
                         f"output_padding={(oph, opw)}, stride={stride_}, dilation={dilation_}")
    _check_conv_operands(where, x, weight, groups, transposed=True)
    n, cin, h, w_in = x.shape
    kernel = (weight.shape[2], weight.shape[3])
    cout = weight.shape[1] * groups
    oh = (h - 1) * stride_[0] - 2 * ph + dilation_[0] * (kernel[0] - 1) + oph + 1
    ow = (w_in - 1) * stride_[1] - 2 * pw + dilation_[1] * (kernel[1] - 1) + opw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{where}: padding {(ph, pw)} leaves no output for input shape {tuple(x.shape)} "
                         f"(computed output size {(oh, ow)})")
    device = b.device_of(x)
    padded_shape = (n, cout, oh + 2 * ph, ow + 2 * pw)
    inner = (h, w_in)
    x3 = xp.reshape(x, (n, cin, h * w_in))
    dcols = conv_cols_grad(xp, weight, x3, groups)
    ypad = col2im(xp, dcols, padded_shape, kernel, stride_, dilation_, inner, device)
    del dcols
    y = ypad[:, :, ph:ph + oh, pw:pw + ow] if (ph or pw) else ypad
    if bias is not None:
        y = y + xp.reshape(bias, (1, cout, 1, 1))
    w_shape = tuple(weight.shape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dypad = pad2d(xp, dy, (ph, ph, pw, pw), 0.0, device)
        cols = im2col(b, dypad, kernel, stride_, dilation_, inner)
        del dypad
        # weight is (Cin, Cout/g, kh, kw): dL/dW[ci, co, a, b] = sum x[ci] * cols[co, a, b]
        dweight = conv_weight_grad(xp, x3, cols, groups, w_shape)
        dbias = xp.sum(dy, axis=(0, 2, 3)) if bias is not None else None
        dx = xp.reshape(conv_matmul(xp, weight, cols, groups), (n, cin, h, w_in)) if input_grad else None
        return dx, (dweight, dbias)

    return y, backward


def conv_transpose2d(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Array:
    """Functional form of :func:`conv_transpose2d_forward`."""
    return conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation)[0]

