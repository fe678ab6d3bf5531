"""im2col / col2im and the grouped matrix products of the general convolution path.

``im2col`` gathers, for every output position, the ``C/groups*kh*kw`` input values it sees into
``(N, C*kh*kw, OH*OW)``; the convolution is then one batched ``matmul`` per group. ``col2im`` is
its adjoint (one sliced ``+=`` per kernel offset). The batch is processed in chunks so that no
column block exceeds ``COLUMN_CHUNK_BYTES``.
"""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

from ._validation import itemsize
from ._windows import offset_slice

Array = Any

__all__ = ["COLUMN_CHUNK_BYTES", "batch_chunks", "col2im", "conv_cols_grad", "conv_matmul", "conv_weight_grad",
           "grouped", "im2col"]

#: Largest im2col block (bytes) that a convolution builds at once: the batch is
#: processed in chunks of samples so that the column matrix stays cache-sized and its memory
#: bounded, whatever the batch size. 0 means the whole batch at once.
COLUMN_CHUNK_BYTES = 8 << 20

# ---------------------------------------------------------------------------- im2col / col2im
def im2col(b: backends.Backend, xpad: Array, kernel: tuple[int, int], stride: tuple[int, int],
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
        sub = xpad[:, :, offset_slice(0, 1, sh, oh), offset_slice(0, 1, sw, ow)]
        return xp.reshape(sub, (n, c, oh * ow))
    windows = b.sliding_windows(xpad, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), (2, 3))
    if windows is not None:
        windows = windows[:, :, :sh * (oh - 1) + 1:sh, :sw * (ow - 1) + 1:sw, ::dh, ::dw]
        cols = xp.permute_dims(windows, (0, 1, 4, 5, 2, 3))  # (N, C, kh, kw, OH, OW), a view
        return xp.reshape(cols, (n, c * kh * kw, oh * ow))  # the one copy
    slices = [xpad[:, :, offset_slice(i, dh, sh, oh), offset_slice(j, dw, sw, ow)]
              for i in range(kh) for j in range(kw)]
    return xp.reshape(xp.stack(slices, axis=2), (n, c * kh * kw, oh * ow))


def col2im(b: backends.Backend, dcols: Array, padded_shape: tuple[int, int, int, int], kernel: tuple[int, int],
            stride: tuple[int, int], dilation: tuple[int, int], out: tuple[int, int], device: Any) -> Array:
    """Adjoint of :func:`im2col`: sum ``dcols`` ``(N, C*kh*kw, OH*OW)`` back onto the padded input.

    One sliced add per kernel offset (the backend's ``at_add``: in place where the library
    allows); the positions inside one slice are distinct, so the add is exact (no
    repeated-index scatter).
    """
    xp = b.xp
    n, c, hp, wp = padded_shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    d6 = xp.reshape(dcols, (n, c, kh, kw, oh, ow))
    if kh == kw == 1 and sh == sw == 1 and (oh, ow) == (hp, wp):
        return xp.reshape(dcols, (n, c, hp, wp))
    dx = xp.zeros((n, c, hp, wp), dtype=dcols.dtype, device=device)
    for i in range(kh):
        rows = offset_slice(i, dh, sh, oh)
        for j in range(kw):
            dx = b.at_add(dx, (slice(None), slice(None), rows, offset_slice(j, dw, sw, ow)), d6[:, :, i, j, :, :])
    return dx


def grouped(xp: Any, a: Array, groups: int) -> Array:
    """``(N, G*R, L)`` -> ``(N, G, R, L)`` (a free reshape); identity shape handling for G == 1."""
    if groups == 1:
        return a
    return xp.reshape(a, (a.shape[0], groups, a.shape[1] // groups, a.shape[2]))


def conv_matmul(xp: Any, w: Array, cols: Array, groups: int) -> Array:
    """``(O, C/g*kh*kw)`` weight times ``(N, C*kh*kw, L)`` columns -> ``(N, O, L)``, per group."""
    o = w.shape[0]
    n, _, length = cols.shape
    if groups == 1:
        return xp.matmul(xp.reshape(w, (o, -1)), cols)
    wg = xp.reshape(w, (groups, o // groups, -1))
    return xp.reshape(xp.matmul(wg, grouped(xp, cols, groups)), (n, o, length))


def conv_weight_grad(xp: Any, dy: Array, cols: Array, groups: int, w_shape: tuple[int, ...]) -> Array:
    """dL/dweight = sum over the batch of ``dy (N, O, L) @ cols (N, C*k, L)^T``, per group.

    Computed transposed, ``cols @ dy^T`` (the operand order OpenBLAS runs faster), then the small
    result is transposed back."""
    if groups == 1:
        dwt = xp.sum(xp.matmul(cols, xp.matrix_transpose(dy)), axis=0)
    else:
        dwt = xp.sum(xp.matmul(grouped(xp, cols, groups), xp.matrix_transpose(grouped(xp, dy, groups))), axis=0)
    return xp.reshape(xp.matrix_transpose(dwt), w_shape)


def conv_cols_grad(xp: Any, w: Array, dy: Array, groups: int) -> Array:
    """dL/dcols = ``weight^T @ dy`` per group: ``(N, C*kh*kw, L)``."""
    o = w.shape[0]
    n, _, length = dy.shape
    if groups == 1:
        return xp.matmul(xp.matrix_transpose(xp.reshape(w, (o, -1))), dy)
    wg = xp.reshape(w, (groups, o // groups, -1))
    d = xp.matmul(xp.matrix_transpose(wg), grouped(xp, dy, groups))
    return xp.reshape(d, (n, d.shape[1] * d.shape[2], length))


def batch_chunks(xp: Any, n: int, column_elements_per_sample: int, dtype: Any) -> list[tuple[int, int]]:
    """Split a batch of ``n`` so that each chunk's im2col matrix stays under ``COLUMN_CHUNK_BYTES``."""
    per_sample = max(1, column_elements_per_sample * itemsize(xp, dtype))
    chunk = max(1, min(n, COLUMN_CHUNK_BYTES // per_sample)) if COLUMN_CHUNK_BYTES else n
    return [(i, min(i + chunk, n)) for i in range(0, n, max(chunk, 1))] or [(0, 0)]  # an empty batch: one empty chunk
