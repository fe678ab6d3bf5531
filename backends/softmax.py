"""Softmax down the columns of ``(..., S, L)`` arrays: the readable reference (pure standard) behind
the adapters' ``softmax_cols_forward`` / ``softmax_cols_backward``.

Attention keeps its scores transposed, one column per query (``nnx/functional/attention.py``), so
its softmax runs over axis -2. A column whose entries are all -inf (a query with every key masked
out) gives probabilities 0 and logsumexp +inf, as torch's ``scaled_dot_product_attention``; a NaN
score makes its whole column NaN (probabilities and logsumexp), as torch's softmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Array = Any


def softmax_cols_forward(xp: Any, s: Array) -> tuple[Array, Array]:
    """``(p, lse)``: the softmax of each column of ``s`` and its logsumexp ``(..., 1, L)``.
    ``s`` is consumed (overwritten where the library writes in place)."""
    m = xp.max(s, axis=-2, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    s -= m
    e = xp.exp(s)
    del s
    z = xp.sum(e, axis=-2, keepdims=True)
    safe = xp.where(z == 0, 1.0, z)  # a NaN sum stays NaN: the whole column is NaN, as torch
    e *= 1.0 / safe  # one division per column, a multiplication per entry
    lse = xp.where(z == 0, math.inf, xp.log(safe) + m)
    return e, lse


def softmax_cols_backward(xp: Any, dp: Array, p: Array, vecdot: Callable[..., Array]) -> Array:
    """``ds = p * (dp - colsum(dp * p))``; ``dp`` is consumed (overwritten where the library writes in place)."""
    dp -= xp.expand_dims(vecdot(dp, p, axis=-2), axis=-2)
    dp *= p
    return dp
