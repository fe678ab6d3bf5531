"""NAdam: Adam with Nesterov momentum (Dozat, 2016), with ``torch.optim.NAdam``'s update rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..module import Parameter
from .optimizer import Optimizer, xp_of


class NAdam(Optimizer):
    """NAdam, as ``torch.optim.NAdam`` (same arguments, defaults, state names and arithmetic).

    Per step ``t``: ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``; ``mu_product *= mu_t``;
    ``m = lerp(m, g, 1 - beta1)``; ``v = beta2 * v + (1 - beta2) * g**2``;
    ``denom = sqrt(v / (1 - beta2**t)) + eps``;
    ``p -= lr * (1 - mu_t) / (1 - mu_product) * g / denom + lr * mu_{t+1} / (1 - mu_product * mu_{t+1}) * m / denom``.
    ``weight_decay`` is added to the gradient (L2), or with ``decoupled_weight_decay=True`` applied as
    ``p *= 1 - lr * weight_decay`` first (NAdamW).

    Note: ``torch.optim.NAdam`` keeps ``mu_product`` as a float32 scalar unless torch's default dtype
    is float64; nnx keeps it as a Python float (double precision).

    >>> model = nnx.Linear(4, 2)
    >>> opt = nnx.optim.NAdam(model.parameters(), lr=2e-3)
    >>> opt.param_groups[0]["momentum_decay"]
    0.004
    """

    _state_keys = frozenset({"step", "mu_product", "exp_avg", "exp_avg_sq"})

    def __init__(self, params: Iterable[Parameter], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        xp = xp_of(p)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["mu_product"] = 1.0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1.0
        step = state["step"]
        bias_correction2 = 1.0 - beta2 ** step
        if wd:
            if group["decoupled_weight_decay"]:
                p.data *= 1.0 - lr * wd
            else:
                grad = grad + wd * p.data
        momentum_decay = group["momentum_decay"]
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1.0) * momentum_decay)))
        state["mu_product"] *= mu
        mu_product = state["mu_product"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1.0 - beta1) * (grad - m)
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        state["exp_avg"], state["exp_avg_sq"] = m, v  # in place on mutable arrays; stored back for immutable ones (JAX)
        denom = xp.sqrt(v / bias_correction2) + eps
        p.data += (-lr * (1.0 - mu) / (1.0 - mu_product)) * (grad / denom)
        p.data += ((-lr * mu_next) / (1.0 - mu_product * mu_next)) * (m / denom)
