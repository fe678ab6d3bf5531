"""``pad``: constant, reflect, replicate and circular padding with PyTorch's pad-tuple order, and its backward.

``pad = (left_last, right_last, left_second_last, right_second_last, ...)``: pairs from the last
dimension backwards, as ``torch.nn.functional.pad``. The non-constant modes gather with an index
map per padded dimension; their backward sums the gradient of every copy into its source element
(a product with the 0/1 matrix of the index map, so repeated indices add up on every backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from ._util import functional_form, namespace

__all__ = ["pad", "pad_forward"]

Array = Any
_MODES = ("constant", "reflect", "replicate", "circular")


def _source_index(mode: str, n: int, left: int, right: int) -> list[int]:
    """For each output position along a padded dimension, the input position it copies."""
    out = []
    for j in range(-left, n + right):
        if mode == "replicate":
            out.append(min(max(j, 0), n - 1))
        elif mode == "circular":
            out.append(j % n)
        else:  # reflect (the edge is not repeated)
            period = 2 * (n - 1)
            k = j % period if period else 0
            out.append(k if k < n else period - k)
    return out


def _one_hot(xp: Any, index: Any, n: int, dtype: Any, device: Any) -> Array:
    cols = xp.arange(n, device=device)
    return xp.astype(xp.expand_dims(index, axis=1) == xp.expand_dims(cols, axis=0), dtype)


def _parse(where: str, x: Array, pad: Sequence[int], mode: str) -> list[tuple[int, int, int]]:
    if mode not in _MODES:
        raise ValueError(f"{where}: mode must be one of {_MODES}, got {mode!r}")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim or not all(isinstance(p, int) and p >= 0 for p in pad):
        raise ValueError(f"{where}: pad must be an even-length sequence of non-negative ints, at most 2 per "
                         f"dimension of the input (shape {tuple(x.shape)}), got {pad}")
    dims = []
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        left, right = pad[2 * i], pad[2 * i + 1]
        n = x.shape[d]
        if mode == "reflect" and (left >= n or right >= n):
            raise ValueError(f"{where}: reflect padding ({left}, {right}) must be smaller than the dimension "
                             f"{d} of size {n}")
        if mode == "circular" and (left > n or right > n):
            raise ValueError(f"{where}: circular padding ({left}, {right}) must be at most the dimension {d} "
                             f"of size {n}")
        if mode in ("replicate", "reflect", "circular") and n == 0:
            raise ValueError(f"{where}: cannot {mode}-pad the empty dimension {d}")
        if left or right:
            dims.append((d, left, right))
    return dims


def pad_forward(x: Array, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> tuple[Array, Callable]:
    """Pad ``x`` as ``torch.nn.functional.pad(x, pad, mode, value)``; returns ``(y, backward)``.

    >>> import numpy as np
    >>> x = nnx.asarray(np.arange(12.0).reshape(1, 3, 4))
    >>> y = nnx.functional.pad(x, (1, 1, 2, 0), mode="reflect")   # last dim +1 each side, 2nd-last +2 before
    >>> tuple(y.shape)
    (1, 5, 6)
    """
    xp = namespace(x)
    dims = _parse("pad", x, pad, mode)
    in_shape = tuple(x.shape)
    y = x
    maps = []
    for d, left, right in dims:
        if mode == "constant":
            parts = []
            for width in (left, right):
                shape = list(y.shape)
                shape[d] = width
                parts.append(xp.full(tuple(shape), float(value), dtype=x.dtype, device=backends.device_of(x)))
            y = xp.concat([parts[0], y, parts[1]], axis=d)
        else:
            idx = xp.asarray(_source_index(mode, y.shape[d], left, right), device=backends.device_of(x))
            maps.append((d, idx, y.shape[d]))
            y = xp.take(y, idx, axis=d)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = dy
        if mode == "constant":
            slices = [slice(None)] * len(in_shape)
            for d, left, _ in dims:
                slices[d] = slice(left, left + in_shape[d])
            return g[tuple(slices)], ()
        for d, idx, n in reversed(maps):
            m = _one_hot(xp, idx, n, g.dtype, backends.device_of(g))
            g = xp.moveaxis(xp.moveaxis(g, d, -1) @ m, -1, d)
        return g, ()

    return y, backward


pad = functional_form(pad_forward)
