"""Adamax: Adam with the infinity norm (Kingma & Ba, 2015, section 7), as ``torch.optim.Adamax``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..module import Parameter
from .optimizer import Optimizer, xp_of


class Adamax(Optimizer):
    """Adamax, as ``torch.optim.Adamax`` (same arguments, defaults, state names and arithmetic).

    ``m = lerp(m, g, 1 - beta1)``; ``u = max(beta2 * u, |g| + eps)``; ``p -= lr / (1 - beta1**t) * m / u``.

    >>> model = nnx.Linear(4, 2)
    >>> opt = nnx.optim.Adamax(model.parameters(), lr=2e-3)
    >>> opt.param_groups[0]["betas"]
    (0.9, 0.999)
    """

    _state_keys = frozenset({"step", "exp_avg", "exp_inf"})

    def __init__(self, params: Iterable[Parameter], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        xp = xp_of(p)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_inf"] = xp.zeros_like(p.data)
        state["step"] += 1.0
        if wd:
            grad = grad + wd * p.data
        m = state["exp_avg"]
        m += (1.0 - beta1) * (grad - m)
        state["exp_avg"] = m  # in place on mutable arrays; stored back for immutable ones (JAX)
        state["exp_inf"] = u = xp.maximum(state["exp_inf"] * beta2, xp.abs(grad) + eps)
        clr = lr / (1.0 - beta1 ** state["step"])
        p.data -= clr * (m / u)
