"""``interpolate``: nearest and (bi)linear resizing with PyTorch's index arithmetic, and its backward.

Resizing is separable: each spatial dimension is multiplied by a small ``(out, in)`` interpolation
matrix (one-hot rows for ``"nearest"``, two weights per row for ``"linear"``/``"bilinear"``), so the
backward is the product with the transposed matrices and needs no scatter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from ._util import functional_form, namespace

__all__ = ["interpolate", "interpolate_forward"]

Array = Any
_SPATIAL = {"nearest": (1, 2, 3), "linear": (1,), "bilinear": (2,)}


def _weights(mode: str, n_in: int, n_out: int, scale_factor: float | None,
             align_corners: bool) -> list[tuple[int, int, float]]:
    """Rows of the interpolation matrix as ``(i0, i1, lambda)``: ``out[j] = (1 - l) in[i0] + l in[i1]``."""
    rows = []
    if mode == "nearest":
        scale = 1.0 / scale_factor if scale_factor else n_in / n_out
        for j in range(n_out):
            i = min(int(math.floor(j * scale)), n_in - 1)
            rows.append((i, i, 0.0))
        return rows
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        scale = 1.0 / scale_factor if scale_factor else n_in / n_out
    for j in range(n_out):
        src = scale * j if align_corners else max(scale * (j + 0.5) - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        rows.append((i0, i1, src - i0))
    return rows


def _matrix(xp: Any, rows: list[tuple[int, int, float]], n_in: int, dtype: Any, device: Any) -> Array:
    cols = xp.expand_dims(xp.arange(n_in, device=device), axis=0)
    i0 = xp.expand_dims(xp.asarray([r[0] for r in rows], device=device), axis=1)
    i1 = xp.expand_dims(xp.asarray([r[1] for r in rows], device=device), axis=1)
    lam = xp.expand_dims(xp.asarray([r[2] for r in rows], dtype=dtype, device=device), axis=1)
    return xp.astype(cols == i0, dtype) * (1.0 - lam) + xp.astype(cols == i1, dtype) * lam


def _out_sizes(x: Array, k: int, size: Any, scale_factor: Any) -> tuple[list[int], list[float | None]]:
    in_sizes = list(x.shape[-k:])
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        sizes = [int(size)] * k if isinstance(size, int) else [int(s) for s in size]
        if len(sizes) != k:
            raise ValueError(f"interpolate: size needs {k} entries for input of shape {tuple(x.shape)}, got {size}")
        return sizes, [None] * k
    factors = [float(scale_factor)] * k if isinstance(scale_factor, (int, float)) else [float(s) for s in scale_factor]
    if len(factors) != k or any(f <= 0 for f in factors):
        raise ValueError(f"interpolate: scale_factor needs {k} positive entries, got {scale_factor}")
    return [int(math.floor(n * f)) for n, f in zip(in_sizes, factors, strict=True)], factors


def interpolate_forward(input: Array, size: int | Sequence[int] | None = None,
                        scale_factor: float | Sequence[float] | None = None, mode: str = "nearest",
                        align_corners: bool | None = None) -> tuple[Array, Callable]:
    """Resize the spatial dimensions of ``(N, C, *spatial)`` as ``torch.nn.functional.interpolate``.

    ``mode``: ``"nearest"`` (1-3 spatial dimensions), ``"linear"`` (1) or ``"bilinear"`` (2), with
    ``align_corners`` for the linear modes. Give ``size`` or ``scale_factor`` (used as given in the
    index arithmetic, as PyTorch with ``recompute_scale_factor=None``).
    """
    xp = namespace(input)
    if mode not in _SPATIAL:
        raise ValueError(f"interpolate: mode must be one of {sorted(_SPATIAL)}, got {mode!r}")
    k = input.ndim - 2
    if k not in _SPATIAL[mode]:
        raise ValueError(f"interpolate: mode {mode!r} takes inputs with {_SPATIAL[mode]} spatial dimensions "
                         f"(N, C, ...), got shape {tuple(input.shape)}")
    if align_corners is not None and mode == "nearest":
        raise ValueError("interpolate: align_corners only applies to the linear modes, not 'nearest'")
    out_sizes, factors = _out_sizes(input, k, size, scale_factor)
    mats = []
    for axis, (n_out, f) in enumerate(zip(out_sizes, factors, strict=True)):
        n_in = input.shape[2 + axis]
        rows = _weights(mode, n_in, n_out, f, bool(align_corners))
        mats.append(_matrix(xp, rows, n_in, input.dtype, backends.device_of(input)))
    y = input
    for axis, m in enumerate(mats):
        d = 2 + axis
        y = xp.moveaxis(xp.moveaxis(y, d, -1) @ xp.matrix_transpose(m), -1, d)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = dy
        for axis, m in enumerate(mats):
            d = 2 + axis
            g = xp.moveaxis(xp.moveaxis(g, d, -1) @ m, -1, d)
        return g, ()

    return y, backward


interpolate = functional_form(interpolate_forward)
