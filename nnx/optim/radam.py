"""RAdam: Adam with a rectified adaptive learning rate (Liu et al., 2019), as ``torch.optim.RAdam``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..module import Parameter
from .optimizer import Optimizer, xp_of


class RAdam(Optimizer):
    """RAdam, as ``torch.optim.RAdam`` (same arguments, defaults, state names and arithmetic).

    ``m`` and ``v`` as in Adam; with ``rho_inf = 2 / (1 - beta2) - 1`` and
    ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)``: while ``rho_t <= 5`` the step is plain momentum
    ``p -= lr * m / (1 - beta1**t)``; afterwards it is rectified,
    ``p -= lr * m / (1 - beta1**t) * r_t * sqrt(1 - beta2**t) / (sqrt(v) + eps)`` with
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.
    ``decoupled_weight_decay=True`` applies ``p *= 1 - lr * weight_decay`` instead of L2 on the gradient.

    >>> model = nnx.Linear(4, 2)
    >>> opt = nnx.optim.RAdam(model.parameters(), lr=1e-3)
    >>> opt.param_groups[0]["betas"]
    (0.9, 0.999)
    """

    _state_keys = frozenset({"step", "exp_avg", "exp_avg_sq"})

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        xp = xp_of(p)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1.0
        step = state["step"]
        if wd:
            if group["decoupled_weight_decay"]:
                p.data *= 1.0 - lr * wd
            else:
                grad = grad + wd * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1.0 - beta1) * (grad - m)
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        state["exp_avg"], state["exp_avg_sq"] = m, v  # in place on mutable arrays; stored back for immutable ones (JAX)
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2 = 1.0 - beta2 ** step
        corrected = m / bias_correction1
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * step * (beta2 ** step) / bias_correction2
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
            adaptive_lr = math.sqrt(bias_correction2) / (xp.sqrt(v) + eps)
            p.data -= corrected * lr * adaptive_lr * rect
        else:
            p.data -= corrected * lr
