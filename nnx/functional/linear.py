"""Dense (fully connected) layer and flatten: forward with an explicit backward."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nnx_backends as backends

__all__ = [
    "flatten",
    "flatten_forward",
    "linear",
    "linear_act_forward",
    "linear_forward",
]

Array = Any


def _rows(xp: Any, a: Array) -> Array:
    """``a`` of shape ``(..., n)`` as one ``(rows, n)`` matrix (a view when ``a`` is contiguous; a
    vector is one row).

    A stacked ``(B, T, n) @ (n, m)`` product runs as ``B`` separate small BLAS calls (NumPy) or a
    strided batched GEMM (CuPy); one ``(B*T, n) @ (n, m)`` product is one large call, about 25%
    faster on NumPy/OpenBLAS at the Transformer's sizes (``benchmarks/bench_transformer.py``).
    """
    if a.ndim == 2:
        return a
    return xp.reshape(a, (math.prod(a.shape[:-1]), a.shape[-1]))


def _unrows(xp: Any, a: Array, like: Array) -> Array:
    """The inverse of :func:`_rows`: ``a``'s rows back to ``like``'s leading dimensions."""
    if like.ndim == 2:
        return a
    return xp.reshape(a, (*like.shape[:-1], a.shape[-1]))


def linear_forward(x: Array, weight: Array, bias: Array | None = None) -> tuple[Array, Callable]:
    """``y = x @ weight.T + bias`` for ``x`` of shape ``(..., in)`` and weight ``(out, in)``.

    ``backward(dy, input_grad=True)`` returns ``(dx, (dweight, dbias))``; ``dx`` is None when
    ``input_grad`` is False (the first layer of a network skips that matrix product).
    """
    b = backends.backend_of(x)
    xp = b.xp
    x2 = _rows(xp, x)
    y = b.matmul(x2, xp.matrix_transpose(weight))
    if bias is not None:
        y += bias
    y = _unrows(xp, y, x)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dy2 = _rows(xp, dy)
        dweight = b.matmul(xp.matrix_transpose(dy2), x2)
        dbias = xp.sum(dy2, axis=0) if bias is not None else None
        dx = _unrows(xp, b.matmul(dy2, weight), x) if input_grad else None
        return dx, (dweight, dbias)

    return y, backward


def linear_act_forward(x: Array, weight: Array, bias: Array | None, act: str) -> tuple[Array, Callable]:
    """``act(x @ weight.T + bias)`` as one matrix product and one fused bias-and-activation kernel
    (``act`` one of the adapter's: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"gelu"``, ``"gelu_tanh"``,
    ``"silu"``, ``"identity"``); the backward is one fused kernel (activation gradient and bias sum)
    and the two products. ``backward(dy, input_grad=True)`` returns ``(dx, (dweight, dbias))``.
    """
    b = backends.backend_of(x)
    xp = b.xp
    x2 = _rows(xp, x)
    y, saved = b.bias_act_forward(b.matmul(x2, xp.matrix_transpose(weight)), bias, act)
    y = _unrows(xp, y, x)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dz, dbias = b.bias_act_backward(_rows(xp, dy), saved, act, has_bias=bias is not None)
        dweight = b.matmul(xp.matrix_transpose(dz), x2)
        dx = _unrows(xp, b.matmul(dz, weight), x) if input_grad else None
        return dx, (dweight, dbias)

    return y, backward


def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """Functional form of :func:`linear_forward` (as ``torch.nn.functional.linear``)."""
    return linear_forward(x, weight, bias)[0]


def flatten_forward(x: Array, start_dim: int = 1, end_dim: int = -1) -> tuple[Array, Callable]:
    """Merge dimensions ``start_dim..end_dim`` into one."""
    xp = backends.backend_of(x).xp
    shape = tuple(x.shape)
    nd = len(shape)
    s, e = start_dim % nd if nd else 0, end_dim % nd if nd else 0
    merged = 1
    for d in shape[s:e + 1]:
        merged *= d
    y = xp.reshape(x, shape[:s] + (merged,) + shape[e + 1:])

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return xp.reshape(dy, shape), ()

    return y, backward


def flatten(x: Array, start_dim: int = 1, end_dim: int = -1) -> Array:
    """Functional form of :func:`flatten_forward`."""
    return flatten_forward(x, start_dim, end_dim)[0]
