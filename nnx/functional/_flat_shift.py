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
    buffer with only its border cleared (a workspace is given on mutable libraries only)."""
    if not pooled(xp, ws, shape, dtype):
        return xp.zeros(shape, dtype=dtype, device=device)
    buf = ws.take(xp, shape, dtype, device, kind)
    r0, r1, c0, c1 = inner
    buf[:, :, :r0, :] = 0.0
    buf[:, :, r1:, :] = 0.0
    buf[:, :, r0:r1, :c0] = 0.0
    buf[:, :, r0:r1, c1:] = 0.0
    return buf


def padded_copy(b: Any, ws: Workspace | None, x: Array, shape: tuple[int, int, int, int], top: int, left: int,
                device: Any) -> Array:
    """``x`` ``(N, C, H, W)`` written at rows ``top:top+H``, columns ``left:left+W`` of a zero
    ``shape`` buffer (from the workspace where pooled); through the backend ``b``'s ``at_set``,
    so a new array on immutable libraries."""
    h, w = x.shape[2], x.shape[3]
    buf = zero_border_buffer(b.xp, ws, shape, (top, top + h, left, left + w), x.dtype, device, type(x))
    return b.at_set(buf, (slice(None), slice(None), slice(top, top + h), slice(left, left + w)), x)


def stacked_blocks(b: Any, blocks: list[Array | float], axis: int, shape: tuple[int, ...], dtype: Any,
                   device: Any) -> Array:
    """``blocks`` concatenated along ``axis`` into a ``shape`` array; a float block stands for a
    size-1 block filled with that value. On mutable libraries each block is copied into its slot
    of one uninitialised buffer (no zero fill, no temporaries); elsewhere one ``concat``."""
    xp = b.xp
    if not b.mutable:
        fill = shape[:axis] + (1,) + shape[axis + 1:]
        return xp.concat([xp.full(fill, blk, dtype=dtype, device=device) if isinstance(blk, float) else blk
                          for blk in blocks], axis=axis)
    out = xp.empty(shape, dtype=dtype, device=device)
    at = 0
    for blk in blocks:
        size = 1 if isinstance(blk, float) else blk.shape[axis]
        out[(slice(None),) * axis + (slice(at, at + size), ...)] = blk
        at += size
    return out


def _chunked_matmul(b: Any, like: Array, wk: Array, columns: Callable[[int, int], Array],
                    chunks: list[tuple[int, int]], shape: tuple[int, ...], device: Any) -> Array:
    """``wk @ columns(lo, hi)`` for every batch chunk, as one ``shape`` array: on mutable libraries
    each chunk's product goes straight into its rows of the output (no parts + concat copy)."""
    xp = b.xp
    if len(chunks) == 1:
        return xp.matmul(wk, columns(*chunks[0]))
    if not b.mutable:
        return xp.concat([xp.matmul(wk, columns(lo, hi)) for lo, hi in chunks], axis=0)
    out = xp.empty(shape, dtype=like.dtype, device=device)
    for lo, hi in chunks:
        b.matmul_into(wk, columns(lo, hi), out[lo:hi, ...])
    return out


