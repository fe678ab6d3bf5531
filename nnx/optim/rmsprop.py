"""RMSprop with ``torch.optim.RMSprop``'s update rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nnx_backends as backends

from ..module import Parameter
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum, as ``torch.optim.RMSprop``.

    ``v = alpha v + (1 - alpha) g**2``; ``p -= lr * g / (sqrt(v - gbar**2 if centered else v) + eps)``
    (through a momentum buffer when ``momentum > 0``).
    """

    _state_keys = frozenset({"step", "square_avg", "momentum_buffer", "grad_avg"})

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        xp = backends.backend_of(p.data).xp
        alpha, eps = group["alpha"], group["eps"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if "step" not in state:
            state["step"] = 0.0
            state["square_avg"] = xp.zeros_like(p.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1.0
        # in place on mutable arrays; new arrays on immutable ones, so every result is stored back
        sq = state["square_avg"]
        sq *= alpha
        sq += (1.0 - alpha) * (grad * grad)
        state["square_avg"] = sq
        if group["centered"]:
            ga = state["grad_avg"]
            ga *= alpha
            ga += (1.0 - alpha) * grad
            state["grad_avg"] = ga
            avg = xp.sqrt(sq - ga * ga) + eps
        else:
            avg = xp.sqrt(sq) + eps
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += grad / avg
            state["momentum_buffer"] = buf
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * (grad / avg)
