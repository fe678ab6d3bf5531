"""Convolution, pooling, normalisation and channel dropout kernels (NCHW), forward + backward.

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

import math
from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from .workspace import Workspace

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

#: Largest im2col block (bytes) that a convolution builds at once: the batch is
#: processed in chunks of samples so that the column matrix stays cache-sized and its memory
#: bounded, whatever the batch size. 0 means the whole batch at once.
COLUMN_CHUNK_BYTES = 8 << 20

__all__ = [
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_forward",
    "avg_pool2d", "avg_pool2d_forward",
    "batch_norm", "batch_norm_forward",
    "conv1d", "conv1d_forward",
    "conv2d", "conv2d_forward",
    "conv_output_size",
    "conv_transpose2d", "conv_transpose2d_forward",
    "dropout2d", "dropout2d_forward",
    "group_norm", "group_norm_forward",
    "layer_norm", "layer_norm_forward",
    "max_pool2d", "max_pool2d_forward",
]


# ---------------------------------------------------------------------------- argument helpers
def _ntuple(where: str, name: str, value: Any, n: int, allow_zero: bool) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``n`` ints) as a tuple of ``n`` ints, validated."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    low = 0 if allow_zero else 1
    if len(items) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in items):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{where}: {name} must be a {kind} integer or a tuple of {n} {kind} integers, "
                         f"got {value!r}")
    return items


def _pair(where: str, name: str, value: Any, allow_zero: bool = False) -> tuple[int, int]:
    return _ntuple(where, name, value, 2, allow_zero)  # type: ignore[return-value]


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


def _check_out(where: str, x: Array, out: Sequence[int], kernel: Sequence[int], dilation: Sequence[int],
               pads: Sequence[int]) -> None:
    if any(o <= 0 for o in out):
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(
            f"{where}: kernel size {tuple(kernel)} (dilated extent {eff}) is larger than the padded input "
            f"(spatial size {tuple(x.shape[2:])} plus padding {tuple(pads)}); got input shape {tuple(x.shape)}"
        )


def _pad2d(xp: Any, x: Array, pads: tuple[int, int, int, int], value: float, device: Any) -> Array:
    """Pad the last two axes of ``x`` by (top, bottom, left, right) with ``value`` (pure standard)."""
    top, bottom, left, right = pads
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    out = xp.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype, device=device)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _offset_slice(a: int, dil: int, stride: int, out: int) -> slice:
    """Positions ``a*dil + stride*i`` for ``i < out``: the inputs kernel offset ``a`` touches."""
    start = a * dil
    return slice(start, start + stride * (out - 1) + 1, stride)


# ---------------------------------------------------------------------------- im2col / col2im
def _im2col(b: backends.Backend, xpad: Array, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out: tuple[int, int]) -> Array:
    """``(N, C*kh*kw, OH*OW)`` matrix of input windows, ordered (c, a, b) x (i, j) like the weight.

    Fast path: the adapter's strided ``sliding_windows`` view, sliced to stride and dilation,
    copied once into the matrix. Fallback (pure standard): one strided slice per kernel offset,
    stacked. Either way the only buffer is the matrix itself.
    """
    xp = b.xp
    n, c = xpad.shape[0], xpad.shape[1]
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    if kh == kw == 1:
        sub = xpad[:, :, _offset_slice(0, 1, sh, oh), _offset_slice(0, 1, sw, ow)]
        return xp.reshape(sub, (n, c, oh * ow))
    windows = b.sliding_windows(xpad, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), (2, 3))
    if windows is not None:
        windows = windows[:, :, :sh * (oh - 1) + 1:sh, :sw * (ow - 1) + 1:sw, ::dh, ::dw]
        cols = xp.permute_dims(windows, (0, 1, 4, 5, 2, 3))  # (N, C, kh, kw, OH, OW), a view
        return xp.reshape(cols, (n, c * kh * kw, oh * ow))  # the one copy
    slices = [xpad[:, :, _offset_slice(i, dh, sh, oh), _offset_slice(j, dw, sw, ow)]
              for i in range(kh) for j in range(kw)]
    return xp.reshape(xp.stack(slices, axis=2), (n, c * kh * kw, oh * ow))


def _col2im(xp: Any, dcols: Array, padded_shape: tuple[int, int, int, int], kernel: tuple[int, int],
            stride: tuple[int, int], dilation: tuple[int, int], out: tuple[int, int], device: Any) -> Array:
    """Adjoint of :func:`_im2col`: sum ``dcols`` ``(N, C*kh*kw, OH*OW)`` back onto the padded input.

    One sliced add per kernel offset; the positions inside one slice are distinct, so the
    standard's in-place add is exact (no repeated-index scatter).
    """
    n, c, hp, wp = padded_shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    d6 = xp.reshape(dcols, (n, c, kh, kw, oh, ow))
    if kh == kw == 1 and sh == sw == 1 and (oh, ow) == (hp, wp):
        return xp.reshape(dcols, (n, c, hp, wp))
    dx = xp.zeros((n, c, hp, wp), dtype=dcols.dtype, device=device)
    for i in range(kh):
        rows = _offset_slice(i, dh, sh, oh)
        for j in range(kw):
            dx[:, :, rows, _offset_slice(j, dw, sw, ow)] += d6[:, :, i, j, :, :]
    return dx


def _grouped(xp: Any, a: Array, groups: int) -> Array:
    """``(N, G*R, L)`` -> ``(N, G, R, L)`` (a free reshape); identity shape handling for G == 1."""
    if groups == 1:
        return a
    return xp.reshape(a, (a.shape[0], groups, a.shape[1] // groups, a.shape[2]))


def _conv_matmul(xp: Any, w: Array, cols: Array, groups: int) -> Array:
    """``(O, C/g*kh*kw)`` weight times ``(N, C*kh*kw, L)`` columns -> ``(N, O, L)``, per group."""
    o = w.shape[0]
    n, _, length = cols.shape
    if groups == 1:
        return xp.matmul(xp.reshape(w, (o, -1)), cols)
    wg = xp.reshape(w, (groups, o // groups, -1))
    return xp.reshape(xp.matmul(wg, _grouped(xp, cols, groups)), (n, o, length))


def _conv_weight_grad(xp: Any, dy: Array, cols: Array, groups: int, w_shape: tuple[int, ...]) -> Array:
    """dL/dweight = sum over the batch of ``dy (N, O, L) @ cols (N, C*k, L)^T``, per group.

    Computed transposed, ``cols @ dy^T`` (the operand order OpenBLAS runs faster), then the small
    result is transposed back."""
    if groups == 1:
        dwt = xp.sum(xp.matmul(cols, xp.matrix_transpose(dy)), axis=0)
    else:
        dwt = xp.sum(xp.matmul(_grouped(xp, cols, groups), xp.matrix_transpose(_grouped(xp, dy, groups))), axis=0)
    return xp.reshape(xp.matrix_transpose(dwt), w_shape)


def _conv_cols_grad(xp: Any, w: Array, dy: Array, groups: int) -> Array:
    """dL/dcols = ``weight^T @ dy`` per group: ``(N, C*kh*kw, L)``."""
    o = w.shape[0]
    n, _, length = dy.shape
    if groups == 1:
        return xp.matmul(xp.matrix_transpose(xp.reshape(w, (o, -1))), dy)
    wg = xp.reshape(w, (groups, o // groups, -1))
    d = xp.matmul(xp.matrix_transpose(wg), _grouped(xp, dy, groups))
    return xp.reshape(d, (n, d.shape[1] * d.shape[2], length))


def _channel_shape(ndim: int, c: int) -> tuple[int, ...]:
    return (1, c) + (1,) * (ndim - 2)


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
    ph, pw = _pair(where, "padding", padding, allow_zero=True)
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
    stride_ = _pair(where, "stride", stride)
    dilation_ = _pair(where, "dilation", dilation)
    _check_conv_operands(where, x, weight, groups)
    kernel = (weight.shape[2], weight.shape[3])
    pads = _resolve_padding(where, padding, kernel, stride_, dilation_)
    n, _, h, w_in = x.shape
    out = (conv_output_size(h, kernel[0], stride_[0], pads[0] + pads[1], dilation_[0]),
           conv_output_size(w_in, kernel[1], stride_[1], pads[2] + pads[3], dilation_[1]))
    _check_out(where, x, out, kernel, dilation_, pads)
    device = b.device_of(x)
    if stride_ == (1, 1) and kernel != (1, 1):
        return _conv2d_stride1(xp, x, weight, bias, pads, dilation_, groups, out, device, workspace)
    xpad = _pad2d(xp, x, pads, 0.0, device)
    o = weight.shape[0]
    padded_shape = tuple(xpad.shape)
    w_shape = tuple(weight.shape)
    chunks = _batch_chunks(n, weight.shape[1] * groups * kernel[0] * kernel[1] * out[0] * out[1], x.dtype)
    parts = [_conv_matmul(xp, weight, _im2col(b, xpad[lo:hi, ...], kernel, stride_, dilation_, out), groups)
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
            cols = _im2col(b, xpad[lo:hi, ...], kernel, stride_, dilation_, out)
            part = _conv_weight_grad(xp, dy3[lo:hi, ...], cols, groups, w_shape)
            dweight = part if dweight is None else dweight + part
            del cols
            if input_grad:
                dcols = _conv_cols_grad(xp, weight, dy3[lo:hi, ...], groups)
                dx_parts.append(_col2im(xp, dcols, (hi - lo,) + padded_shape[1:], kernel, stride_, dilation_,
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


#: Scratch buffers smaller than this are not pooled: malloc hands a small freed block back
#: cache-hot, while a pooled one is cold; big ones would be page-faulted in afresh.
POOL_MIN_BYTES = 1 << 20


def _pooled(ws: Workspace | None, shape: tuple[int, ...], dtype: Any) -> bool:
    itemsize = 8 if backends.Backend.dtype_name(dtype).endswith("64") else 4
    return ws is not None and math.prod(shape) * itemsize >= POOL_MIN_BYTES


def _give(ws: Workspace | None, buf: Array) -> None:
    if ws is not None and _pooled(ws, tuple(buf.shape), buf.dtype):
        ws.give(buf)


def _zero_border_buffer(xp: Any, ws: Workspace | None, shape: tuple[int, int, int, int],
                        inner: tuple[int, int, int, int], dtype: Any, device: Any, kind: type) -> Array:
    """A ``shape`` buffer whose elements outside rows ``inner[0]:inner[1]`` x columns
    ``inner[2]:inner[3]`` are zero (the caller fills the inside): new zeros, or a workspace
    buffer with only its border cleared."""
    if not _pooled(ws, shape, dtype):
        return xp.zeros(shape, dtype=dtype, device=device)
    buf = ws.take(xp, shape, dtype, device, kind)
    r0, r1, c0, c1 = inner
    buf[:, :, :r0, :] = 0.0
    buf[:, :, r1:, :] = 0.0
    buf[:, :, r0:r1, :c0] = 0.0
    buf[:, :, r0:r1, c1:] = 0.0
    return buf


def _batch_chunks(n: int, column_elements_per_sample: int, dtype: Any) -> list[tuple[int, int]]:
    """Split a batch of ``n`` so that each chunk's im2col matrix stays under ``COLUMN_CHUNK_BYTES``."""
    itemsize = 8 if backends.Backend.dtype_name(dtype).endswith("64") else 4
    per_sample = max(1, column_elements_per_sample * itemsize)
    chunk = max(1, min(n, COLUMN_CHUNK_BYTES // per_sample)) if COLUMN_CHUNK_BYTES else n
    return [(i, min(i + chunk, n)) for i in range(0, n, chunk)]


def _conv2d_stride1(xp: Any, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
                    dilation: tuple[int, int], groups: int, out: tuple[int, int], device: Any,
                    ws: Workspace | None = None) -> tuple[Array, Backward]:
    """Stride-1 convolution by "flat shifts" (pure standard; the fast path on every backend).

    The zero-padded input ``(N, C, Hp + 1, Wp)`` is flattened over its last two axes. For kernel
    offset ``(a, b)`` the inputs of *all* output positions, read row by row over the full padded
    width ``Wp``, form one contiguous run ``flat[..., a*dh*Wp + b*dw :][: OH*Wp]``: the
    ``Wp - OW`` extra columns per row are computed and dropped (the spare bottom row absorbs the
    overrun). So im2col is ``kh*kw`` contiguous slice copies, stacked as
    ``(N, G, kh*kw*C/G, OH*Wp)``, and the convolution one batched matmul with the weight
    ``(G, O/G, kh*kw*C/G)`` (plus a row of ones that carries the bias); the output is a view
    ``[..., :OW]`` of ``(N, O, OH, Wp)`` (NCHW). col2im (the input gradient) adds the same runs
    back, with the extra columns of ``dy`` zeroed. The batch is processed in chunks of at most
    ``COLUMN_CHUNK_BYTES`` of columns, rebuilt in backward: the closure holds the padded input only.
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    g, og, kk = groups, o // groups, kh * kw
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    oh, ow = out
    dh, dw = dilation
    spare = 1 if dw * (kw - 1) > 0 else 0
    length = (hp + spare) * wp
    xpad = _zero_border_buffer(xp, ws, (n, c, hp + spare, wp), (top, top + h, left, left + w), x.dtype, device,
                               type(x))
    xpad[:, :, top:top + h, left:left + w] = x
    flat = xp.reshape(xpad, (n, g, cg, length))
    run = oh * wp
    offsets = [a * dh * wp + bb * dw for a in range(kh) for bb in range(kw)]

    kc = kk * cg
    rows = kc + (1 if bias is not None else 0)  # a row of ones carries the bias through the matmul
    chunks = _batch_chunks(n, g * rows * run, x.dtype)

    def columns(lo: int, hi: int) -> Array:
        cols = xp.empty((hi - lo, g, rows, run), dtype=x.dtype, device=device)
        for k, s in enumerate(offsets):
            cols[:, :, k * cg:(k + 1) * cg, :] = flat[lo:hi, :, :, s:s + run]
        if bias is not None:
            cols[:, :, kc, :] = 1.0
        return cols

    wk = xp.reshape(xp.permute_dims(xp.reshape(weight, (g, og, cg, kk)), (0, 1, 3, 2)), (g, og, kc))
    if bias is not None:
        wk = xp.concat([wk, xp.reshape(bias, (g, og, 1))], axis=2)
    same_size = (oh, ow) == (h, w)
    # (the column blocks are not pooled: a freshly freed block is cache-hot when malloc hands it
    # out again, a pooled one is cold; pooling them measured slower, LeNet by 25%)
    if len(chunks) == 1:
        yext = xp.matmul(wk, columns(0, n))
    else:  # each chunk's product straight into its rows of the output (no parts + concat copy)
        bk = backends.backend_of(x)
        yext = xp.empty((n, g, og, run), dtype=x.dtype, device=device)
        for lo, hi in chunks:
            bk.matmul_into(wk, columns(lo, hi), yext[lo:hi, ...])
    yext = xp.reshape(yext, (n, o, oh, wp))
    y = yext[:, :, :, :ow] if ow != wp else yext
    del yext

    same_size_backward = None
    if same_size and o <= 2 * c:  # "same" output size: a backward that needs no im2col of x at all
        same_size_backward = _same_size_backward(xp, flat, weight, bias is not None, pads, dilation, groups,
                                                 (n, c, h, w), spare, device, ws)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        # The same-size backward builds im2col of dy (O channels) instead of x (C channels) and
        # replaces col2im's kh*kw strided adds by a GEMM: worth it unless O is much larger than C.
        if same_size_backward is not None and o <= (2 * c if input_grad else c):
            result = same_size_backward(dy, input_grad)
        else:
            result = general_backward(dy, input_grad)
        if ws is not None:
            _give(ws, xpad)
        return result

    def general_backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        if ow != wp:  # dy over the full padded width, the extra columns zero
            dy_ext = xp.zeros((n, o, oh, wp), dtype=dy.dtype, device=device)
            dy_ext[:, :, :, :ow] = dy
        else:
            dy_ext = dy
        dy4 = xp.reshape(dy_ext, (n, g, og, run))
        del dy_ext
        wt = xp.matrix_transpose(wk[:, :, :kc])
        dflat = xp.zeros((n, g, cg, length), dtype=dy.dtype, device=device) if input_grad else None
        dwk = None
        for lo, hi in chunks:
            dyc = dy4[lo:hi, ...]
            # dW^T = cols @ dy^T: (G, rows, Og); this operand order runs faster in OpenBLAS
            part = xp.sum(xp.matmul(columns(lo, hi), xp.matrix_transpose(dyc)), axis=0)
            dwk = part if dwk is None else dwk + part
            if input_grad:
                dcols = xp.reshape(xp.matmul(wt, dyc), (hi - lo, g, kk, cg, run))
                for k, s in enumerate(offsets):
                    dflat[lo:hi, :, :, s:s + run] += dcols[:, :, k, ...]
                del dcols
        dweight = xp.reshape(xp.permute_dims(xp.reshape(dwk[:, :kc, :], (g, kk, cg, og)), (0, 3, 2, 1)),
                             (o, cg, kh, kw))
        dbias = xp.reshape(dwk[:, kc, :], (o,)) if bias is not None else None
        dx = None
        if input_grad:
            dx = xp.reshape(dflat, (n, c, hp + spare, wp))[:, :, top:top + h, left:left + w]
        return dx, (dweight, dbias)

    return y, backward


def _same_size_backward(xp: Any, flat: Array, weight: Array, has_bias: bool, pads: tuple[int, int, int, int],
                        dilation: tuple[int, int], groups: int, x_shape: tuple[int, int, int, int], spare: int,
                        device: Any, ws: Workspace | None) -> Backward:
    """Backward of a stride-1 convolution whose output has the input's size (``padding="same"``).

    Both gradients come from one im2col of ``dy`` (never of ``x``): ``dy`` is written once into a
    zero buffer of width ``Wp`` (its "full" padding, ``dh*(kh-1) - top`` rows above), whose flat
    shifts by the *flipped* kernel offsets give columns ``D`` ``(N, G, kh*kw*O/G, H*Wp)``. Then

    * ``dx = W_flipped^T @ D``: the input gradient as a stride-1 "full" convolution (contiguous
      copies and a forward-shaped GEMM instead of ``kh*kw`` strided read-modify-write adds);
    * ``dW^T = D @ x^T``: the padded input ``flat`` read from ``top*Wp + left`` for ``H*Wp`` elements
      is ``x`` on the same ``H x Wp`` grid with zeros in the ``Wp - W`` extra columns (they are
      padding), which cancel the junk columns of ``D``; a free view, no im2col of ``x``.

    Chunked like the forward (at most ``COLUMN_CHUNK_BYTES`` of ``D`` at once).
    """
    n, c, h, w = x_shape
    o, cg, kh, kw = weight.shape
    g, og, kk = groups, o // groups, kh * kw
    top, _, left, _ = pads
    dh, dw = dilation
    wp = flat.shape[3] // (h + pads[0] + pads[1] + spare)
    run = h * wp
    ph = dh * (kh - 1) - top  # rows of zeros above dy in the "full" layout (>= 0 since oh == h)
    pw = dw * (kw - 1) - left
    hb = h + dh * (kh - 1) + spare
    # flipped offsets: column block k' = (kh-1-a)*kw + (kw-1-b) reads dy shifted by (a, b)
    offsets = [a * dh * wp + bb * dw for a in range(kh) for bb in range(kw)]
    start = top * wp + left
    rows = kk * og
    chunks = _batch_chunks(n, g * rows * run, weight.dtype)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        # (G, Cg, kk*Og): wd[g, c, k', o] = weight[g*Og + o, c, flip(k')]
        wd = xp.reshape(xp.permute_dims(xp.flip(xp.reshape(weight, (g, og, cg, kk)), axis=3), (0, 2, 3, 1)),
                        (g, cg, rows)) if input_grad else None
        dybuf = _zero_border_buffer(xp, ws, (n, o, hb, wp), (ph, ph + h, pw, pw + w), dy.dtype, device,
                                    type(dy))
        dybuf[:, :, ph:ph + h, pw:pw + w] = dy
        dflat = xp.reshape(dybuf, (n, g, og, hb * wp))
        dwk = None
        dxe = xp.empty((n, g, cg, run), dtype=dy.dtype, device=device) if input_grad else None
        bk = backends.backend_of(dy)
        for lo, hi in chunks:
            cols = xp.empty((hi - lo, g, kk, og, run), dtype=dy.dtype, device=device)
            for k, s in enumerate(offsets):
                cols[:, :, k, :, :] = dflat[lo:hi, :, :, s:s + run]
            cols = xp.reshape(cols, (hi - lo, g, rows, run))
            # dW^T = D @ x^T: (kk*Og, Cg) per group; this operand order runs faster in OpenBLAS than x @ D^T
            part = xp.sum(xp.matmul(cols, xp.matrix_transpose(flat[lo:hi, :, :, start:start + run])), axis=0)
            dwk = part if dwk is None else dwk + part  # (G, kk*Og, Cg)
            if input_grad:
                bk.matmul_into(wd, cols, dxe[lo:hi, ...])  # (chunk, G, Cg, H*Wp)
            del cols
        if ws is not None:
            _give(ws, dybuf)
        del dybuf, dflat
        dweight = xp.reshape(xp.permute_dims(xp.flip(xp.reshape(dwk, (g, kk, og, cg)), axis=1), (0, 2, 3, 1)),
                             (o, cg, kh, kw))
        dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
        dx = None
        if input_grad:
            dx = xp.reshape(dxe, (n, c, h, wp))[:, :, :, :w]
        return dx, (dweight, dbias)

    return backward


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
    (s,) = _ntuple(where, "stride", stride, 1, False)
    (d,) = _ntuple(where, "dilation", dilation, 1, False)
    pad2: Any = padding if isinstance(padding, str) else (0, _ntuple(where, "padding", padding, 1, True)[0])
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
    stride_ = _pair(where, "stride", stride)
    dilation_ = _pair(where, "dilation", dilation)
    ph, pw = _pair(where, "padding", padding, allow_zero=True)
    oph, opw = _pair(where, "output_padding", output_padding, allow_zero=True)
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
    dcols = _conv_cols_grad(xp, weight, x3, groups)
    ypad = _col2im(xp, dcols, padded_shape, kernel, stride_, dilation_, inner, device)
    del dcols
    y = ypad[:, :, ph:ph + oh, pw:pw + ow] if (ph or pw) else ypad
    if bias is not None:
        y = y + xp.reshape(bias, (1, cout, 1, 1))
    w_shape = tuple(weight.shape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dypad = _pad2d(xp, dy, (ph, ph, pw, pw), 0.0, device)
        cols = _im2col(b, dypad, kernel, stride_, dilation_, inner)
        del dypad
        # weight is (Cin, Cout/g, kh, kw): dL/dW[ci, co, a, b] = sum x[ci] * cols[co, a, b]
        dweight = _conv_weight_grad(xp, x3, cols, groups, w_shape)
        dbias = xp.sum(dy, axis=(0, 2, 3)) if bias is not None else None
        dx = xp.reshape(_conv_matmul(xp, weight, cols, groups), (n, cin, h, w_in)) if input_grad else None
        return dx, (dweight, dbias)

    return y, backward


def conv_transpose2d(x: Array, weight: Array, bias: Array | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Array:
    """Functional form of :func:`conv_transpose2d_forward`."""
    return conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation)[0]


# ---------------------------------------------------------------------------- pooling
def _pool_geometry(where: str, x: Array, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                   ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int],
                                             tuple[int, int], tuple[int, int, int, int]]:
    if x.ndim != 4:
        raise ValueError(f"{where}: expected 4-D input of shape (N, C, H, W), got shape {tuple(x.shape)}")
    k = _pair(where, "kernel_size", kernel_size)
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    s = k if no_stride else _pair(where, "stride", stride)
    p = _pair(where, "padding", padding, allow_zero=True)
    d = _pair(where, "dilation", dilation)
    for i in range(2):
        if p[i] * 2 > k[i]:
            raise ValueError(f"{where}: padding should be at most half of the kernel size, got padding={p}, "
                             f"kernel_size={k}")
    h, w = x.shape[2], x.shape[3]
    out = (conv_output_size(h, k[0], s[0], 2 * p[0], d[0], ceil_mode),
           conv_output_size(w, k[1], s[1], 2 * p[1], d[1], ceil_mode))
    _check_out(where, x, out, k, d, (p[0], p[0], p[1], p[1]))
    # extra bottom/right padding so that ceil-mode windows fit
    extra_h = max(0, (out[0] - 1) * s[0] + d[0] * (k[0] - 1) + 1 - (h + 2 * p[0]))
    extra_w = max(0, (out[1] - 1) * s[1] + d[1] * (k[1] - 1) + 1 - (w + 2 * p[1]))
    pads = (p[0], p[0] + extra_h, p[1], p[1] + extra_w)
    return k, s, p, d, out, pads


def max_pool2d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                       ceil_mode: bool = False) -> tuple[Array, Backward]:
    """2-D max pooling (``torch.nn.functional.max_pool2d``), NCHW.

    ``stride`` defaults to ``kernel_size``; padding is implicit ``-inf``. The gradient goes to
    the first maximum of each window in row-major order (PyTorch's choice; for inputs with NaN
    it may go elsewhere). The max is separable: first over the ``kw`` column taps (``m1``, one
    ``maximum`` per tap), then over the ``kh`` row taps of ``m1``; backward routes ``dy`` back
    through the two stages with equality masks, taking each tap's share out of the remainder
    so that ties go to the first tap. Only ``maximum``, comparisons and products: no scatter, no
    ``where``. The closure keeps the input and the output (``m1`` is recomputed).

    >>> y, back = max_pool2d_forward(x, 2)     # doctest: +SKIP
    """
    where = "max_pool2d"
    b = backends.backend_of(x)
    xp = b.xp
    k, s, _, d, out, pads = _pool_geometry(where, x, kernel_size, stride, padding, dilation, ceil_mode)
    device = b.device_of(x)
    xpad = _pad2d(xp, x, pads, -math.inf, device)
    n, c, h, w = x.shape
    padded_shape = tuple(xpad.shape)
    rows = [_offset_slice(i, d[0], s[0], out[0]) for i in range(k[0])]
    cols = [_offset_slice(j, d[1], s[1], out[1]) for j in range(k[1])]
    overlap_h = d[0] * (k[0] - 1) + 1 > s[0]
    overlap_w = d[1] * (k[1] - 1) + 1 > s[1]
    tiled_h = k[0] == s[0] and d[0] == 1 and padded_shape[2] == out[0] * k[0]
    tiled_w = k[1] == s[1] and d[1] == 1 and padded_shape[3] == out[1] * k[1]

    def column_max() -> Array:
        m1 = xpad[:, :, :, cols[0]]
        for j in range(1, k[1]):
            m1 = xp.maximum(m1, xpad[:, :, :, cols[j]])
        return m1

    m1 = column_max()
    y = m1[:, :, rows[0], :]
    for i in range(1, k[0]):
        y = xp.maximum(y, m1[:, :, rows[i], :])
    if k == (1, 1):
        y = xp.asarray(y, copy=True)
    del m1

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dtype = dy.dtype
        m1 = column_max()
        # stage 2: dy -> dm1, row tap by row tap; the first tap equal to the max takes it all
        parts = []
        rest = dy
        for i in range(k[0]):
            part = rest
            if i < k[0] - 1:
                part = rest * xp.astype(m1[:, :, rows[i], :] == y, dtype)
                rest = rest - part
            parts.append(part)
        if tiled_h:  # the row taps tile the input exactly: interleave them, no zero fill
            dm1 = xp.reshape(xp.stack(parts, axis=3), (n, c, padded_shape[2], out[1]))
        else:
            dm1 = xp.zeros((n, c, padded_shape[2], out[1]), dtype=dtype, device=device)
            for i, part in enumerate(parts):
                if overlap_h:
                    dm1[:, :, rows[i], :] += part
                else:
                    dm1[:, :, rows[i], :] = part
        # stage 1: dm1 -> dx, column tap by column tap
        parts = []
        rest = dm1
        for j in range(k[1]):
            part = rest
            if j < k[1] - 1:
                part = rest * xp.astype(xpad[:, :, :, cols[j]] == m1, dtype)
                rest = rest - part
            parts.append(part)
        del m1, rest, dm1
        if tiled_w:
            dxp = xp.reshape(xp.stack(parts, axis=4), padded_shape)
        else:
            dxp = xp.zeros(padded_shape, dtype=dtype, device=device)
            for j, part in enumerate(parts):
                if overlap_w:
                    dxp[:, :, :, cols[j]] += part
                else:
                    dxp[:, :, :, cols[j]] = part
        top, _, left, _ = pads
        dx = dxp if padded_shape == (n, c, h, w) else dxp[:, :, top:top + h, left:left + w]
        return dx, ()

    return y, backward


def max_pool2d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Array:
    """Functional form of :func:`max_pool2d_forward`."""
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def _window_counts(size: int, k: int, s: int, p: int, out: int, lo: int, hi: int) -> list[int]:
    """For each of ``out`` windows along an axis, how many of its ``k`` taps fall in [lo, hi)."""
    counts = []
    for o in range(out):
        start = o * s - p
        counts.append(sum(1 for a in range(k) if lo <= start + a < hi))
    return counts


def avg_pool2d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True, divisor_override: int | None = None) -> tuple[Array, Backward]:
    """2-D average pooling (``torch.nn.functional.avg_pool2d``), NCHW.

    The divisor is ``kernel_h*kernel_w`` where the window lies inside the (zero-)padded input;
    with ``count_include_pad=False`` only the real input elements count; windows that
    ``ceil_mode`` lets hang over the edge count only what they cover (as PyTorch);
    ``divisor_override`` replaces all of this.

    >>> y, back = avg_pool2d_forward(x, 3, stride=2, padding=1)   # doctest: +SKIP
    """
    where = "avg_pool2d"
    b = backends.backend_of(x)
    xp = b.xp
    k, s, p, d, out, pads = _pool_geometry(where, x, kernel_size, stride, padding, 1, ceil_mode)
    device = b.device_of(x)
    n, c, h, w = x.shape
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override == 0:
            raise ValueError(f"{where}: divisor_override must be a non-zero integer, got {divisor_override!r}")
        divisor: Any = float(divisor_override)
    else:
        lo_h, hi_h = (-p[0], h + p[0]) if count_include_pad else (0, h)
        lo_w, hi_w = (-p[1], w + p[1]) if count_include_pad else (0, w)
        ch = _window_counts(h, k[0], s[0], p[0], out[0], lo_h, hi_h)
        cw = _window_counts(w, k[1], s[1], p[1], out[1], lo_w, hi_w)
        if all(v == k[0] for v in ch) and all(v == k[1] for v in cw):
            divisor = float(k[0] * k[1])
        else:
            divisor = xp.asarray([[float(a * bb) for bb in cw] for a in ch], dtype=x.dtype, device=device)
    inv = 1.0 / divisor
    xpad = _pad2d(xp, x, pads, 0.0, device)
    rows = [_offset_slice(i, 1, s[0], out[0]) for i in range(k[0])]
    colsl = [_offset_slice(j, 1, s[1], out[1]) for j in range(k[1])]
    total = None
    for i in range(k[0]):
        for j in range(k[1]):
            v = xpad[:, :, rows[i], colsl[j]]
            total = v * 1.0 if total is None else total + v
    y = total * inv
    padded_shape = tuple(xpad.shape)
    del xpad, total

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = dy * inv
        dxp = xp.zeros(padded_shape, dtype=dy.dtype, device=device)
        for i in range(k[0]):
            for j in range(k[1]):
                dxp[:, :, rows[i], colsl[j]] += g
        top, _, left, _ = pads
        dx = dxp if tuple(dxp.shape) == (n, c, h, w) else dxp[:, :, top:top + h, left:left + w]
        return dx, ()

    return y, backward


def avg_pool2d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Array:
    """Functional form of :func:`avg_pool2d_forward`."""
    return avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)[0]


def _adaptive_matrix(size: int, out: int) -> list[list[float]]:
    """``(out, size)`` averaging matrix: row i averages ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    rows = []
    for i in range(out):
        start = (i * size) // out
        end = -(-((i + 1) * size) // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return rows


def adaptive_avg_pool2d_forward(x: Array, output_size: Any) -> tuple[Array, Backward]:
    """Adaptive 2-D average pooling (``torch.nn.functional.adaptive_avg_pool2d``), any output size.

    Output cell ``i`` averages input rows ``floor(i*H/OH) .. ceil((i+1)*H/OH) - 1`` (PyTorch's
    windows, which may overlap). Computed as ``P_h @ x @ P_w^T`` with small averaging matrices
    (exact, pure standard); global pooling (output 1x1) is a mean. ``output_size`` is an int, a
    pair, or a pair with ``None`` for "same as the input".

    >>> y = adaptive_avg_pool2d(x, 1)      # global average pooling    # doctest: +SKIP
    """
    where = "adaptive_avg_pool2d"
    b = backends.backend_of(x)
    xp = b.xp
    if x.ndim != 4:
        raise ValueError(f"{where}: expected 4-D input of shape (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2:
        raise ValueError(f"{where}: output_size must be an int or a pair, got {output_size!r}")
    oh, ow = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
    _pair(where, "output_size", (oh, ow))
    device = b.device_of(x)
    if (oh, ow) == (1, 1):
        y = xp.mean(x, axis=(2, 3), keepdims=True)
        scale = 1.0 / (h * w)

        def backward_global(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
            return xp.broadcast_to(dy * scale, (n, c, h, w)), ()

        return y, backward_global
    ph = xp.asarray(_adaptive_matrix(h, oh), dtype=x.dtype, device=device)
    pw = xp.asarray(_adaptive_matrix(w, ow), dtype=x.dtype, device=device)
    y = xp.matmul(xp.matmul(ph, x), xp.matrix_transpose(pw))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return xp.matmul(xp.matmul(xp.matrix_transpose(ph), dy), pw), ()

    return y, backward


def adaptive_avg_pool2d(x: Array, output_size: Any) -> Array:
    """Functional form of :func:`adaptive_avg_pool2d_forward`."""
    return adaptive_avg_pool2d_forward(x, output_size)[0]


# ---------------------------------------------------------------------------- normalisation
def _channel_dot(xp: Any, a: Array, b: Array, axes: tuple[int, ...]) -> Array:
    """``sum(a * b)`` over ``axes`` (every axis but the channel axis 1) without an ``a * b`` temporary.

    For ``(N, C, ...)`` inputs: ``vecdot`` over the last axis (one fused multiply-add pass, any
    strides), then a sum of the small ``(N, C, ...)`` result; 2-D inputs use the plain product.
    """
    if a.ndim <= 2:
        return xp.sum(a * b, axis=axes)
    return xp.sum(xp.vecdot(a, b, axis=-1), axis=(0,) + tuple(range(2, a.ndim - 1)))


def batch_norm_forward(x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None = None,
                       bias: Array | None = None, training: bool = False, momentum: Any = 0.1,
                       eps: float = 1e-5) -> tuple[Array, Backward]:
    """Batch normalisation over every axis but 1 (``torch.nn.functional.batch_norm``).

    ``x`` is ``(N, C, *)``. Training: normalise with the batch mean and biased variance and, if
    given, update ``running_mean``/``running_var`` in place (``(1-momentum)*old + momentum*new``,
    the variance unbiased by ``n/(n-1)``); ``momentum`` may be a 0-d array (the cumulative
    average uses ``1/num_batches_tracked``). Evaluation: normalise with the running statistics.
    ``backward`` returns ``(dx, (dweight, dbias))`` (None for absent affine parameters).

    >>> y, back = batch_norm_forward(x, rm, rv, w, b, training=True)   # doctest: +SKIP
    """
    xp = backends.backend_of(x).xp
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    cshape = _channel_shape(x.ndim, c)
    count = 1
    for i in axes:
        count *= x.shape[i]
    eps = float(eps)
    use_batch = training or running_mean is None or running_var is None
    if use_batch:
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input "
                             f"shape {tuple(x.shape)}")
        mean = xp.mean(x, axis=axes)
        xc = x - xp.reshape(mean, cshape)
        var = _channel_dot(xp, xc, xc, axes) * (1.0 / count)
        invstd = 1.0 / xp.sqrt(var + eps)
        if training and running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean + momentum * xp.astype(mean, running_mean.dtype)
        if training and running_var is not None:
            unbiased = var * (count / (count - 1))
            running_var[...] = (1.0 - momentum) * running_var + momentum * xp.astype(unbiased, running_var.dtype)
        # the closure keeps xc = x - mean (xhat = xc * invstd is never materialised: y is one
        # product and one add away from xc, and backward folds invstd into its per-channel factors)
        y = xc * xp.reshape(invstd if weight is None else invstd * weight, cshape)
    else:
        invstd = 1.0 / xp.sqrt(running_var + eps)
        xc = (x - xp.reshape(running_mean, cshape)) * xp.reshape(invstd, cshape)  # here xhat itself
        y = xc * xp.reshape(weight, cshape) if weight is not None else xc * 1.0
    if bias is not None:
        y += xp.reshape(bias, cshape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dbias = xp.sum(dy, axis=axes)
        dweight = _channel_dot(xp, dy, xc, axes)  # sum(dy * xhat), up to the invstd factor
        if use_batch:
            dweight = dweight * invstd
        dx = None
        if input_grad:
            scale = invstd if weight is None else invstd * weight
            if use_batch:
                # dx = scale*dy - xhat*(scale*dweight/n) - scale*dbias/n: two elementwise passes and one
                # temporary (the standard has no fused multiply-add or out=)
                inv_n = 1.0 / count
                dx = xc * xp.reshape(scale * invstd * (dweight * -inv_n), cshape)
                dx += dy * xp.reshape(scale, cshape)
                dx -= xp.reshape(scale * (dbias * inv_n), cshape)
            else:
                dx = dy * xp.reshape(scale, cshape)
        return dx, (dweight if weight is not None else None, dbias if bias is not None else None)

    return y, backward


def batch_norm(x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None = None,
               bias: Array | None = None, training: bool = False, momentum: Any = 0.1, eps: float = 1e-5) -> Array:
    """Functional form of :func:`batch_norm_forward` (as ``torch.nn.functional.batch_norm``)."""
    return batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def _normalize_last(xp: Any, x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array]:
    mean = xp.mean(x, axis=axes, keepdims=True)
    xc = x - mean
    var = xp.mean(xc * xc, axis=axes, keepdims=True)
    invstd = 1.0 / xp.sqrt(var + eps)
    xc *= invstd
    return xc, invstd


def _normalize_backward(xp: Any, dxhat: Array, xhat: Array, invstd: Array, axes: tuple[int, ...]) -> Array:
    """dx of ``xhat = (x - mean) * invstd`` (biased variance) given dL/dxhat."""
    m1 = xp.mean(dxhat, axis=axes, keepdims=True)
    m2 = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
    return (dxhat - m1 - xhat * m2) * invstd


def layer_norm_forward(x: Array, normalized_shape: Any, weight: Array | None = None, bias: Array | None = None,
                       eps: float = 1e-5) -> tuple[Array, Backward]:
    """Layer normalisation over the trailing ``normalized_shape`` axes (``torch.nn.functional.layer_norm``).

    ``weight``/``bias`` have shape ``normalized_shape``. ``backward`` returns
    ``(dx, (dweight, dbias))``.

    >>> y, back = layer_norm_forward(x, (16,), w, b)    # doctest: +SKIP
    """
    xp = backends.backend_of(x).xp
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: expected input with trailing shape {shape}, got shape {tuple(x.shape)}")
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    xhat, invstd = _normalize_last(xp, x, axes, float(eps))
    y = xhat * weight if weight is not None else xhat * 1.0
    if bias is not None:
        y += bias

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dweight = xp.sum(dy * xhat, axis=lead) if weight is not None else None
        dbias = xp.sum(dy, axis=lead) if bias is not None else None
        dx = None
        if input_grad:
            dx = _normalize_backward(xp, dy * weight if weight is not None else dy, xhat, invstd, axes)
        return dx, (dweight, dbias)

    return y, backward


def layer_norm(x: Array, normalized_shape: Any, weight: Array | None = None, bias: Array | None = None,
               eps: float = 1e-5) -> Array:
    """Functional form of :func:`layer_norm_forward`."""
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


def group_norm_forward(x: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None,
                       eps: float = 1e-5) -> tuple[Array, Backward]:
    """Group normalisation (``torch.nn.functional.group_norm``): ``x`` ``(N, C, *)``, the ``C``
    channels split into ``num_groups`` groups, each normalised over its channels and all
    spatial positions; then a per-channel affine ``weight``/``bias`` of shape ``(C,)``.

    >>> y, back = group_norm_forward(x, 2, w, b)     # doctest: +SKIP
    """
    xp = backends.backend_of(x).xp
    if x.ndim < 2 or x.shape[1] % num_groups:
        raise ValueError(f"group_norm: expected input (N, C, *) with C divisible by num_groups={num_groups}, "
                         f"got shape {tuple(x.shape)}")
    shape = tuple(x.shape)
    n, c = shape[0], shape[1]
    cshape = _channel_shape(x.ndim, c)
    xg = xp.reshape(x, (n, num_groups, -1))
    xhat_g, invstd = _normalize_last(xp, xg, (2,), float(eps))
    xhat = xp.reshape(xhat_g, shape)
    y = xhat * xp.reshape(weight, cshape) if weight is not None else xhat * 1.0
    if bias is not None:
        y += xp.reshape(bias, cshape)
    red = (0,) + tuple(range(2, x.ndim))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dweight = xp.sum(dy * xhat, axis=red) if weight is not None else None
        dbias = xp.sum(dy, axis=red) if bias is not None else None
        dx = None
        if input_grad:
            dxhat = dy * xp.reshape(weight, cshape) if weight is not None else dy
            dxg = _normalize_backward(xp, xp.reshape(dxhat, (n, num_groups, -1)), xhat_g, invstd, (2,))
            dx = xp.reshape(dxg, shape)
        return dx, (dweight, dbias)

    return y, backward


def group_norm(x: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None,
               eps: float = 1e-5) -> Array:
    """Functional form of :func:`group_norm_forward`."""
    return group_norm_forward(x, num_groups, weight, bias, eps)[0]


# ---------------------------------------------------------------------------- channel dropout
def dropout2d_forward(x: Array, p: float = 0.5, training: bool = True) -> tuple[Array, Backward]:
    """Zero whole channels with probability ``p`` and scale the rest by ``1/(1-p)``
    (``torch.nn.functional.dropout2d``). ``x`` is ``(N, C, H, W)`` (or ``(N, C, L)``, treated
    channel-wise as PyTorch does); the mask has shape ``(N, C, 1, 1)``. Identity when not training.

    >>> y, back = dropout2d_forward(x, 0.2)          # doctest: +SKIP
    """
    if not training or p == 0.0:
        return x, lambda dy, input_grad=True: (dy, ())
    b = backends.backend_of(x)
    mshape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
    if p == 1.0:
        mask = b.xp.zeros(mshape, dtype=x.dtype, device=b.device_of(x))
    else:
        mask = b.bernoulli(mshape, 1.0 - p, x.dtype)
        mask *= 1.0 / (1.0 - p)
    y = x * mask

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * mask, ()

    return y, backward


def dropout2d(x: Array, p: float = 0.5, training: bool = True) -> Array:
    """Functional form of :func:`dropout2d_forward`."""
    return dropout2d_forward(x, p, training)[0]
