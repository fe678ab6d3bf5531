"""Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..module import Parameter
from .optimizer import Optimizer, xp_of


class Adadelta(Optimizer):
    """Adadelta, as ``torch.optim.Adadelta`` (same arguments, defaults, state names and arithmetic).

    ``v = rho v + (1 - rho) g**2``; ``delta = sqrt(u + eps) / sqrt(v + eps) * g``;
    ``u = rho u + (1 - rho) delta**2``; ``p -= lr * delta``.

    >>> model = nnx.Linear(4, 2)
    >>> opt = nnx.optim.Adadelta(model.parameters())
    >>> opt.param_groups[0]["lr"], opt.param_groups[0]["rho"]
    (1.0, 0.9)
    """

    _state_keys = frozenset({"step", "square_avg", "acc_delta"})

    def __init__(self, params: Iterable[Parameter], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        xp = xp_of(p)
        lr, rho, eps, wd = group["lr"], group["rho"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["square_avg"] = xp.zeros_like(p.data)
            state["acc_delta"] = xp.zeros_like(p.data)
        state["step"] += 1.0
        if wd:
            grad = grad + wd * p.data
        v, u = state["square_avg"], state["acc_delta"]
        v *= rho
        v += (1.0 - rho) * (grad * grad)
        delta = xp.sqrt(u + eps) / xp.sqrt(v + eps) * grad
        u *= rho
        u += (1.0 - rho) * (delta * delta)
        state["square_avg"], state["acc_delta"] = v, u  # stored back for immutable arrays (JAX)
        p.data -= lr * delta
