"""Stochastic gradient descent and the adaptive optimizers, with ``torch.optim``'s update rules."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import nnx_backends as backends

from ..module import Parameter
from .optimizer import Optimizer


def _check_lr(name: str, lr: float) -> None:
    if not isinstance(lr, (int, float)) or lr < 0:
        raise ValueError(f"{name}: lr must be a non-negative number, got {lr!r}")


class SGD(Optimizer):
    """Gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    ``buf = momentum * buf + (1 - dampening) * g``; ``p -= lr * (g + momentum * buf if nesterov else buf)``
    (the first step sets ``buf = g``), exactly as ``torch.optim.SGD``.
    """

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        _check_lr("SGD", lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad * 1.0
            else:
                buf *= momentum
                buf += (1.0 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba), with L2 ``weight_decay`` added to the gradient and optional AMSGrad.

    The update is fused per parameter by the backend (one pass, no temporaries on NumPy, one
    CUDA kernel on CuPy), with ``torch.optim.Adam``'s arithmetic.
    """

    _decoupled = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False) -> None:
        name = type(self).__name__
        _check_lr(name, lr)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{name}: betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"{name}: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

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
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        if not group["amsgrad"]:
            b.adam_update_(p.data, grad, state["exp_avg"], state["exp_avg_sq"], lr=lr, beta1=beta1, beta2=beta2,
                           eps=eps, bias_correction1=bc1, bias_correction2=bc2)
            return
        m, v, vmax = state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        state["max_exp_avg_sq"] = vmax = xp.maximum(vmax, v)
        denom = xp.sqrt(vmax) / math.sqrt(bc2) + eps
        p.data -= (lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay`` first."""

    _decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum, as ``torch.optim.RMSprop``."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        _check_lr("RMSprop", lr)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"RMSprop: alpha must be in [0, 1], got {alpha}")
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
        sq = state["square_avg"]
        sq *= alpha
        sq += (1.0 - alpha) * (grad * grad)
        if group["centered"]:
            ga = state["grad_avg"]
            ga *= alpha
            ga += (1.0 - alpha) * grad
            avg = xp.sqrt(sq - ga * ga) + eps
        else:
            avg = xp.sqrt(sq) + eps
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += grad / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * (grad / avg)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.) with ``lr_decay`` and ``initial_accumulator_value``, as ``torch.optim.Adagrad``."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
        _check_lr("Adagrad", lr)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        xp = backends.backend_of(p.data).xp
        if group["maximize"]:
            grad = -grad
        if "step" not in state:
            state["step"] = 0.0
            state["sum"] = xp.full(tuple(p.shape), float(group["initial_accumulator_value"]), dtype=p.dtype,
                                   device=p.data.device)
        state["step"] += 1.0
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        clr = group["lr"] / (1.0 + (state["step"] - 1.0) * group["lr_decay"])
        s = state["sum"]
        s += grad * grad
        p.data -= clr * (grad / (xp.sqrt(s) + group["eps"]))
