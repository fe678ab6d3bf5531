"""Layer normalisation over the last axis of ``(rows, features)`` arrays: the readable reference
(pure standard) behind the adapters' ``layer_norm_rows_forward`` / ``layer_norm_rows_backward``.

Forward: ``xhat = (x - mean) * invstd`` per row (biased variance), ``y = xhat * weight + bias``.
Backward, with ``g = dy * weight``: ``dx = (g - mean(g) - xhat * mean(g * xhat)) * invstd``,
``dweight = sum_rows(dy * xhat)``, ``dbias = sum_rows(dy)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any
Vecdot = Callable[..., Array]


def layer_norm_rows_forward(xp: Any, x: Array, weight: Array | None, bias: Array | None, eps: float,
                            vecdot: Vecdot) -> tuple[Array, Array, Array]:
    """``(y, xhat, invstd)`` for ``x`` of shape ``(rows, n)``; ``invstd`` has shape ``(rows, 1)``."""
    n = x.shape[-1]
    xc = x - xp.mean(x, axis=-1, keepdims=True)
    var = xp.expand_dims(vecdot(xc, xc, axis=-1), axis=-1) * (1.0 / n)
    invstd = 1.0 / xp.sqrt(var + eps)
    xhat = xc * invstd
    y = xhat * weight if weight is not None else xhat * 1.0
    if bias is not None:
        y = y + bias
    return y, xhat, invstd


def layer_norm_rows_backward(xp: Any, dy: Array, xhat: Array, invstd: Array, weight: Array | None,
                             has_bias: bool, input_grad: bool, vecdot: Vecdot) -> tuple[Array | None, Any, Any]:
    """``(dx, dweight, dbias)`` of :func:`layer_norm_rows_forward` (None where not asked for)."""
    dweight = vecdot(dy, xhat, axis=0) if weight is not None else None
    dbias = xp.sum(dy, axis=0) if has_bias else None
    if not input_grad:
        return None, dweight, dbias
    n = dy.shape[-1]
    g = dy * weight if weight is not None else dy
    m1 = xp.mean(g, axis=-1, keepdims=True)
    m2 = xp.expand_dims(vecdot(g, xhat, axis=-1), axis=-1) * (1.0 / n)
    return (g - m1 - xhat * m2) * invstd, dweight, dbias
