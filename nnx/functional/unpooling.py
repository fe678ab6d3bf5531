"""Max pooling indices and max unpooling (``torch.nn.functional.max_unpool2d``), forward + backward.

* :func:`max_pool_indices`: PyTorch's ``return_indices`` of max pooling: for each window, the
  flat index (into the input's ``H*W`` plane, int64) of its first maximum in row-major order
  (the element the gradient goes to). One ``im2col`` of the windows (padding reads ``-inf``)
  and one ``argmax``: the adapter's gather, so it is one device operation on GPUs.
* :func:`max_unpool2d_forward`: writes each input value at its index of a zero ``(OH, OW)``
  plane, a scatter over the flattened planes; the backward gathers ``dy`` at the indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from ..errors import check_floating, check_same_backend
from ._unbatched import check_window_rank
from ._validation import pair

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["max_unpool2d", "max_unpool2d_forward"]


def max_pool_indices(b: Any, x: Array, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
                     offsets: tuple[int, int], out: tuple[int, int]) -> Array:
    """``(N, C, OH, OW)`` int64 indices of each window's first maximum, flat in the input's ``H*W`` plane.

    ``offsets`` is the (top, left) padding; windows that ceil mode lets hang past the input read
    ``-inf`` there (never chosen: every window starts inside the input or its left padding).
    """
    xp = b.xp
    n, c, h, w = x.shape
    kk, length = k[0] * k[1], out[0] * out[1]
    cols = xp.reshape(b.im2col(x, k, s, d, offsets, out, -math.inf), (n, c, kk, length))
    tap = xp.astype(xp.argmax(cols, axis=2), xp.int64)  # first maximum of each window (taps row-major)
    pos = xp.arange(length, dtype=xp.int64, device=b.device_of(x))
    row = (pos // out[1]) * s[0] - offsets[0] + (tap // k[1]) * d[0]
    col = (pos % out[1]) * s[1] - offsets[1] + (tap % k[1]) * d[1]
    return xp.reshape(row * w + col, (n, c, out[0], out[1]))


def unpool_output_size(where: str, x: Array, kernel: tuple[int, int], stride: tuple[int, int],
                       padding: tuple[int, int], output_size: Any) -> tuple[int, int]:
    """The ``(OH, OW)`` of a max unpooling: ``(H-1)*stride - 2*padding + kernel`` by default, or
    ``output_size`` (2 sizes, or the full shape), which must be within ``stride`` of it (PyTorch's rule)."""
    h, w = x.shape[-2], x.shape[-1]
    default = tuple((size - 1) * st + kk - 2 * p for size, st, kk, p in zip((h, w), stride, kernel, padding,
                                                                           strict=True))
    if output_size is None:
        sizes = default
    else:
        if not isinstance(output_size, Sequence) or isinstance(output_size, str):
            raise TypeError(f"{where}: output_size must be a sequence of 2 sizes (or the full output shape), "
                            f"got {output_size!r}")
        sizes = tuple(output_size)[-2:] if len(output_size) in (3, 4) else tuple(output_size)
        if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in sizes):
            raise ValueError(f"{where}: output_size must hold 2 integer sizes (or the full output shape), "
                             f"got {output_size!r}")
        for axis, (want, base, st) in enumerate(zip(sizes, default, stride, strict=True)):
            if not base - st < want < base + st:
                raise ValueError(f"{where}: invalid output_size {tuple(output_size)}: along spatial axis {axis} it "
                                 f"must be between {base - st} and {base + st} (exclusive), got {want}")
    if any(v <= 0 for v in sizes):
        raise ValueError(f"{where}: the output size {tuple(sizes)} must be positive; got input shape "
                         f"{tuple(x.shape)}, kernel_size={kernel}, stride={stride}, padding={padding}")
    return sizes  # type: ignore[return-value]


