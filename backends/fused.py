"""Pure-standard reference implementations of the fused kernels (the math, written to be read).

Each function takes the namespace ``xp`` first and uses only the Array API standard, so that
array-api-strict and torch prove the arithmetic that the NumPy overrides (``numpy_fused.py``) and the
CUDA kernels (``cuda_kernels.py``) implement in fewer passes. :class:`~nnx_backends.base.Backend`
exposes each as a method; an adapter overrides the method, never the meaning.

Conventions: gates are fused along the last axis in PyTorch's order (LSTM ``i, f, g, o``; GRU
``r, z, n``); every function returns new arrays except the optimizer steps (``*_step_``), which
update their first arguments in place.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any

ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "gelu", "gelu_tanh", "silu")
#: activations whose backward needs the pre-activation (the others use the output)
NEEDS_INPUT = ("gelu", "gelu_tanh", "silu")

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def sigmoid(xp: Any, x: Array) -> Array:
    """Logistic function, stable for large |x|."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_act(act: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {ACTIVATIONS}")


def act_forward(xp: Any, z: Array, act: str, erf: Any = None) -> Array:
    """``act(z)`` elementwise (``erf`` is the adapter's erf, needed by exact GELU)."""
    _check_act(act)
    if act == "identity":
        return z
    if act == "relu":
        return xp.where((z > 0) | xp.isnan(z), z, xp.zeros_like(z))  # NaN propagates, as torch.relu
    if act == "tanh":
        return xp.tanh(z)
    if act == "sigmoid":
        return sigmoid(xp, z)
    if act == "gelu":
        return 0.5 * z * (1.0 + erf(z * _INV_SQRT_2))
    if act == "gelu_tanh":
        return 0.5 * z * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)))
    return z * sigmoid(xp, z)  # silu


def act_backward(xp: Any, dy: Array, saved: Array, act: str, erf: Any = None) -> Array:
    """Gradient of ``act`` given ``saved``: the output for relu/tanh/sigmoid, the input for gelu/silu."""
    _check_act(act)
    if act == "identity":
        return dy
    if act == "relu":
        return xp.where(saved > 0, dy, xp.zeros_like(dy))
    if act == "tanh":
        return dy * (1.0 - saved * saved)
    if act == "sigmoid":
        return dy * saved * (1.0 - saved)
    z = saved
    if act == "gelu":
        cdf = 0.5 * (1.0 + erf(z * _INV_SQRT_2))
        return dy * (cdf + z * _INV_SQRT_2PI * xp.exp(-0.5 * z * z))
    if act == "gelu_tanh":
        u = _SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        t = xp.tanh(u)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * z * z)
        return dy * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du)
    s = sigmoid(xp, z)
    return dy * (s * (1.0 + z * (1.0 - s)))


def bias_act_forward(xp: Any, x: Array, bias: Array | None, act: str, erf: Any = None) -> tuple[Array, Array]:
    """``y = act(x + bias)`` (bias along the last axis). Returns ``(y, saved)`` for the backward."""
    z = x if bias is None else x + bias
    y = act_forward(xp, z, act, erf)
    return y, (z if act in NEEDS_INPUT else y)


def bias_act_backward(xp: Any, dy: Array, saved: Array, act: str, has_bias: bool = True,
                      erf: Any = None) -> tuple[Array, Array | None]:
    """``(dx, dbias)``: the gradient through the activation and its sum over all but the last axis."""
    dz = act_backward(xp, dy, saved, act, erf)
    if not has_bias:
        return dz, None
    return dz, xp.sum(xp.reshape(dz, (-1, dz.shape[-1])), axis=0)


def lstm_cell_forward(xp: Any, gates: Array, c_prev: Array) -> tuple[Array, Array, Array]:
    """One LSTM step from the pre-activation gates ``(N, 4H)`` (``x W_ih^T + h W_hh^T + b``).

    Returns ``(h, c, act)`` where ``act`` is ``(N, 5H)``: the activated ``i, f, g, o`` and
    ``tanh(c)``, everything the backward needs (with ``c_prev``).
    """
    hid = c_prev.shape[-1]
    i = sigmoid(xp, gates[..., :hid])
    f = sigmoid(xp, gates[..., hid:2 * hid])
    g = xp.tanh(gates[..., 2 * hid:3 * hid])
    o = sigmoid(xp, gates[..., 3 * hid:])
    c = f * c_prev + i * g
    tc = xp.tanh(c)
    h = o * tc
    return h, c, xp.concat([i, f, g, o, tc], axis=-1)


def lstm_cell_backward(xp: Any, act: Array, c_prev: Array, dh: Array, dc: Array | None) -> tuple[Array, Array]:
    """Gradients of one LSTM step: ``(dgates (N, 4H), dc_prev)``; ``dc`` is the gradient arriving
    at ``c`` from the next step (None at the last step)."""
    hid = c_prev.shape[-1]
    i, f, g, o, tc = (act[..., k * hid:(k + 1) * hid] for k in range(5))
    dct = dh * o * (1.0 - tc * tc)
    if dc is not None:
        dct = dct + dc
    di = dct * g * i * (1.0 - i)
    df = dct * c_prev * f * (1.0 - f)
    dg = dct * i * (1.0 - g * g)
    do = dh * tc * o * (1.0 - o)
    return xp.concat([di, df, dg, do], axis=-1), dct * f


def gru_cell_forward(xp: Any, gx: Array, gh: Array, h_prev: Array, b_hn: Array | None = None) -> tuple[Array, Array]:
    """One GRU step in PyTorch's formulation from ``gx = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh``
    (both ``(N, 3H)``, order ``r, z, n``): ``n = tanh(gx_n + r * gh_n)``, ``h = (1 - z) n + z h_prev``.
    ``b_hn`` ``(H,)``, when given, is added to ``gh_n`` (for a ``gh`` computed without the bias).

    Returns ``(h, act)`` with ``act = [r, z, n, gh_n]`` ``(N, 4H)`` for the backward.
    """
    hid = h_prev.shape[-1]
    r = sigmoid(xp, gx[..., :hid] + gh[..., :hid])
    z = sigmoid(xp, gx[..., hid:2 * hid] + gh[..., hid:2 * hid])
    hn = gh[..., 2 * hid:] if b_hn is None else gh[..., 2 * hid:] + b_hn
    n = xp.tanh(gx[..., 2 * hid:] + r * hn)
    h = (1.0 - z) * n + z * h_prev
    return h, xp.concat([r, z, n, hn], axis=-1)


def gru_cell_backward(xp: Any, act: Array, h_prev: Array, dh: Array) -> tuple[Array, Array, Array]:
    """Gradients of one GRU step: ``(dgx (N, 3H), dgh (N, 3H), dh_prev_direct)``; the caller adds
    ``dgh @ W_hh`` to ``dh_prev_direct``."""
    hid = h_prev.shape[-1]
    r, z, n, hn = (act[..., k * hid:(k + 1) * hid] for k in range(4))
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dz = dh * (h_prev - n) * z * (1.0 - z)
    dr = dn * hn * r * (1.0 - r)
    dgx = xp.concat([dr, dz, dn], axis=-1)
    dgh = xp.concat([dr, dz, dn * r], axis=-1)
    return dgx, dgh, dh * z
