"""Pooling kernels (NCHW), forward + backward: max_pool2d, avg_pool2d, adaptive_avg_pool2d.

* **Max pooling** is separable (max over column taps, then over row taps, with ``maximum``);
  its backward routes ``dy`` back with equality masks, first maximum wins as in PyTorch: no
  scatter, no index array.
* **Average pooling** sums the ``kh*kw`` strided slices of the zero-padded input and divides by
  the per-window count (or ``divisor_override``).
* **Adaptive average pooling** is ``P_h @ x @ P_w^T`` with small averaging matrices.

On backends whose arrays are not in host memory (GPUs, see :mod:`._device`) max and average
pooling take a fixed number of whole-array operations instead of one per kernel tap: the
adapter's ``im2col`` gathers the windows (padding implicit), one reduction (``max`` and
``argmax``, or ``sum``) pools them, and the backward is one ``col2im`` of the routed gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._device import device_shaped
from ._unbatched import check_window_rank, unbatched_forward
from ._validation import pair, rank_error
from ._windows import offset_slice, output_sizes, pad2d
from .unpooling import max_pool_indices

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = [
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_forward",
    "avg_pool2d", "avg_pool2d_forward",
    "max_pool2d", "max_pool2d_forward",
]


def pool_arguments(where: str, kernel_size: Any, stride: Any = None, padding: Any = 0,
                   dilation: Any = 1) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validated ``(kernel_size, stride, padding, dilation)`` pairs of a 2-D pooling window.

    ``stride`` defaults to ``kernel_size``; ``padding`` must be at most half the kernel (as PyTorch).

    >>> pool_arguments("max_pool2d", 2)
    ((2, 2), (2, 2), (0, 0), (1, 1))
    """
    k = pair(where, "kernel_size", kernel_size)
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    s = k if no_stride else pair(where, "stride", stride)
    p = pair(where, "padding", padding, allow_zero=True)
    d = pair(where, "dilation", dilation)
    if any(2 * pp > kk for pp, kk in zip(p, k, strict=True)):
        raise ValueError(f"{where}: padding should be at most half of the kernel size, got padding={p}, "
                         f"kernel_size={k}")
    return k, s, p, d


def check_divisor_override(where: str, divisor_override: Any) -> None:
    """``divisor_override`` of an average pooling must be None or a non-zero integer."""
    if divisor_override is not None and (isinstance(divisor_override, bool)
                                         or not isinstance(divisor_override, int) or divisor_override == 0):
        raise ValueError(f"{where}: divisor_override must be a non-zero integer, got {divisor_override!r}")


def adaptive_output_size(where: str, output_size: Any) -> tuple[int | None, int | None]:
    """Validated ``output_size`` of an adaptive pooling: a positive int, or a pair of positive ints or None.

    >>> adaptive_output_size("adaptive_avg_pool2d", (None, 3))
    (None, 3)
    """
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2 or any(s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1)
                              for s in sizes):
        raise ValueError(f"{where}: output_size must be a positive integer or a pair of positive "
                         f"integers (or None), got {output_size!r}")
    return sizes  # type: ignore[return-value]


def _pool_geometry(where: str, x: Array, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                   ceil_mode: bool) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int],
                                             tuple[int, int], tuple[int, int, int, int]]:
    k, s, p, d = pool_arguments(where, kernel_size, stride, padding, dilation)
    if x.ndim != 4:
        check_window_rank(where, x, 2)
        raise rank_error(where, x, (4,), "(N, C, H, W)")
    h, w = x.shape[2], x.shape[3]
    out = output_sizes(where, x, k, s, (2 * p[0], 2 * p[1]), d, ceil_mode)
    # extra bottom/right padding so that ceil-mode windows fit
    extra_h = max(0, (out[0] - 1) * s[0] + d[0] * (k[0] - 1) + 1 - (h + 2 * p[0]))
    extra_w = max(0, (out[1] - 1) * s[1] + d[1] * (k[1] - 1) + 1 - (w + 2 * p[1]))
    pads = (p[0], p[0] + extra_h, p[1], p[1] + extra_w)
    return k, s, p, d, out, pads


def _split_to_first_max(xp: Any, grad: Array, taps: list[Array], best: Array, dtype: Any) -> list[Array]:
    """``grad`` shared out over the ``taps``: each takes what is left where it equals ``best``
    (so ties go to the first tap), the last tap takes the rest."""
    parts = []
    for tap in taps[:-1]:
        part = grad * xp.astype(tap == best, dtype)
        grad = grad - part
        parts.append(part)
    parts.append(grad)
    return parts