def _check_indices(where: str, b: Any, x: Array, indices: Array, plane: int) -> None:
    """``indices``: an integer array of ``x``'s shape, on its backend, each in ``[0, plane)``
    (one small read back to the host, as PyTorch's own check)."""
    check_same_backend(where, indices, x, what="indices", ref_what="the input")
    xp = b.xp
    if not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(f"{where}: indices must be an integer array (max_pool2d's return_indices), got dtype "
                        f"{backends.Backend.dtype_name(indices.dtype)}")
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(f"{where}: expected indices of the input's shape {tuple(x.shape)}, got shape "
                         f"{tuple(indices.shape)}")
    if 0 not in tuple(indices.shape):
        low, high = int(b.to_numpy(xp.min(indices))), int(b.to_numpy(xp.max(indices)))
        if low < 0 or high >= plane:
            bad = low if low < 0 else high
            raise IndexError(f"{where}: found an invalid max index {bad} (the output planes have {plane} "
                             f"elements); pass the output_size of the pooled input")


def max_unpool2d_forward(x: Array, indices: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         output_size: Any = None, *, where: str = "max_unpool2d") -> tuple[Array, Backward]:
    """Partial inverse of :func:`max_pool2d` (``torch.nn.functional.max_unpool2d``): each value of
    ``x`` ``(N, C, H, W)`` (or unbatched ``(C, H, W)``) is written at its flat index ``indices``
    (same shape, as returned by ``max_pool2d(..., return_indices=True)``) of a zero
    ``(N, C, OH, OW)`` output; ``OH = (H-1)*stride - 2*padding + kernel`` unless ``output_size``
    says otherwise. ``backward(dy)`` returns ``(dx, ())`` with ``dx`` gathered from ``dy`` at the
    indices.

    Indices that repeat (overlapping pooling windows sharing a maximum) write the mean of their
    values, which is that maximum (PyTorch keeps one of them); the gradient is then split
    between them, the derivative of that mean (PyTorch gives each the whole gradient).

    >>> import nnx
    >>> import nnx.functional as F
    >>> (y, idx), _ = F.max_pool2d_forward(nnx.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]), 2, return_indices=True)
    >>> nnx.to_numpy(F.max_unpool2d(y, idx, 2)).tolist()
    [[[[0.0, 0.0], [4.0, 0.0]]]]
    """
    b = backends.backend_of(x)
    xp = b.xp
    check_floating(where, x)
    if x.ndim != 4:
        check_window_rank(where, x, 2)
    k = pair(where, "kernel_size", kernel_size)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else pair(where, "stride",
                                                                                                    stride)
    p = pair(where, "padding", padding, allow_zero=True)
    oh, ow = unpool_output_size(where, x, k, s, p, output_size)
    _check_indices(where, b, x, indices, oh * ow)
    shape = tuple(x.shape)
    planes = 1
    for size in shape[:-2]:
        planes *= size
    length, plane = shape[-2] * shape[-1], oh * ow
    device = b.device_of(x)
    # global flat index of each value: its plane's offset plus its index inside the plane
    base = xp.reshape(xp.arange(planes, dtype=xp.int64, device=device) * plane, (planes, 1))
    flat = xp.reshape(xp.reshape(xp.astype(indices, xp.int64), (planes, length)) + base, (-1,))
    values = xp.reshape(x, (-1,))
    total = b.scatter_add(xp.zeros((planes * plane,), dtype=x.dtype, device=device), flat, values)
    hits = b.scatter_add(xp.zeros((planes * plane,), dtype=x.dtype, device=device), flat, xp.ones_like(values))
    share = 1.0 / xp.clip(hits, min=1.0)  # 1 where an index is written once (the usual case)
    y = xp.reshape(total * share, shape[:-2] + (oh, ow))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = xp.take(xp.reshape(dy, (-1,)) * share, flat, axis=0)
        return xp.reshape(g, shape), ()

    return y, backward


def max_unpool2d(x: Array, indices: Array, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Array:
    """Functional form of :func:`max_unpool2d_forward` (as ``torch.nn.functional.max_unpool2d``)."""
    return max_unpool2d_forward(x, indices, kernel_size, stride, padding, output_size)[0]
