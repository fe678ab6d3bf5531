"""Stride-1 convolution by "flat shifts", forward and backward (the fast path on every backend).

The padded input is flattened per (sample, channel); for each kernel offset the inputs of all
output positions, read row by row over the full padded width, are one contiguous slice, so
im2col is ``kh*kw`` long contiguous copies and the convolution one batched ``matmul``. When the
output has the input's size, :func:`same_size_backward` gets both gradients from one im2col of
``dy``. A layer's :class:`~nnx.functional.workspace.Workspace` lends the padded buffers (at
least ``POOL_MIN_BYTES``), which the backward gives back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._im2col import batch_chunks
from ._validation import itemsize
from .workspace import Workspace

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["POOL_MIN_BYTES", "conv2d_stride1", "give_back", "pooled", "same_size_backward", "zero_border_buffer"]

#: Scratch buffers smaller than this are not pooled: malloc hands a small freed block back
#: cache-hot, while a pooled one is cold; big ones would be page-faulted in afresh.
POOL_MIN_BYTES = 1 << 20


def pooled(xp: Any, ws: Workspace | None, shape: tuple[int, ...], dtype: Any) -> bool:
    """Whether a ``shape`` buffer of ``dtype`` comes from (and goes back to) the workspace ``ws``."""
    return ws is not None and math.prod(shape) * itemsize(xp, dtype) >= POOL_MIN_BYTES


def give_back(xp: Any, ws: Workspace | None, buf: Array) -> None:
    """Return ``buf`` to the workspace ``ws`` if it was lent by it."""
    if ws is not None and pooled(xp, ws, tuple(buf.shape), buf.dtype):
        ws.give(buf)


def zero_border_buffer(xp: Any, ws: Workspace | None, shape: tuple[int, int, int, int],
                        inner: tuple[int, int, int, int], dtype: Any, device: Any, kind: type) -> Array:
    """A ``shape`` buffer whose elements outside rows ``inner[0]:inner[1]`` x columns
    ``inner[2]:inner[3]`` are zero (the caller fills the inside): new zeros, or a workspace
    buffer with only its border cleared."""
    if not pooled(xp, ws, shape, dtype):
        return xp.zeros(shape, dtype=dtype, device=device)
    buf = ws.take(xp, shape, dtype, device, kind)
    r0, r1, c0, c1 = inner
    buf[:, :, :r0, :] = 0.0
    buf[:, :, r1:, :] = 0.0
    buf[:, :, r0:r1, :c0] = 0.0
    buf[:, :, r0:r1, c1:] = 0.0
    return buf


def _chunked_matmul(xp: Any, like: Array, wk: Array, columns: Callable[[int, int], Array],
                    chunks: list[tuple[int, int]], shape: tuple[int, ...], device: Any) -> Array:
    """``wk @ columns(lo, hi)`` for every batch chunk, as one ``shape`` array: each chunk's product
    goes straight into its rows of the output (no parts + concat copy)."""
    if len(chunks) == 1:
        return xp.matmul(wk, columns(*chunks[0]))
    bk = backends.backend_of(like)
    out = xp.empty(shape, dtype=like.dtype, device=device)
    for lo, hi in chunks:
        bk.matmul_into(wk, columns(lo, hi), out[lo:hi, ...])
    return out


def conv2d_stride1(xp: Any, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
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
    xpad = zero_border_buffer(xp, ws, (n, c, hp + spare, wp), (top, top + h, left, left + w), x.dtype, device,
                               type(x))
    xpad[:, :, top:top + h, left:left + w] = x
    flat = xp.reshape(xpad, (n, g, cg, length))
    run = oh * wp
    offsets = [a * dh * wp + bb * dw for a in range(kh) for bb in range(kw)]

    kc = kk * cg
    rows = kc + (1 if bias is not None else 0)  # a row of ones carries the bias through the matmul
    chunks = batch_chunks(xp, n, g * rows * run, x.dtype)

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
    yext = xp.reshape(_chunked_matmul(xp, x, wk, columns, chunks, (n, g, og, run), device), (n, o, oh, wp))
    y = yext[:, :, :, :ow] if ow != wp else yext
    del yext

    same_size_back = None
    if same_size and o <= 2 * c:  # "same" output size: a backward that needs no im2col of x at all
        same_size_back = same_size_backward(xp, flat, weight, bias is not None, pads, dilation, groups,
                                                 (n, c, h, w), spare, device, ws)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        # The same-size backward builds im2col of dy (O channels) instead of x (C channels) and
        # replaces col2im's kh*kw strided adds by a GEMM: worth it unless O is much larger than C.
        if same_size_back is not None and o <= (2 * c if input_grad else c):
            result = same_size_back(dy, input_grad)
        else:
            result = general_backward(dy, input_grad)
        if ws is not None:
            give_back(xp, ws, xpad)
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


def same_size_backward(xp: Any, flat: Array, weight: Array, has_bias: bool, pads: tuple[int, int, int, int],
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
    chunks = batch_chunks(xp, n, g * rows * run, weight.dtype)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        # (G, Cg, kk*Og): wd[g, c, k', o] = weight[g*Og + o, c, flip(k')]
        wd = xp.reshape(xp.permute_dims(xp.flip(xp.reshape(weight, (g, og, cg, kk)), axis=3), (0, 2, 3, 1)),
                        (g, cg, rows)) if input_grad else None
        dybuf = zero_border_buffer(xp, ws, (n, o, hb, wp), (ph, ph + h, pw, pw + w), dy.dtype, device,
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
            give_back(xp, ws, dybuf)
        del dybuf, dflat
        dweight = xp.reshape(xp.permute_dims(xp.flip(xp.reshape(dwk, (g, kk, og, cg)), axis=1), (0, 2, 3, 1)),
                             (o, cg, kh, kw))
        dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
        dx = None
        if input_grad:
            dx = xp.reshape(dxe, (n, c, h, wp))[:, :, :, :w]
        return dx, (dweight, dbias)

    return backward

