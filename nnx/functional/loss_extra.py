"""More losses with PyTorch's semantics: KL divergence, Poisson and Gaussian negative log-likelihood,
and the embedding/ranking losses (cosine embedding, margin ranking, triplet margin).

``*_forward(...)`` returns ``(loss, backward)``; ``backward(dloss, input_grad=True)`` returns
``(dinput, ())`` for losses of one prediction, and ``((d_first, d_second, ...), ())`` -- a tuple with
one gradient per differentiable input, in call order -- for the multi-input losses
(:func:`cosine_embedding_loss_forward`, :func:`margin_ranking_loss_forward`,
:func:`triplet_margin_loss_forward`, :func:`gaussian_nll_loss_forward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._util import functional_form, namespace, reduce_loss

__all__ = [
    "cosine_embedding_loss", "cosine_embedding_loss_forward", "gaussian_nll_loss", "gaussian_nll_loss_forward",
    "kl_div", "kl_div_forward", "margin_ranking_loss", "margin_ranking_loss_forward", "poisson_nll_loss",
    "poisson_nll_loss_forward", "triplet_margin_loss", "triplet_margin_loss_forward",
]

Array = Any


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _scale(dloss: Array, reduction: str, n: int) -> Array:
    """d loss / d per-element loss, broadcastable to the per-element shape."""
    return dloss / n if reduction == "mean" else dloss


def _same_shape(where: str, **arrays: Array) -> None:
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: inputs must have the same shape, got "
                         + ", ".join(f"{k} {s}" for k, s in shapes.items()))


def kl_div_forward(input: Array, target: Array, reduction: str = "mean",
                   log_target: bool = False) -> tuple[Array, Callable]:
    """Kullback-Leibler divergence of ``target`` from ``input`` (log-probabilities), as ``F.kl_div``.

    Per element ``target * (log(target) - input)`` (0 where target is 0), or with ``log_target=True``
    ``exp(target) * (target - input)``. ``reduction="batchmean"`` divides the sum by the batch size
    ``input.shape[0]`` (the mathematically correct KL); ``"mean"`` divides by the number of elements
    as PyTorch does. Gradient with respect to ``input`` only.
    """
    xp = namespace(input)
    _same_shape("kl_div", input=input, target=target)
    if log_target:
        p = xp.exp(target)
        per = p * (target - input)
    else:
        p = target
        positive = target > 0
        per = xp.where(positive, target * xp.log(xp.where(positive, target, 1.0)), 0.0) - target * input
    if reduction == "batchmean":
        batch = input.shape[0] if input.ndim > 0 else 1
        loss, n, red = xp.sum(per) / batch, batch, "mean"
    else:
        loss, n, red = reduce_loss(xp, per, reduction, "kl_div"), _numel(tuple(per.shape)), reduction

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return -p * _scale(dloss, red, n), ()

    return loss, backward


def poisson_nll_loss_forward(input: Array, target: Array, log_input: bool = True, full: bool = False,
                             eps: float = 1e-8, reduction: str = "mean") -> tuple[Array, Callable]:
    """Poisson negative log-likelihood, as ``F.poisson_nll_loss``.

    ``exp(input) - target * input`` with ``log_input=True``, else ``input - target * log(input + eps)``;
    ``full=True`` adds Stirling's term ``t log t - t + 0.5 log(2 pi t)`` where ``target > 1``.
    """
    xp = namespace(input)
    _same_shape("poisson_nll_loss", input=input, target=target)
    if log_input:
        e = xp.exp(input)
        per = e - target * input
    else:
        per = input - target * xp.log(input + eps)
    if full:
        big = target > 1
        safe = xp.where(big, target, 1.0)
        per = per + xp.where(big, safe * xp.log(safe) - safe + 0.5 * xp.log(2.0 * math.pi * safe), 0.0)
    loss = reduce_loss(xp, per, reduction, "poisson_nll_loss")
    n = _numel(tuple(per.shape))

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = e - target if log_input else 1.0 - target / (input + eps)
        return g * _scale(dloss, reduction, n), ()

    return loss, backward


def _gaussian_var(xp: Any, input: Array, var: Array) -> tuple[Array, bool, bool]:
    """``var`` shaped for broadcasting against ``input`` (PyTorch's three accepted forms)."""
    ishape, vshape = tuple(input.shape), tuple(var.shape)
    if vshape == ishape:
        return var, False, False
    if ishape[:-1] == vshape:
        return xp.expand_dims(var, axis=-1), True, False
    if ishape[:-1] == vshape[:-1] and vshape[-1:] == (1,):
        return var, False, True
    raise ValueError(f"gaussian_nll_loss: var must have the input's shape {ishape}, that shape with the last "
                     f"dimension 1, or without it; got {vshape}")


def gaussian_nll_loss_forward(input: Array, target: Array, var: Array, full: bool = False, eps: float = 1e-6,
                              reduction: str = "mean") -> tuple[Array, Callable]:
    """Gaussian negative log-likelihood ``0.5 (log(var) + (input - target)^2 / var)`` (+ ``0.5 log 2 pi``
    with ``full``), as ``F.gaussian_nll_loss``. ``var`` is clamped to at least ``eps`` (the clamp passes
    gradients through, as in PyTorch). Unlike PyTorch, a negative ``var`` is not checked for (that check
    would read the array back to the host on every step); it is clamped like any value below ``eps``.

    Backward returns ``((d_input, d_target, d_var), ())``.
    """
    xp = namespace(input)
    _same_shape("gaussian_nll_loss", input=input, target=target)
    v, unsqueezed, last_one = _gaussian_var(xp, input, var)
    vc = xp.maximum(v, eps)
    diff = input - target
    per = 0.5 * (xp.log(vc) + diff * diff / vc)
    if full:
        per = per + 0.5 * math.log(2.0 * math.pi)
    loss = reduce_loss(xp, per, reduction, "gaussian_nll_loss")
    n = _numel(tuple(per.shape))

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        s = _scale(dloss, reduction, n)
        dinput = diff / vc * s
        dvar = 0.5 * (1.0 / vc - diff * diff / (vc * vc)) * s
        if last_one:
            dvar = xp.sum(dvar, axis=-1, keepdims=True)
        elif unsqueezed:
            dvar = xp.sum(dvar, axis=-1)
        return (dinput, -dinput, dvar), ()

    return loss, backward


def margin_ranking_loss_forward(input1: Array, input2: Array, target: Array, margin: float = 0.0,
                                reduction: str = "mean") -> tuple[Array, Callable]:
    """``max(0, -target * (input1 - input2) + margin)`` with ``target`` in {1, -1}, as
    ``F.margin_ranking_loss``. Backward returns ``((d_input1, d_input2), ())``.
    """
    xp = namespace(input1)
    _same_shape("margin_ranking_loss", input1=input1, input2=input2, target=target)
    z = -target * (input1 - input2) + margin
    active = z > 0
    loss = reduce_loss(xp, xp.where(active, z, 0.0), reduction, "margin_ranking_loss")
    n = _numel(tuple(z.shape))

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        g = xp.where(active, -target, 0.0) * _scale(dloss, reduction, n)
        return (g, -g), ()

    return loss, backward


def cosine_embedding_loss_forward(input1: Array, input2: Array, target: Array, margin: float = 0.0,
                                  reduction: str = "mean") -> tuple[Array, Callable]:
    """``1 - cos(x1, x2)`` where target is 1, ``max(0, cos(x1, x2) - margin)`` where it is -1, as
    ``F.cosine_embedding_loss`` (cosine over the last dimension, 1e-12 added to each squared norm).

    Shapes: inputs ``(N, D)`` or ``(D,)``, target ``(N,)`` or ``()``. Backward returns
    ``((d_input1, d_input2), ())``.
    """
    xp = namespace(input1)
    _same_shape("cosine_embedding_loss", input1=input1, input2=input2)
    if input1.ndim not in (1, 2) or tuple(target.shape) != tuple(input1.shape[:-1]):
        raise ValueError(f"cosine_embedding_loss: expected inputs (N, D) or (D,) and target (N,) or (); got "
                         f"inputs {tuple(input1.shape)} and target {tuple(target.shape)}")
    prod = xp.sum(input1 * input2, axis=-1)
    m1 = xp.sum(input1 * input1, axis=-1) + 1e-12
    m2 = xp.sum(input2 * input2, axis=-1) + 1e-12
    denom = xp.sqrt(m1 * m2)
    cos = prod / denom
    pos, neg = target == 1, target == -1
    per = xp.where(pos, 1.0 - cos, 0.0) + xp.where(neg & (cos - margin > 0), cos - margin, 0.0)
    loss = reduce_loss(xp, per, reduction, "cosine_embedding_loss")
    n = _numel(tuple(per.shape))

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        hinge = xp.astype(neg & (cos - margin > 0), cos.dtype) - xp.astype(pos, cos.dtype)
        dcos = hinge * _scale(dloss, reduction, n)
        dcos, c = xp.expand_dims(dcos, axis=-1), xp.expand_dims(cos, axis=-1)
        d = xp.expand_dims(denom, axis=-1)
        dx1 = dcos * (input2 / d - c * input1 / xp.expand_dims(m1, axis=-1))
        dx2 = dcos * (input1 / d - c * input2 / xp.expand_dims(m2, axis=-1))
        return (dx1, dx2), ()

    return loss, backward


def _pairwise_distance(xp: Any, a: Array, b: Array, p: float, eps: float) -> tuple[Array, Callable]:
    """``||a - b + eps||_p`` over the last dimension and its backward (d/da; d/db is the negative)."""
    v = a - b + eps
    av = xp.abs(v)
    if p == 1.0:
        dist = xp.sum(av, axis=-1)
    elif p == 2.0:
        dist = xp.sqrt(xp.sum(v * v, axis=-1))
    else:
        dist = xp.sum(av ** p, axis=-1) ** (1.0 / p)

    def grad(ddist: Array) -> Array:
        dd = xp.expand_dims(ddist, axis=-1)
        if p == 1.0:
            return dd * xp.sign(v)
        dn = xp.expand_dims(dist, axis=-1)
        safe = xp.where(dn == 0, 1.0, dn)
        if p == 2.0:
            return xp.where(dn == 0, 0.0, dd * v / safe)
        return xp.where(dn == 0, 0.0, dd * xp.sign(v) * av ** (p - 1.0) / safe ** (p - 1.0))

    return dist, grad


def triplet_margin_loss_forward(anchor: Array, positive: Array, negative: Array, margin: float = 1.0,
                                p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                                reduction: str = "mean") -> tuple[Array, Callable]:
    """``max(d(a, p) - d(a, n) + margin, 0)`` with ``d(x, y) = ||x - y + eps||_p``, as
    ``F.triplet_margin_loss`` (``swap=True`` uses ``min(d(a, n), d(p, n))``).

    Shapes: ``(N, D)`` or ``(D,)`` for all three. Backward returns ``((d_anchor, d_positive, d_negative), ())``.
    """
    xp = namespace(anchor)
    _same_shape("triplet_margin_loss", anchor=anchor, positive=positive, negative=negative)
    if anchor.ndim not in (1, 2):
        raise ValueError(f"triplet_margin_loss: expected inputs (N, D) or (D,), got {tuple(anchor.shape)}")
    if p <= 0:
        raise ValueError(f"triplet_margin_loss: p must be positive, got {p}")
    p = float(p)
    d_ap, g_ap = _pairwise_distance(xp, anchor, positive, p, eps)
    d_an, g_an = _pairwise_distance(xp, anchor, negative, p, eps)
    use_swap = None
    if swap:
        d_pn, g_pn = _pairwise_distance(xp, positive, negative, p, eps)
        use_swap = d_pn < d_an
        d_an = xp.where(use_swap, d_pn, d_an)
    z = d_ap - d_an + margin
    active = z > 0
    loss = reduce_loss(xp, xp.where(active, z, 0.0), reduction, "triplet_margin_loss")
    n = _numel(tuple(z.shape))

    def backward(dloss: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dz = xp.astype(active, z.dtype) * _scale(dloss, reduction, n)
        ga = g_ap(dz)
        da, dp = ga, -ga
        if use_swap is None:
            gn = g_an(-dz)
            return (da + gn, dp, -gn), ()
        gn = g_an(xp.where(use_swap, 0.0, -dz))
        gs = g_pn(xp.where(use_swap, -dz, 0.0))
        return (da + gn, dp + gs, -gn - gs), ()

    return loss, backward


kl_div = functional_form(kl_div_forward)
poisson_nll_loss = functional_form(poisson_nll_loss_forward)
gaussian_nll_loss = functional_form(gaussian_nll_loss_forward)
margin_ranking_loss = functional_form(margin_ranking_loss_forward)
cosine_embedding_loss = functional_form(cosine_embedding_loss_forward)
triplet_margin_loss = functional_form(triplet_margin_loss_forward)
