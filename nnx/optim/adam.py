"""Adam and AdamW with ``torch.optim.Adam``'s arithmetic, fused per parameter by the backend."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nnx_backends as backends

from ..module import Parameter
from .optimizer import Optimizer, multi_tensor_backend


class Adam(Optimizer):
    """Adam (Kingma & Ba), with L2 ``weight_decay`` added to the gradient and optional AMSGrad.

    The update is one adapter call per parameter (``Backend.adam_update_``: one pass without
    temporaries on NumPy, one CUDA kernel on CuPy), AMSGrad included, with ``torch.optim.Adam``'s
    arithmetic. The adapter returns the updated arrays, which are stored, so immutable arrays
    (JAX) update as well as mutable ones.
    """

    _decoupled = False

    _state_keys = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _update_group(self, group: dict, items: list[tuple[Parameter, Any, dict]]) -> bool:
        b = multi_tensor_backend(items, "adam")
        if b is None or group["maximize"]:
            return False
        xp = b.xp
        amsgrad = group["amsgrad"]
        for p, _, st in items:
            if "step" not in st:
                st["step"] = 0.0
                st["exp_avg"] = xp.zeros_like(p.data)
                st["exp_avg_sq"] = xp.zeros_like(p.data)
                if amsgrad:
                    st["max_exp_avg_sq"] = xp.zeros_like(p.data)
        parts: dict[float, list] = {}  # one launch per distinct step count (partitioned before any update)
        for it in items:
            parts.setdefault(it[2]["step"], []).append(it)
        for step, part in parts.items():
            b.adam_multi_step_(
                [p.data for p, _, _ in part], [g for _, g, _ in part], [st["exp_avg"] for _, _, st in part],
                [st["exp_avg_sq"] for _, _, st in part],
                [st["max_exp_avg_sq"] for _, _, st in part] if amsgrad else None,
                lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"], step=step + 1.0,
                weight_decay=group["weight_decay"], decoupled=self._decoupled)
            for _, _, st in part:
                st["step"] = step + 1.0
        return True

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        b = backends.backend_of(p.data)
        xp = b.xp
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        if wd:
            if self._decoupled:
                p.data *= 1.0 - lr * wd
            else:
                grad = grad + wd * p.data
        state["step"] += 1.0
        step = state["step"]
        p.data, state["exp_avg"], state["exp_avg_sq"], vmax = b.adam_update_(
            p.data, grad, state["exp_avg"], state["exp_avg_sq"], lr=lr, beta1=beta1, beta2=beta2, eps=eps,
            bias_correction1=1.0 - beta1 ** step, bias_correction2=1.0 - beta2 ** step,
            max_exp_avg_sq=state.get("max_exp_avg_sq"))
        if vmax is not None:
            state["max_exp_avg_sq"] = vmax


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay`` first."""

    _decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
