"""Scaled dot-product attention with an explicit backward, and sinusoidal positions.

``scaled_dot_product_attention_forward(q, k, v, ...)`` returns ``(out, backward)``; the closure
``backward(dout, input_grad=True)`` returns ``(dq, (dk, dv))`` like every other two-or-more-input
op of :mod:`nnx.functional` (the first input's gradient first, the others as a tuple).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nnx_backends as backends

__all__ = [
    "attention_forward",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_forward",
    "sinusoidal_positions",
]

Array = Any


def _is_bool(xp: Any, a: Array) -> bool:
    return a.dtype == xp.bool


def _check_inputs(where: str, q: Array, k: Array, v: Array, attn_mask: Array | None) -> None:
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"{where}: query, key and value need at least 2 dimensions (..., L, E); got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{where}: query and key must share the last dimension E; got {q.shape[-1]} and "
                         f"{k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{where}: key and value must have the same length S; got {k.shape[-2]} and "
                         f"{v.shape[-2]}")
    if attn_mask is None:
        return
    xp = backends.backend_of(q).xp
    kind = "bool" if _is_bool(xp, attn_mask) else str(attn_mask.dtype)
    if not (_is_bool(xp, attn_mask) or xp.isdtype(attn_mask.dtype, "real floating")):
        raise TypeError(f"{where}: attn_mask must be boolean (True = take part) or floating (added to the "
                        f"scores); got dtype {kind}")
    L, S = q.shape[-2], k.shape[-2]
    ms = tuple(attn_mask.shape)
    if attn_mask.ndim < 2 or ms[-2] not in (1, L) or ms[-1] not in (1, S):
        raise ValueError(f"{where}: attn_mask must broadcast to (..., L={L}, S={S}); got shape {ms}")


def _bias(xp: Any, q: Array, k: Array, attn_mask: Array | None, is_causal: bool) -> tuple[Array | None, Array | None]:
    """(boolean keep-mask or None, additive float bias or None), both broadcastable to (..., L, S)."""
    L, S = q.shape[-2], k.shape[-2]
    keep = None
    add = None
    if is_causal:
        dev = getattr(q, "device", None)
        i = xp.arange(L, device=dev)[:, None]
        j = xp.arange(S, device=dev)[None, :]
        keep = i >= j
    if attn_mask is not None:
        if _is_bool(xp, attn_mask):
            keep = attn_mask if keep is None else xp.logical_and(keep, attn_mask)
        else:
            add = xp.astype(attn_mask, q.dtype)
    return keep, add


# The scores are kept transposed, ``(..., S, L)``: one column per query. The softmax's reductions
# then run down the columns (axis -2) and its per-query scalars broadcast along contiguous rows,
# which NumPy vectorises; over the last axis, a row of only S entries per reduction left it loop
# overhead (the row max alone took 2 ms of a 25 ms attention step at (32, 4, 128, 128)). The products
# take the transposed operands as they are (BLAS transpose flags), so the layout costs no copy.


def _t(xp: Any, a: Array | None) -> Array | None:
    return None if a is None else xp.matrix_transpose(a)


def _scores_t(xp: Any, q: Array, k: Array, keep_t: Array | None, add_t: Array | None) -> Array:
    """``(q @ k^T (+ add))^T`` as ``(..., S, L)``, -inf where ``keep`` is False; ``q`` comes already scaled."""
    s = xp.matmul(k, xp.matrix_transpose(q))
    if add_t is not None:
        if add_t.ndim <= s.ndim and all(a in (1, b) for a, b in zip(add_t.shape[::-1], s.shape[::-1], strict=False)):
            s += add_t  # s is a new array: add in place
        else:
            s = s + add_t
    if keep_t is not None:
        s = xp.where(keep_t, s, -math.inf)
    return s


def _probs_from_lse(xp: Any, s: Array, lse: Array) -> Array:
    return xp.exp(s - lse)  # exp(-inf) = 0 for masked entries and for fully masked queries (lse = +inf)


def attention_forward(query: Array, key: Array, value: Array, attn_mask: Array | None = None,
                      dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, *,
                      dropout_mask: Array | None = None, recompute: bool = False,
                      where: str = "scaled_dot_product_attention") -> tuple[Array, Array, Callable]:
    """Attention that also returns the probabilities (before dropout): ``(out, probs, backward)``.

    ``backward(dout, input_grad=True, grad_probs=None, out=None)`` returns ``(dq, (dk, dv))``;
    ``grad_probs`` (dL/d probs, e.g. from attention weights a caller returned) is added when given;
    ``out``, three arrays of the shapes of q, k, v, receives the gradients where the library writes
    in place (they are then returned). This is the
    kernel behind :class:`nnx.MultiheadAttention`; ``probs`` ``(..., L, S)`` (a transposed view of
    the kernel's ``(..., S, L)`` layout) is ``None`` when ``recompute`` is set.
    """
    _check_inputs(where, query, key, value, attn_mask)
    b = backends.backend_of(query)
    xp = b.xp
    sc = float(scale) if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    keep, add = _bias(xp, query, key, attn_mask, is_causal)
    keep_t, add_t = _t(xp, keep), _t(xp, add)
    qs = query * sc  # the scale on q (L x E) instead of on the scores (L x S)
    p, lse = b.softmax_cols_forward(_scores_t(xp, qs, key, keep_t, add_t))  # one kernel on CuPy
    drop = dropout_mask
    if drop is None and dropout_p > 0.0:
        shape = (*p.shape[:-2], p.shape[-1], p.shape[-2])  # (..., L, S)
        drop = b.bernoulli(shape, 1.0 - dropout_p, p.dtype) / (1.0 - dropout_p) if dropout_p < 1.0 \
            else xp.zeros(shape, dtype=p.dtype)
    elif drop is not None:
        drop = xp.astype(drop, p.dtype)
        if dropout_p > 0.0:
            drop = drop / (1.0 - dropout_p)
    drop_t = _t(xp, drop)  # drawn as (..., L, S) like torch's mask; used through a transposed view
    pd = p * drop_t if drop_t is not None else p
    out = xp.matmul(xp.matrix_transpose(pd), value)
    del pd
    kept_p: Array | None = None if recompute else p

    def backward(dout: Array, input_grad: bool = True, grad_probs: Array | None = None,
                 out: tuple[Array, Array, Array] | None = None) -> tuple[Array, tuple]:
        # out: destinations for dq, dk, dv (views of the caller's buffer, on mutable libraries; the
        # products are written there instead of into new arrays that the caller would copy)
        if out is not None and (not b.mutable or tuple(out[1].shape) != tuple(key.shape)
                                or tuple(out[2].shape) != tuple(value.shape)):
            out = None
        probs = _probs_from_lse(xp, _scores_t(xp, qs, key, keep_t, add_t), lse) if kept_p is None else kept_p
        pdrop = probs * drop_t if drop_t is not None else probs
        dv = xp.matmul(pdrop, dout) if out is None else b.matmul_into(pdrop, dout, out[2])
        del pdrop
        dp = xp.matmul(value, xp.matrix_transpose(dout))  # (..., S, L)
        if drop_t is not None:
            dp = dp * drop_t
        if grad_probs is not None:
            dp = dp + xp.matrix_transpose(grad_probs)
        ds = b.softmax_cols_backward(dp, probs)  # p * (dp - colsum(dp * p)), in place on dp (a new array)
        dk = xp.matmul(ds, qs) if out is None else b.matmul_into(ds, qs, out[1])
        dq = None
        if input_grad:
            dst = xp.matrix_transpose(ds)
            dq = xp.matmul(dst, key) if out is None else b.matmul_into(dst, key, out[0])
            dq *= sc
        return dq, (_unbroadcast(xp, dk, key.shape), _unbroadcast(xp, dv, value.shape))

    return out, (None if kept_p is None else xp.matrix_transpose(kept_p)), backward


def _unbroadcast(xp: Any, g: Array, shape: tuple) -> Array:
    """Sum ``g`` down to ``shape`` (key/value broadcast over leading batch dimensions)."""
    if tuple(g.shape) == tuple(shape):
        return g
    while g.ndim > len(shape):
        g = xp.sum(g, axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = xp.sum(g, axis=ax, keepdims=True)
    return g


def scaled_dot_product_attention_forward(
        query: Array, key: Array, value: Array, attn_mask: Array | None = None, dropout_p: float = 0.0,
        is_causal: bool = False, scale: float | None = None, *, dropout_mask: Array | None = None,
        recompute: bool = False) -> tuple[Array, Callable]:
    """``softmax(q @ k^T * scale + mask) @ v`` with its backward (``torch.nn.functional.scaled_dot_product_attention``).

    Args:
        query: ``(..., L, E)``; key ``(..., S, E)``; value ``(..., S, Ev)`` (any number of leading
            batch dimensions, broadcast as in matmul).
        attn_mask: boolean (True = the position takes part, as torch) or floating (added to the
            scores), broadcastable to ``(..., L, S)``.
        dropout_p: dropout probability on the attention probabilities (mask from the backend RNG).
        is_causal: mask out keys after each query (top-left aligned lower triangle, as torch).
        scale: score scale, default ``1 / sqrt(E)``.
        dropout_mask: nnx addition: an explicit keep-mask ``(..., L, S)`` (bool or 0/1) used instead
            of a random draw (scaled by ``1/(1-dropout_p)``): makes dropout reproducible for gradcheck.
        recompute: nnx addition: keep only q, k, v and the per-row logsumexp, and recompute the
            softmax in backward (saves one ``(L, S)`` block per head between forward and backward).

    A row whose keys are all masked out gives output 0 and zero gradients (torch's SDPA does the
    same; ``torch.nn.MultiheadAttention`` gives NaN there).

    ``backward(dout, input_grad=True)`` returns ``(dq, (dk, dv))``; ``dq`` is None when
    ``input_grad`` is False.

    >>> import numpy as np, nnx.functional as F
    >>> q = k = v = nnx.asarray(np.random.default_rng(0).standard_normal((2, 4, 5, 8)))   # (N, heads, L, E)
    >>> out, backward = F.scaled_dot_product_attention_forward(q, k, v, is_causal=True)
    >>> dout = nnx.asarray(np.ones((2, 4, 5, 8)))
    >>> dq, (dk, dv) = backward(dout)
    >>> tuple(out.shape), tuple(dq.shape), tuple(dv.shape)
    ((2, 4, 5, 8), (2, 4, 5, 8), (2, 4, 5, 8))
    """
    out, _, bwd = attention_forward(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                    dropout_mask=dropout_mask, recompute=recompute)

    def backward(dout: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return bwd(dout, input_grad)

    return out, backward


def scaled_dot_product_attention(query: Array, key: Array, value: Array, attn_mask: Array | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Array:
    """Functional form of :func:`scaled_dot_product_attention_forward` (as torch's)."""
    return scaled_dot_product_attention_forward(query, key, value, attn_mask, dropout_p, is_causal, scale)[0]


def sinusoidal_positions(length: int, dim: int, *, base: float = 10000.0, dtype: Any = None) -> Array:
    """The fixed sine/cosine position table of "Attention is all you need", shape ``(length, dim)``.

    ``P[t, 2i] = sin(t / base^(2i/dim))``, ``P[t, 2i+1] = cos(t / base^(2i/dim))`` on the current
    backend (default dtype). Add it to token embeddings: ``x = emb(ids) + sinusoidal_positions(T, d)``.

    >>> import nnx.functional as F
    >>> tuple(F.sinusoidal_positions(128, 64).shape)
    (128, 64)
    """
    from ..backend import get_backend, get_default_dtype

    if int(length) < 1 or int(dim) < 1:
        raise ValueError(f"sinusoidal_positions: length and dim must be positive; got {length}, {dim}")
    b = get_backend()
    xp = b.xp
    dt = b.dtype(dtype if dtype is not None else get_default_dtype())
    t = xp.astype(xp.arange(length, device=b.device), dt)[:, None]
    half = (dim + 1) // 2
    i = xp.astype(xp.arange(half, device=b.device), dt)
    freq = xp.exp(i * (-2.0 * math.log(base) / dim))[None, :]
    ang = t * freq
    out = xp.stack([xp.sin(ang), xp.cos(ang)], axis=-1)
    return xp.reshape(out, (length, 2 * half))[:, :dim]
