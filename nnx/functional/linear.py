"""Dense (fully connected) layer and flatten: forward with an explicit backward."""

from __future__ import annotations

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


def linear_forward(x: Array, weight: Array, bias: Array | None = None) -> tuple[Array, Callable]:
    """``y = x @ weight.T + bias`` for ``x`` of shape ``(..., in)`` and weight ``(out, in)``.

    ``backward(dy, input_grad=True)`` returns ``(dx, (dweight, dbias))``; ``dx`` is None when
    ``input_grad`` is False (the first layer of a network skips that matrix product).
    """
    xp = backends.backend_of(x).xp
    wt = xp.matrix_transpose(weight)
    y = xp.matmul(x, wt)
    if bias is not None:
        y += bias

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        if x.ndim == 2:
            x2, dy2 = x, dy
        else:
            x2 = xp.reshape(x, (-1, x.shape[-1]))
            dy2 = xp.reshape(dy, (-1, dy.shape[-1]))
        dweight = xp.matmul(xp.matrix_transpose(dy2), x2)
        dbias = xp.sum(dy2, axis=0) if bias is not None else None
        dx = xp.matmul(dy, weight) if input_grad else None
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
    z = xp.matmul(x, xp.matrix_transpose(weight))
    y, saved = b.bias_act_forward(z, bias, act)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dz, dbias = b.bias_act_backward(dy, saved, act, has_bias=bias is not None)
        x2 = x if x.ndim == 2 else xp.reshape(x, (-1, x.shape[-1]))
        dz2 = dz if dz.ndim == 2 else xp.reshape(dz, (-1, dz.shape[-1]))
        dweight = xp.matmul(xp.matrix_transpose(dz2), x2)
        dx = xp.matmul(dz, weight) if input_grad else None
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
