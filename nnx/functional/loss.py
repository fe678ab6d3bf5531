"""Loss functions with PyTorch's semantics. ``*_forward(pred, target, ...)`` returns
``(loss, backward)`` with ``backward(dloss) -> (dpred, ())``; plain names return the loss.

``dloss`` has the shape of the loss: a scalar for ``reduction="mean"``/``"sum"``, the per-element
shape for ``"none"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._device import device_shaped
from ._util import functional_form, reduce_loss

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_forward",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_forward",
    "cross_entropy",
    "cross_entropy_forward",
    "huber_loss",
    "huber_loss_forward",
    "l1_loss",
    "l1_loss_forward",
    "mse_loss",
    "mse_loss_forward",
    "nll_loss",
    "nll_loss_forward",
    "smooth_l1_loss",
    "smooth_l1_loss_forward",
]

Array = Any


def _reduced_backward(xp: Any, grad_elem: Callable[[], Array], n: int, reduction: str) -> Callable:
    """Backward of ``reduce(per_element)`` given d per_element / d pred (a thunk)."""

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = grad_elem()
        if reduction == "mean":
            return g * (dloss / n), ()
        return g * dloss, ()

    return backward


def _numel(x: Array) -> int:
    n = 1
    for s in x.shape:
        n *= s
    return n


def mse_loss_forward(input: Array, target: Array, reduction: str = "mean") -> tuple[Array, Callable]:
    """Mean squared error ``(input - target)^2``."""
    xp = backends.backend_of(input).xp
    diff = input - target
    loss = reduce_loss(xp, diff * diff, reduction, "mse_loss")
    return loss, _reduced_backward(xp, lambda: 2.0 * diff, _numel(diff), reduction)


def l1_loss_forward(input: Array, target: Array, reduction: str = "mean") -> tuple[Array, Callable]:
    """Mean absolute error ``|input - target|`` (gradient ``sign(diff)``, 0 at 0)."""
    xp = backends.backend_of(input).xp
    diff = input - target
    loss = reduce_loss(xp, xp.abs(diff), reduction, "l1_loss")
    return loss, _reduced_backward(xp, lambda: xp.sign(diff), _numel(diff), reduction)


def huber_loss_forward(input: Array, target: Array, reduction: str = "mean",
                       delta: float = 1.0) -> tuple[Array, Callable]:
    """Huber loss: ``0.5 d^2`` for ``|d| < delta``, else ``delta (|d| - 0.5 delta)``."""
    xp = backends.backend_of(input).xp
    delta = float(delta)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    diff = input - target
    ad = xp.abs(diff)
    small = ad < delta
    per = xp.where(small, 0.5 * diff * diff, delta * (ad - 0.5 * delta))
    loss = reduce_loss(xp, per, reduction, "huber_loss")
    return loss, _reduced_backward(xp, lambda: xp.where(small, diff, delta * xp.sign(diff)), _numel(diff), reduction)


def smooth_l1_loss_forward(input: Array, target: Array, reduction: str = "mean",
                           beta: float = 1.0) -> tuple[Array, Callable]:
    """Smooth L1: ``0.5 d^2 / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta`` (Huber / beta)."""
    xp = backends.backend_of(input).xp
    beta = float(beta)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    diff = input - target
    ad = xp.abs(diff)
    if beta == 0.0:
        loss = reduce_loss(xp, ad, reduction, "smooth_l1_loss")
        return loss, _reduced_backward(xp, lambda: xp.sign(diff), _numel(diff), reduction)
    small = ad < beta
    per = xp.where(small, 0.5 * diff * diff / beta, ad - 0.5 * beta)
    loss = reduce_loss(xp, per, reduction, "smooth_l1_loss")
    return loss, _reduced_backward(xp, lambda: xp.where(small, diff / beta, xp.sign(diff)), _numel(diff), reduction)


def _classes_last(xp: Any, x: Array) -> tuple[Array, tuple[int, ...]]:
    """(N, C, d1, ...) -> (N*d1*..., C); returns the permuted shape to undo it."""
    if x.ndim == 2:
        return x, tuple(x.shape)
    if x.ndim == 1:
        return xp.reshape(x, (1, x.shape[0])), tuple(x.shape)
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    moved = xp.permute_dims(x, perm)
    return xp.reshape(moved, (-1, x.shape[1])), tuple(moved.shape)


def _classes_back(xp: Any, g: Array, input_shape: tuple[int, ...], moved_shape: tuple[int, ...]) -> Array:
    if len(input_shape) <= 2:
        return xp.reshape(g, input_shape)
    nd = len(input_shape)
    g = xp.reshape(g, moved_shape)
    inv = (0, nd - 1) + tuple(range(1, nd - 1))
    return xp.permute_dims(g, inv)


def _log_softmax_rows(xp: Any, z: Array) -> tuple[Array, Array]:
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = xp.sum(e, axis=1, keepdims=True)
    return shifted - xp.log(s), e / s


def _check_targets(where: str, b: backends.Backend, target: Array, n_classes: int, ignore_index: int) -> None:
    if not b.isdtype(target.dtype, "integral"):
        raise TypeError(f"{where}: class-index targets must be integers, got dtype "
                        f"{backends.Backend.dtype_name(target.dtype)}")
    if b.host_memory and _numel(target):
        xp = b.xp
        lo, hi = int(xp.min(target)), int(xp.max(target))
        if 0 <= lo and hi < n_classes:
            return  # the common case: two reductions, not five passes
        bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
        if bool(xp.any(bad)):
            raise ValueError(f"{where}: target class indices must be in [0, {n_classes}) "
                             f"(or ignore_index={ignore_index}); got values in [{lo}, {hi}]")


def _flat_targets(where: str, b: backends.Backend, target: Array, m: int, c: int, weight: Array | None,
                  ignore_index: int, input_shape: tuple[int, ...]) -> Array:
    """The class-index targets as ``(m,)``, checked against ``m`` rows of ``c`` classes (and ``weight``)."""
    t = b.xp.reshape(target, (-1,))
    if t.shape[0] != m:
        raise ValueError(f"{where}: target has {t.shape[0]} elements but input has {m} rows "
                         f"(input {input_shape}, target {tuple(target.shape)})")
    _check_targets(where, b, t, c, ignore_index)
    if weight is not None and tuple(weight.shape) != (c,):
        raise ValueError(f"{where}: weight must have one entry per class, shape ({c},), got {tuple(weight.shape)}")
    return t


def _class_index_loss(where: str, logp: Array, probs: Array | None, target: Array, weight: Array | None,
                      ignore_index: int, reduction: str, label_smoothing: float,
                      input_shape: tuple[int, ...], moved_shape: tuple[int, ...]) -> tuple[Array, Callable]:
    """Shared core of cross_entropy (probs given) and nll_loss (probs None, logp is the input)."""
    b = backends.backend_of(logp)
    xp = b.xp
    m, c = logp.shape
    t = _flat_targets(where, b, target, m, c, weight, ignore_index, input_shape)
    valid = t != ignore_index
    t_safe = xp.where(valid, t, xp.zeros_like(t))
    classes = xp.arange(c, dtype=t.dtype, device=b.device_of(t))
    hit = t_safe[:, None] == classes[None, :]
    onehot = xp.astype(hit, logp.dtype)
    validf = xp.astype(valid, logp.dtype)
    if weight is not None:
        w_t = xp.take(weight, t_safe, axis=0) * validf
        w_row = weight[None, :]
    else:
        w_t = validf
        w_row = None
    eps = float(label_smoothing)
    # loss_i = -sum_c a_ic logp_ic with a = (1 - eps) w_t onehot + eps / C * w_c (valid rows only)
    a = ((1.0 - eps) * w_t)[:, None] * onehot
    # log-probabilities are selected with where(), not multiplied by 0: a masked logit is -inf and 0 * -inf is NaN
    per = -((1.0 - eps) * w_t) * xp.sum(xp.where(hit & valid[:, None], logp, 0.0), axis=1)
    if eps > 0.0:
        smooth = validf[:, None] * (w_row if w_row is not None else 1.0) * (eps / c)
        a = a + smooth
        per = per - (eps / c) * xp.sum(xp.where(valid[:, None], logp * (w_row if w_row is not None else 1.0), 0.0),
                                       axis=1)
    if reduction == "mean":
        denom = xp.sum(w_t)
        loss = xp.asarray(xp.sum(per) / denom)
    elif reduction == "sum":
        loss = xp.asarray(xp.sum(per))
    elif reduction == "none":
        loss = xp.reshape(per, input_shape[:1] + input_shape[2:] if len(input_shape) > 1 else ())
    else:
        raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        if reduction == "mean":
            scale = dloss / denom
        elif reduction == "sum":
            scale = dloss
        else:
            scale = xp.reshape(dloss, (-1,))[:, None]
        if probs is None:
            g = -a * scale
        else:
            g = (probs * xp.sum(a, axis=1, keepdims=True) - a) * scale
        return _classes_back(xp, g, input_shape, moved_shape), ()

    return loss, backward


def _fused_class_index_loss(where: str, b: backends.Backend, z: Array, target: Array, weight: Array | None,
                            ignore_index: int, reduction: str, label_smoothing: float,
                            input_shape: tuple[int, ...], moved_shape: tuple[int, ...]) -> tuple[Array, Callable]:
    """Device-shaped cross-entropy of class indices: the adapter's fused kernels, one forward and one
    backward launch instead of about thirty elementwise operations (same checks, same results)."""
    xp = b.xp
    m, c = z.shape
    t = _flat_targets(where, b, target, m, c, weight, ignore_index, input_shape)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    kw = dict(ignore_index=int(ignore_index), label_smoothing=label_smoothing, reduction=reduction)
    loss, saved = b.cross_entropy_forward(z, t, weight, **kw)
    if reduction == "none":
        loss = xp.reshape(loss, input_shape[:1] + input_shape[2:] if len(input_shape) > 1 else ())

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        grad = xp.reshape(dloss, (-1,)) if reduction == "none" else dloss
        g = b.cross_entropy_backward(grad, saved, t, weight, **kw)
        return _classes_back(xp, g, input_shape, moved_shape), ()

    return loss, backward


def cross_entropy_forward(input: Array, target: Array, weight: Array | None = None, ignore_index: int = -100,
                          reduction: str = "mean", label_smoothing: float = 0.0) -> tuple[Array, Callable]:
    """Cross-entropy of logits ``input`` (``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``).

    ``target`` holds class indices (integers, shape ``(N,)`` or ``(N, d1, ...)``) or class
    probabilities (floats, the shape of ``input``). ``weight`` rescales classes; entries equal to
    ``ignore_index`` contribute nothing; ``label_smoothing`` mixes the target with the uniform
    distribution. The mean divides by the summed weights of the counted targets, as PyTorch.
    """
    where = "cross_entropy"
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing}")
    b = backends.backend_of(input)
    xp = b.xp
    if input.ndim == 0:
        raise ValueError(f"{where}: input must have a class dimension, got a scalar")
    z, moved_shape = _classes_last(xp, input)
    input_shape = tuple(input.shape)
    if z.shape[1] == 0:
        raise ValueError(f"{where}: input must have at least one class, got shape {input_shape}")
    target_float = b.isdtype(target.dtype, "real floating")
    if not target_float and input.ndim == 1 and target.ndim == 0:
        target = xp.reshape(target, (1,))
    if not target_float and (device_shaped(b) or b.fast_cross_entropy()):
        return _fused_class_index_loss(where, b, z, target, weight, ignore_index, reduction,
                                       float(label_smoothing), input_shape, moved_shape)
    logp, probs = _log_softmax_rows(xp, z)
    if not target_float:
        return _class_index_loss(where, logp, probs, target, weight, ignore_index, reduction,
                                 float(label_smoothing), input_shape, moved_shape)
    if tuple(target.shape) != input_shape:
        raise ValueError(f"{where}: probability targets must have the input's shape {input_shape}, "
                         f"got {tuple(target.shape)}")
    t, _ = _classes_last(xp, target)
    c = z.shape[1]
    eps = float(label_smoothing)
    a = t * (1.0 - eps) + eps / c if eps > 0.0 else t
    if weight is not None:
        a = a * weight[None, :]
    per = -xp.sum(a * logp, axis=1)
    m = per.shape[0]
    if reduction == "none":
        loss = xp.reshape(per, input_shape[:1] + input_shape[2:]) if input.ndim > 1 else per[0]
    else:
        loss = reduce_loss(xp, per, reduction, where)

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        if reduction == "mean":
            scale = dloss / m
        elif reduction == "sum":
            scale = dloss
        else:
            scale = xp.reshape(dloss, (-1,))[:, None]
        g = (probs * xp.sum(a, axis=1, keepdims=True) - a) * scale
        return _classes_back(xp, g, input_shape, moved_shape), ()

    return loss, backward


def nll_loss_forward(input: Array, target: Array, weight: Array | None = None, ignore_index: int = -100,
                     reduction: str = "mean") -> tuple[Array, Callable]:
    """Negative log-likelihood of log-probabilities ``input`` at the class indices ``target``."""
    xp = backends.backend_of(input).xp
    if input.ndim == 0:
        raise ValueError("nll_loss: input must have a class dimension, got a scalar")
    logp, moved_shape = _classes_last(xp, input)
    if input.ndim == 1 and target.ndim == 0:
        target = xp.reshape(target, (1,))
    return _class_index_loss("nll_loss", logp, None, target, weight, ignore_index, reduction, 0.0,
                             tuple(input.shape), moved_shape)


def binary_cross_entropy_forward(input: Array, target: Array, weight: Array | None = None,
                                 reduction: str = "mean") -> tuple[Array, Callable]:
    """Binary cross-entropy of probabilities ``input`` in [0, 1]; logs are clamped at -100 as PyTorch.

    Prefer :func:`binary_cross_entropy_with_logits`, which is stable for any logit.
    """
    b = backends.backend_of(input)
    xp = b.xp

    def clamped_log(v: Array) -> Array:  # max(log v, -100) without evaluating log(0) (no RuntimeWarning)
        pos = v > 0.0
        return xp.where(pos, xp.maximum(xp.log(xp.where(pos, v, 1.0)), -100.0), -100.0)

    # As PyTorch, probabilities outside [0, 1] (NaN included) are refused: the clamped logs would
    # otherwise turn them into a finite, even negative, loss and training would go on silently.
    outside = ~((input >= 0.0) & (input <= 1.0))
    if b.host_memory:
        if _numel(input) and bool(xp.any(outside)):
            raise ValueError("binary_cross_entropy: all elements of input must be probabilities in [0, 1] "
                             "(NaN is not); use BCEWithLogitsLoss on logits")
        outside = None
    log_p = clamped_log(input)
    log_1mp = clamped_log(1.0 - input)
    per = -(target * log_p + (1.0 - target) * log_1mp)
    if outside is not None:  # on a device, no synchronising check: a NaN loss that fit() reports
        per = xp.where(outside, xp.nan, per)
    if weight is not None:
        per = per * weight
    loss = reduce_loss(xp, per, reduction, "binary_cross_entropy")

    def grad() -> Array:
        g = (input - target) / xp.maximum(input * (1.0 - input), 1e-12)
        return g * weight if weight is not None else g

    return loss, _reduced_backward(xp, grad, _numel(per), reduction)


def binary_cross_entropy_with_logits_forward(input: Array, target: Array, weight: Array | None = None,
                                             reduction: str = "mean",
                                             pos_weight: Array | None = None) -> tuple[Array, Callable]:
    """Binary cross-entropy of ``sigmoid(input)``, computed from the logits without overflow.

    ``loss = (1 - t) x + (1 + (pw - 1) t) * (log(1 + exp(-|x|)) + max(-x, 0))``.
    """
    xp = backends.backend_of(input).xp
    x, t = input, target
    softplus_neg = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0.0)  # = log(1 + exp(-x))
    if pos_weight is not None:
        coef = 1.0 + (pos_weight - 1.0) * t
        per = (1.0 - t) * x + coef * softplus_neg
    else:
        per = (1.0 - t) * x + softplus_neg
    if weight is not None:
        per = per * weight
    loss = reduce_loss(xp, per, reduction, "binary_cross_entropy_with_logits")

    def grad() -> Array:
        e = xp.exp(-xp.abs(x))
        sig = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if pos_weight is not None:
            g = sig * (pos_weight * t + 1.0 - t) - pos_weight * t
        else:
            g = sig - t
        return g * weight if weight is not None else g

    return loss, _reduced_backward(xp, grad, _numel(per), reduction)


mse_loss = functional_form(mse_loss_forward)
l1_loss = functional_form(l1_loss_forward)
huber_loss = functional_form(huber_loss_forward)
smooth_l1_loss = functional_form(smooth_l1_loss_forward)
cross_entropy = functional_form(cross_entropy_forward)
nll_loss = functional_form(nll_loss_forward)
binary_cross_entropy = functional_form(binary_cross_entropy_forward)
binary_cross_entropy_with_logits = functional_form(binary_cross_entropy_with_logits_forward)
