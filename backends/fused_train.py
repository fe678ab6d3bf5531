"""Pure-standard references of the fused loss, normalisation and optimizer kernels (see ``fused.py``).

Cross-entropy follows ``torch.nn.functional.cross_entropy`` (class weights, ``ignore_index``,
``label_smoothing``, reductions); BatchNorm works on ``(N, C, L)`` (the caller flattens the spatial
axes, a view); the optimizer steps follow ``torch.optim`` (single-tensor, for-loop arithmetic) and
work on any shape, in particular on one flat buffer holding all parameters of a group.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any

REDUCTIONS = ("mean", "sum", "none")


def log_softmax(xp: Any, x: Array) -> Array:
    """Stable log-softmax over the last axis."""
    m = xp.max(x, axis=-1, keepdims=True)
    s = x - m
    return s - xp.log(xp.sum(xp.exp(s), axis=-1, keepdims=True))


def _row_weights(xp: Any, target: Array, weight: Array | None, ignore_index: int, dtype: Any) -> Array:
    valid = target != ignore_index
    safe = xp.where(valid, target, xp.zeros_like(target))
    w = xp.ones(target.shape, dtype=dtype) if weight is None else xp.take(weight, safe, axis=0)
    return xp.where(valid, w, xp.zeros_like(w)), safe


def cross_entropy_forward(xp: Any, logits: Array, target: Array, weight: Array | None = None, *,
                          ignore_index: int = -100, label_smoothing: float = 0.0,
                          reduction: str = "mean") -> tuple[Array, tuple]:
    """Loss of ``logits (N, C)`` against class indices ``target (N,)``; returns ``(loss, saved)``.

    ``saved`` is what :func:`cross_entropy_backward` needs (the log-probabilities, row weights and
    the mean's denominator).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    n_classes = logits.shape[-1]
    logp = log_softmax(xp, logits)
    wy, safe = _row_weights(xp, target, weight, ignore_index, logits.dtype)
    valid = target != ignore_index
    zero = xp.zeros_like(logp)
    # ignored rows may hold -inf logits anywhere: select them away (0 * -inf would be NaN)
    picked = xp.squeeze(xp.take_along_axis(logp, xp.expand_dims(safe, axis=-1), axis=-1), axis=-1)
    loss = -(1.0 - label_smoothing) * wy * xp.where(valid, picked, zero[..., 0])
    if label_smoothing:
        wl = xp.where(xp.expand_dims(valid, axis=-1), logp, zero)
        wl = wl if weight is None else wl * weight
        loss = loss - xp.sum(wl, axis=-1) * (label_smoothing / n_classes)
    denom = xp.sum(wy)
    if reduction == "none":
        out = loss
    elif reduction == "sum":
        out = xp.sum(loss)
    else:
        out = xp.sum(loss) / denom
    return out, (logp, wy, safe, denom)


def cross_entropy_backward(xp: Any, grad: Array, saved: tuple, target: Array, weight: Array | None = None, *,
                           ignore_index: int = -100, label_smoothing: float = 0.0,
                           reduction: str = "mean") -> Array:
    """Gradient with respect to the logits; ``grad`` is the loss's gradient (a scalar, or ``(N,)``
    for ``reduction="none"``)."""
    logp, wy, safe, denom = saved
    n_classes = logp.shape[-1]
    p = xp.exp(logp)
    classes = xp.arange(n_classes, dtype=safe.dtype)
    onehot = xp.astype(xp.expand_dims(safe, axis=-1) == classes, logp.dtype)
    d = (1.0 - label_smoothing) * xp.expand_dims(wy, axis=-1) * (p - onehot)
    if label_smoothing:
        valid = xp.expand_dims(xp.astype(target != ignore_index, logp.dtype), axis=-1)
        if weight is None:
            d = d + (label_smoothing / n_classes) * valid * (n_classes * p - 1.0)
        else:
            d = d + (label_smoothing / n_classes) * valid * (p * xp.sum(weight) - weight)
    if reduction == "none":
        return d * xp.expand_dims(grad, axis=-1)
    if reduction == "mean":
        grad = grad / denom
    return d * grad


def batch_norm_stats(xp: Any, x: Array) -> tuple[Array, Array]:
    """Per-channel mean and biased variance of ``x (N, C, L)`` (two-pass, as PyTorch)."""
    mean = xp.mean(x, axis=(0, 2))
    d = x - mean[:, None]
    return mean, xp.mean(d * d, axis=(0, 2))


def batch_norm_forward(xp: Any, x: Array, mean: Array, var: Array, weight: Array | None, bias: Array | None,
                       eps: float) -> tuple[Array, Array]:
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` on ``(N, C, L)``; returns ``(y, invstd)``."""
    invstd = 1.0 / xp.sqrt(var + eps)
    y = (x - mean[:, None]) * invstd[:, None]
    if weight is not None:
        y = y * weight[:, None]
    if bias is not None:
        y = y + bias[:, None]
    return y, invstd


def batch_norm_backward(xp: Any, dy: Array, x: Array, mean: Array, invstd: Array,
                        weight: Array | None) -> tuple[Array, Array, Array]:
    """Training-mode BatchNorm backward on ``(N, C, L)``: ``(dx, dweight, dbias)``."""
    m = x.shape[0] * x.shape[2]
    xhat = (x - mean[:, None]) * invstd[:, None]
    dbias = xp.sum(dy, axis=(0, 2))
    dweight = xp.sum(dy * xhat, axis=(0, 2))
    scale = invstd if weight is None else invstd * weight
    dx = (scale / m)[:, None] * (m * dy - dbias[:, None] - xhat * dweight[:, None])
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- optimizer steps
def sgd_step_(xp: Any, param: Array, grad: Array, buf: Array | None, *, lr: float, momentum: float = 0.0,
              dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
              first: bool = False) -> None:
    """``torch.optim.SGD`` on one tensor (or flat buffer), in place; ``buf`` is the momentum buffer
    (required when momentum != 0; on the ``first`` step it is set to the gradient)."""
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        if first:
            buf[...] = g
        else:
            buf *= momentum
            buf += (1.0 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g


def adam_step_(xp: Any, param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
               max_exp_avg_sq: Array | None = None, *, lr: float, beta1: float, beta2: float, eps: float,
               step: int, weight_decay: float = 0.0, decoupled: bool = False) -> None:
    """``torch.optim.Adam`` (``decoupled=True``: AdamW) at step ``step`` (1-based), in place;
    ``max_exp_avg_sq`` given means amsgrad."""
    if weight_decay and decoupled:
        param *= 1.0 - lr * weight_decay
        g = grad
    else:
        g = grad + weight_decay * param if weight_decay else grad
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * (g * g)
    v = exp_avg_sq
    if max_exp_avg_sq is not None:
        max_exp_avg_sq[...] = xp.maximum(max_exp_avg_sq, exp_avg_sq)
        v = max_exp_avg_sq
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    denom = xp.sqrt(v) / math.sqrt(bc2) + eps
    param -= (lr / bc1) * (exp_avg / denom)


def rmsprop_step_(xp: Any, param: Array, grad: Array, square_avg: Array, buf: Array | None = None, *,
                  lr: float, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                  momentum: float = 0.0) -> None:
    """``torch.optim.RMSprop`` (not centered), in place; ``buf`` is needed when momentum != 0."""
    g = grad + weight_decay * param if weight_decay else grad
    square_avg *= alpha
    square_avg += (1.0 - alpha) * (g * g)
    avg = xp.sqrt(square_avg) + eps
    if momentum:
        buf *= momentum
        buf += g / avg
        param -= lr * buf
    else:
        param -= lr * (g / avg)


def adagrad_step_(xp: Any, param: Array, grad: Array, state_sum: Array, *, lr: float, step: int,
                  lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10) -> None:
    """``torch.optim.Adagrad`` at step ``step`` (1-based), in place."""
    g = grad + weight_decay * param if weight_decay else grad
    clr = lr / (1.0 + (step - 1) * lr_decay)
    state_sum += g * g
    param -= clr * (g / (xp.sqrt(state_sum) + eps))


def grad_norm(xp: Any, flat: Array) -> Array:
    """The 2-norm of a flat buffer as a 0-d array, accumulated in at least float32."""
    half = getattr(xp, "float16", None)
    acc = xp.astype(flat, xp.float32) if half is not None and flat.dtype == half else flat
    return xp.sqrt(xp.sum(acc * acc))