def _place_taps(b: Any, parts: list[Array], slices: list[slice], axis: int, tiled: bool, overlap: bool,
                shape: tuple[int, ...], dtype: Any, device: Any) -> Array:
    """A ``shape`` array with ``parts[i]`` at ``slices[i]`` along ``axis`` (2 or 3), summed where
    taps overlap; when the taps tile the axis exactly they are interleaved (no zero fill). Writes
    go through the backend ``b`` (in place where the library allows, new arrays elsewhere)."""
    xp = b.xp
    if tiled:
        return xp.reshape(xp.stack(parts, axis=axis + 1), shape)
    out = xp.zeros(shape, dtype=dtype, device=device)
    write = b.at_add if overlap else b.at_set
    for sl, part in zip(slices, parts, strict=True):
        out = write(out, (slice(None),) * axis + (sl, ...), part)
    return out


def max_pool2d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                       ceil_mode: bool = False, return_indices: bool = False, *,
                       where: str = "max_pool2d") -> tuple[Any, Backward]:
    """2-D max pooling (``torch.nn.functional.max_pool2d``), NCHW.

    ``stride`` defaults to ``kernel_size``; padding is implicit ``-inf``. The gradient goes to
    the first maximum of each window in row-major order (PyTorch's choice; for inputs with NaN
    it may go elsewhere). The max is separable: first over the ``kw`` column taps (``m1``, one
    ``maximum`` per tap), then over the ``kh`` row taps of ``m1``; backward routes ``dy`` back
    through the two stages with equality masks, taking each tap's share out of the remainder
    so that ties go to the first tap. Only ``maximum``, comparisons and products: no scatter, no
    ``where``. The closure keeps the input and the output (``m1`` is recomputed).

    >>> import nnx
    >>> y, back = max_pool2d_forward(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]), 2)
    >>> nnx.to_numpy(back(nnx.asarray([[[[1.0]]]]))[0]).tolist()    # the gradient goes to the max
    [[[[0.0, 0.0], [1.0, 0.0]]]]

    An unbatched ``(C, H, W)`` input gives a ``(C, OH, OW)`` output (as PyTorch). With
    ``return_indices`` the output is ``(y, indices)``: PyTorch's int64 indices of each window's
    maximum, flat in the input's ``H*W`` plane (for :func:`max_unpool2d`); the backward is unchanged.
    """
    if x.ndim == 3:
        return unbatched_forward(max_pool2d_forward, x, kernel_size, stride, padding, dilation, ceil_mode,
                                 return_indices, where=where)
    if return_indices:
        y, backward = max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode, where=where)
        k, s, _, d, out, pads = _pool_geometry(where, x, kernel_size, stride, padding, dilation, ceil_mode)
        return (y, max_pool_indices(backends.backend_of(x), x, k, s, d, (pads[0], pads[2]), out)), backward
    b = backends.backend_of(x)
    xp = b.xp
    k, s, _, d, out, pads = _pool_geometry(where, x, kernel_size, stride, padding, dilation, ceil_mode)
    if device_shaped(b) or b.fast_max_pool():
        return _max_pool_adapter(b, x, k, s, d, out, (pads[0], pads[2]))
    device = b.device_of(x)
    xpad = pad2d(b, x, pads, -math.inf, device)
    n, c, h, w = x.shape
    padded_shape = tuple(xpad.shape)
    rows = [offset_slice(i, d[0], s[0], out[0]) for i in range(k[0])]
    cols = [offset_slice(j, d[1], s[1], out[1]) for j in range(k[1])]
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
        parts = _split_to_first_max(xp, dy, [m1[:, :, r, :] for r in rows], y, dtype)
        dm1 = _place_taps(b, parts, rows, 2, tiled_h, overlap_h, (n, c, padded_shape[2], out[1]), dtype, device)
        # stage 1: dm1 -> dx, column tap by column tap
        parts = _split_to_first_max(xp, dm1, [xpad[:, :, :, cl] for cl in cols], m1, dtype)
        del m1, dm1
        dxp = _place_taps(b, parts, cols, 3, tiled_w, overlap_w, padded_shape, dtype, device)
        top, _, left, _ = pads
        dx = dxp if padded_shape == (n, c, h, w) else dxp[:, :, top:top + h, left:left + w]
        return dx, ()

    return y, backward


def _max_pool_adapter(b: Any, x: Array, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
                      out: tuple[int, int], offsets: tuple[int, int]) -> tuple[Array, Backward]:
    """Max pooling by the adapter's ``max_pool2d_forward`` / ``_backward``: on devices the
    whole-array formulation (windows by ``im2col``, ``max`` and ``argmax`` -- the first maximum,
    as PyTorch -- over the taps; ``dy`` routed to the argmax and summed back by ``col2im``), on
    NumPy with host kernels one pass each way. The closure keeps the adapter's ``saved`` (the
    argmax) only."""
    shape = tuple(x.shape)
    y, saved = b.max_pool2d_forward(x, k, s, d, offsets, out)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return b.max_pool2d_backward(dy, saved, shape, k, s, d, offsets, out), ()

    return y, backward


