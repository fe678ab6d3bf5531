"""Stochastic gradient descent with ``torch.optim.SGD``'s update rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..module import Parameter
from .optimizer import Optimizer, multi_tensor_backend


class SGD(Optimizer):
    """Gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    ``buf = momentum * buf + (1 - dampening) * g``; ``p -= lr * (g + momentum * buf if nesterov else buf)``
    (the first step sets ``buf = g``), exactly as ``torch.optim.SGD``.

    >>> import nnx
    >>> w = nnx.Parameter(nnx.asarray([1.0, 2.0]))
    >>> w.grad = nnx.asarray([0.5, -0.5])
    >>> nnx.optim.SGD([w], lr=0.1).step()
    >>> nnx.to_numpy(w.data).tolist()
    [0.949999988079071, 2.049999952316284]
    """

    _state_keys = frozenset({"momentum_buffer"})

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update_group(self, group: dict, items: list[tuple[Parameter, Any, dict]]) -> bool:
        b = multi_tensor_backend(items, "sgd")
        if b is None or group["maximize"]:
            return False
        momentum = group["momentum"]
        kw = dict(lr=group["lr"], momentum=momentum, dampening=group["dampening"],
                  weight_decay=group["weight_decay"], nesterov=group["nesterov"])
        if not momentum:
            b.sgd_multi_step_([p.data for p, _, _ in items], [g for _, g, _ in items], None, **kw)
            return True
        fresh = [it[2].get("momentum_buffer") is None for it in items]  # decided before any buffer is made
        for first in (True, False):  # parameters without a momentum buffer yet take it from this step
            part = [it for it, f in zip(items, fresh, strict=True) if f == first]
            if not part:
                continue
            if first:
                for p, _, st in part:
                    st["momentum_buffer"] = b.xp.empty_like(p.data)
            b.sgd_multi_step_([p.data for p, _, _ in part], [g for _, g, _ in part],
                              [st["momentum_buffer"] for _, _, st in part], first=first, **kw)
        return True

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = grad * 1.0
            else:  # in place on mutable arrays; a new array (stored below) on immutable ones
                buf *= momentum
                buf += (1.0 - group["dampening"]) * grad
            state["momentum_buffer"] = buf
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad
