"""Gradient clipping, by global norm and by value (``torch.nn.utils`` semantics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nnx_backends as backends

from ..module import Parameter


def clip_grad_norm_(parameters: Iterable[Parameter] | Parameter, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Any:
    """Scale all gradients together so that their global ``norm_type`` norm is at most ``max_norm``.

    Returns the total norm before clipping as a 0-d array on the device. Nothing is read back to
    the host (no device synchronisation) unless ``error_if_nonfinite`` is set.
    """
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = backends.backend_of(grads[0]).xp
    norm_type = float(norm_type)
    if norm_type == float("inf"):
        total = xp.max(xp.stack([xp.max(xp.abs(g)) for g in grads]))
    else:
        total = xp.sum(xp.stack([xp.sum(xp.abs(g) ** norm_type) for g in grads])) ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total gradient norm is {float(total)}; "
                           "set error_if_nonfinite=False to clip anyway")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        if p.grad is not None:
            p.grad = p.grad * xp.astype(coef, p.grad.dtype)
    return total


def clip_grad_value_(parameters: Iterable[Parameter] | Parameter, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]``."""
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    v = float(clip_value)
    for p in params:
        if p.grad is not None:
            xp = backends.backend_of(p.grad).xp
            p.grad = xp.clip(p.grad, -v, v)