def max_pool2d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Functional form of :func:`max_pool2d_forward` (``(y, indices)`` with ``return_indices``)."""
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)[0]


def _window_counts(size: int, k: int, s: int, p: int, out: int, lo: int, hi: int) -> list[int]:
    """For each of ``out`` windows along an axis, how many of its ``k`` taps fall in [lo, hi)."""
    counts = []
    for o in range(out):
        start = o * s - p
        counts.append(sum(1 for a in range(k) if lo <= start + a < hi))
    return counts


def avg_pool2d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True, divisor_override: int | None = None, *,
                       where: str = "avg_pool2d") -> tuple[Array, Backward]:
    """2-D average pooling (``torch.nn.functional.avg_pool2d``), NCHW.

    The divisor is ``kernel_h*kernel_w`` where the window lies inside the (zero-)padded input;
    with ``count_include_pad=False`` only the real input elements count; windows that
    ``ceil_mode`` lets hang over the edge count only what they cover (as PyTorch);
    ``divisor_override`` replaces all of this.

    >>> import nnx
    >>> y, back = avg_pool2d_forward(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]), 2)
    >>> nnx.to_numpy(y).tolist()
    [[[[2.5]]]]

    An unbatched ``(C, H, W)`` input gives a ``(C, OH, OW)`` output (as PyTorch).
    """
    if x.ndim == 3:
        return unbatched_forward(avg_pool2d_forward, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                 divisor_override, where=where)
    b = backends.backend_of(x)
    xp = b.xp
    k, s, p, d, out, pads = _pool_geometry(where, x, kernel_size, stride, padding, 1, ceil_mode)
    check_divisor_override(where, divisor_override)
    device = b.device_of(x)
    n, c, h, w = x.shape
    if divisor_override is not None:
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
    if device_shaped(b):
        return _avg_pool_device(b, x, k, s, out, (pads[0], pads[2]), inv)
    xpad = pad2d(b, x, pads, 0.0, device)
    rows = [offset_slice(i, 1, s[0], out[0]) for i in range(k[0])]
    colsl = [offset_slice(j, 1, s[1], out[1]) for j in range(k[1])]
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
                dxp = b.at_add(dxp, (slice(None), slice(None), rows[i], colsl[j]), g)
        top, _, left, _ = pads
        dx = dxp if tuple(dxp.shape) == (n, c, h, w) else dxp[:, :, top:top + h, left:left + w]
        return dx, ()

    return y, backward


def _avg_pool_device(b: Any, x: Array, k: tuple[int, int], s: tuple[int, int], out: tuple[int, int],
                     offsets: tuple[int, int], inv: Any) -> tuple[Array, Backward]:
    """Average pooling in whole-array operations (the device formulation): ``im2col`` (zero
    padding), one ``sum`` over the taps, one scaling; backward scales ``dy``, spreads it over the
    taps (one broadcasting product) and sums it back with ``col2im``. ``inv`` is ``1/divisor``,
    a float or an ``(OH, OW)`` array."""
    xp = b.xp
    n, c, h, w = x.shape
    kk, length = k[0] * k[1], out[0] * out[1]
    cols = xp.reshape(b.im2col(x, k, s, (1, 1), offsets, out), (n, c, kk, length))
    y = xp.sum(cols, axis=2) * (inv if isinstance(inv, float) else xp.reshape(inv, (length,)))
    del cols
    y = xp.reshape(y, (n, c, out[0], out[1]))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = xp.reshape(dy * inv, (n, c, 1, length))
        spread = g * xp.ones((1, 1, kk, 1), dtype=dy.dtype, device=b.device_of(dy))
        return b.col2im(xp.reshape(spread, (n, c * kk, length)), (n, c, h, w), k, s, (1, 1), offsets, out), ()

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


def adaptive_avg_pool2d_forward(x: Array, output_size: Any, *,
                                where: str = "adaptive_avg_pool2d") -> tuple[Array, Backward]:
    """Adaptive 2-D average pooling (``torch.nn.functional.adaptive_avg_pool2d``), any output size.

    Output cell ``i`` averages input rows ``floor(i*H/OH) .. ceil((i+1)*H/OH) - 1`` (PyTorch's
    windows, which may overlap). Computed as ``P_h @ x @ P_w^T`` with small averaging matrices
    (exact, pure standard); global pooling (output 1x1) is a mean. ``output_size`` is an int, a
    pair, or a pair with ``None`` for "same as the input".

    >>> import nnx
    >>> y = adaptive_avg_pool2d(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]), 1)    # global average pooling
    >>> nnx.to_numpy(y).tolist()
    [[[[2.5]]]]

    An unbatched ``(C, H, W)`` input gives a ``(C, OH, OW)`` output (as PyTorch).
    """
    if x.ndim == 3:
        return unbatched_forward(adaptive_avg_pool2d_forward, x, output_size, where=where)
    b = backends.backend_of(x)
    xp = b.xp
    sizes = adaptive_output_size(where, output_size)
    if x.ndim != 4:
        check_window_rank(where, x, 2)
        raise rank_error(where, x, (4,), "(N, C, H, W)")
    n, c, h, w = x.shape
    oh, ow = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
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
