"""Adagrad with ``torch.optim.Adagrad``'s update rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nnx_backends as backends

from ..module import Parameter
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.) with ``lr_decay`` and ``initial_accumulator_value``, as ``torch.optim.Adagrad``.

    ``s += g**2``; ``p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)``.
    """

    _state_keys = frozenset({"step", "sum"})

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        b = backends.backend_of(p.data)
        xp = b.xp
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["sum"] = xp.full(tuple(p.shape), float(group["initial_accumulator_value"]), dtype=p.dtype,
                                   device=b.device_of(p.data))
        state["step"] += 1.0
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        clr = group["lr"] / (1.0 + (state["step"] - 1.0) * group["lr_decay"])
        s = state["sum"]
        s += grad * grad
        state["sum"] = s
        p.data -= clr * (grad / (xp.sqrt(s) + group["eps"]))