def conv2d_stride1(b: Any, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
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
    Writes go through the backend ``b`` (``at_set``/``at_add``, or one ``concat`` on immutable
    libraries); the workspace is used on mutable libraries only.
    """
    xp = b.xp
    if not b.mutable:
        ws = None
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    g, og, kk = groups, o // groups, kh * kw
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    oh, ow = out
    dh, dw = dilation
    spare = 1 if dw * (kw - 1) > 0 else 0
    length = (hp + spare) * wp
    xpad = padded_copy(b, ws, x, (n, c, hp + spare, wp), top, left, device)
    flat = xp.reshape(xpad, (n, g, cg, length))
    run = oh * wp
    offsets = [a * dh * wp + bb * dw for a in range(kh) for bb in range(kw)]

    kc = kk * cg
    rows = kc + (1 if bias is not None else 0)  # a row of ones carries the bias through the matmul
    chunks = batch_chunks(xp, n, g * rows * run, x.dtype)

    def columns(lo: int, hi: int) -> Array:
        blocks: list[Array | float] = [flat[lo:hi, :, :, s:s + run] for s in offsets]
        if bias is not None:
            blocks.append(1.0)
        return stacked_blocks(b, blocks, 2, (hi - lo, g, rows, run), x.dtype, device)

    wk = xp.reshape(xp.permute_dims(xp.reshape(weight, (g, og, cg, kk)), (0, 1, 3, 2)), (g, og, kc))
    if bias is not None:
        wk = xp.concat([wk, xp.reshape(bias, (g, og, 1))], axis=2)
    same_size = (oh, ow) == (h, w)
    # (the column blocks are not pooled: a freshly freed block is cache-hot when malloc hands it
    # out again, a pooled one is cold; pooling them measured slower, LeNet by 25%)
    yext = xp.reshape(_chunked_matmul(b, x, wk, columns, chunks, (n, g, og, run), device), (n, o, oh, wp))
    y = yext[:, :, :, :ow] if ow != wp else yext
    del yext

    same_size_back = None
    if same_size and o <= 2 * c:  # "same" output size: a backward that needs no im2col of x at all
        same_size_back = same_size_backward(b, flat, weight, bias is not None, pads, dilation, groups,
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
            dy_ext = b.at_set(xp.zeros((n, o, oh, wp), dtype=dy.dtype, device=device), (..., slice(0, ow)), dy)
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
                dflat = b.shift_add(dflat, dcols, offsets, run, lo)  # col2im: kk shifted adds
                del dcols
        dweight = xp.reshape(xp.permute_dims(xp.reshape(dwk[:, :kc, :], (g, kk, cg, og)), (0, 3, 2, 1)),
                             (o, cg, kh, kw))
        dbias = xp.reshape(dwk[:, kc, :], (o,)) if bias is not None else None
        dx = None
        if input_grad:
            dx = xp.reshape(dflat, (n, c, hp + spare, wp))[:, :, top:top + h, left:left + w]
        return dx, (dweight, dbias)

    return y, backward


def same_size_backward(b: Any, flat: Array, weight: Array, has_bias: bool, pads: tuple[int, int, int, int],
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
    xp = b.xp
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
        dybuf = padded_copy(b, ws, dy, (n, o, hb, wp), ph, pw, device)
        dflat = xp.reshape(dybuf, (n, g, og, hb * wp))
        dwk = None
        in_place = b.mutable and len(chunks) > 1  # chunks' dx written into their rows of one buffer
        dxe: Any = xp.empty((n, g, cg, run), dtype=dy.dtype, device=device) if input_grad and in_place else []
        for lo, hi in chunks:
            cols = stacked_blocks(b, [dflat[lo:hi, :, None, :, s:s + run] for s in offsets], 2,
                                  (hi - lo, g, kk, og, run), dy.dtype, device)
            cols = xp.reshape(cols, (hi - lo, g, rows, run))
            # dW^T = D @ x^T: (kk*Og, Cg) per group; this operand order runs faster in OpenBLAS than x @ D^T
            part = xp.sum(xp.matmul(cols, xp.matrix_transpose(flat[lo:hi, :, :, start:start + run])), axis=0)
            dwk = part if dwk is None else dwk + part  # (G, kk*Og, Cg)
            if input_grad and in_place:
                b.matmul_into(wd, cols, dxe[lo:hi, ...])  # (chunk, G, Cg, H*Wp)
            elif input_grad:
                dxe.append(xp.matmul(wd, cols))
            del cols
        if ws is not None:
            give_back(xp, ws, dybuf)
        del dybuf, dflat
        dweight = xp.reshape(xp.permute_dims(xp.flip(xp.reshape(dwk, (g, kk, og, cg)), axis=1), (0, 2, 3, 1)),
                             (o, cg, kh, kw))
        dbias = b.channel_sum(dy) if has_bias else None
        dx = None
        if input_grad:
            if not in_place:
                dxe = dxe[0] if len(dxe) == 1 else xp.concat(dxe, axis=0)
            dx = xp.reshape(dxe, (n, c, h, wp))[:, :, :, :w]
        return dx, (dweight, dbias)

    return backward

