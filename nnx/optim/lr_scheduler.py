"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names and semantics.

Each scheduler computes the rate in closed form from its step count (``last_epoch``), so that
``state_dict``/``load_state_dict`` restore a schedule exactly. Call ``scheduler.step()`` once per
epoch (or per batch, for warm-up), after ``optimizer.step()``.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ._checks import check_schedule
from .optimizer import Optimizer


class LRScheduler:
    """Base class: subclasses implement ``lr_at(epoch) -> list of rates, one per parameter group``."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an nnx optimizer, got {type(optimizer).__name__}")
        check_schedule(type(self).__name__, {**self.__dict__, "last_epoch": last_epoch})
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        _count_optimizer_steps(optimizer)
        self.step()

    def lr_at(self, epoch: int) -> list[float]:
        """The rate of every parameter group at step ``epoch`` (closed form)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one step and set each group's ``lr``."""
        _warn_if_optimizer_not_stepped(self)
        self.last_epoch += 1
        self._set(self.lr_at(self.last_epoch))

    def _set(self, lrs: list[float]) -> None:
        for g, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            g["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self) -> list[float]:
        """The rates set by the most recent ``step``."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (everything but the optimizer and functions)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)
                and not (isinstance(v, (list, tuple)) and any(callable(f) for f in v))}  # no functions

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; if the state does not fit (another scheduler's, a ``gamma`` of -3,
        a ``last_epoch`` of NaN ...), nothing changes."""
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__name__}.load_state_dict: expected a dict, got {type(state).__name__}")
        check_schedule(f"{type(self).__name__}.load_state_dict", state)
        saved = dict(self.__dict__)
        try:
            self.__dict__.update({k: v for k, v in state.items() if k != "optimizer"})
            self._set(self.lr_at(self.last_epoch))
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise


_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. Call them in the opposite order: "
    "`optimizer.step()` before `lr_scheduler.step()`. Otherwise the first value of the learning rate schedule "
    "is skipped.")


def _count_optimizer_steps(optimizer: Optimizer) -> None:
    """Wrap ``optimizer.step`` (once per optimizer instance) to record that it has been called."""
    if getattr(optimizer, "_nnx_step_counted", False):
        return
    original = optimizer.step

    def step(*args: Any, **kwargs: Any) -> Any:
        optimizer._opt_called = True  # type: ignore[attr-defined]
        return original(*args, **kwargs)

    step.__doc__ = original.__doc__
    optimizer.step = step  # type: ignore[method-assign]
    optimizer._nnx_step_counted = True  # type: ignore[attr-defined]


def _warn_if_optimizer_not_stepped(scheduler: Any) -> None:
    """PyTorch's warning: the first ``scheduler.step()`` (after construction) came before ``optimizer.step()``."""
    count = scheduler.__dict__.get("_step_count", 0) + 1
    scheduler._step_count = count
    if count == 2 and not getattr(scheduler.optimizer, "_opt_called", False):
        warnings.warn(_ORDER_WARNING, UserWarning, stacklevel=3)


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``; ``lr_lambda`` may be a list, one function per parameter group."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        n = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)) and len(lr_lambda) != n:
            raise ValueError(f"LambdaLR: expected {n} lr_lambdas, got {len(lr_lambda)}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        if isinstance(self.lr_lambda, (list, tuple)):
            return [b * f(epoch) for b, f in zip(self.base_lrs, self.lr_lambda, strict=True)]
        return [b * self.lr_lambda(epoch) for b in self.base_lrs]


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        return [b * self.gamma ** (epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each epoch in ``milestones``."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        return [b * self.gamma ** bisect.bisect_right(self.milestones, epoch) for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        return [b * self.gamma ** epoch for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (SGDR without restarts)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        c = (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0
        return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warm-up: scale the rate from ``start_factor`` to ``end_factor`` over ``total_iters`` steps."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        if not (0 < start_factor <= 1 and 0 <= end_factor <= 1):
            raise ValueError(f"LinearLR: factors must be in (0, 1] and [0, 1], got {start_factor}, {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        t = min(epoch, self.total_iters) / self.total_iters if self.total_iters > 0 else 1.0
        f = self.start_factor + (self.end_factor - self.start_factor) * t
        return [b * f for b in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at ``milestones`` (warm-up then decay)."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int],
                 last_epoch: int = -1) -> None:
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: expected {len(schedulers) - 1} milestones, got {len(milestones)}")
        self.schedulers, self.milestones = list(schedulers), list(milestones)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        i = bisect.bisect_right(self.milestones, epoch)
        offset = self.milestones[i - 1] if i > 0 else 0
        return self.schedulers[i].lr_at(epoch - offset)

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state, with the state of each child scheduler."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedulers")}
        out["schedulers"] = [s.state_dict() for s in self.schedulers]
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        children = state.pop("schedulers", [])
        if len(children) != len(self.schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: the state has {len(children)} child schedulers, this one "
                             f"{len(self.schedulers)}")
        for s, st in zip(self.schedulers, children, strict=True):
            check_schedule(f"SequentialLR.load_state_dict ({type(s).__name__})", st)
        check_schedule("SequentialLR.load_state_dict", state)
        saved = [dict(s.__dict__) for s in self.schedulers]
        try:
            for s, st in zip(self.schedulers, children, strict=True):
                s.__dict__.update(st)
            super().load_state_dict(state)
        except BaseException:
            for s, d in zip(self.schedulers, saved, strict=True):
                s.__dict__.clear()
                s.__dict__.update(d)
            raise


class ReduceLROnPlateau:
    """Divide the rate by ``1 / factor`` when a metric stops improving for ``patience`` epochs.

    ``step(metric)`` takes the monitored value (a Python number or a 0-d array, read once per
    call). Arguments and behaviour as ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0.0, eps: float = 1e-8) -> None:
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1, got {factor}")
        check_schedule("ReduceLROnPlateau", dict(factor=factor, patience=patience, threshold=threshold,
                                                 cooldown=cooldown, eps=eps))
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min'/'max' and threshold_mode 'rel'/'abs', "
                             f"got {mode!r}, {threshold_mode!r}")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode, self.cooldown, self.eps = threshold, threshold_mode, cooldown, eps
        n = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n
        if len(self.min_lrs) != n:
            raise ValueError(f"ReduceLROnPlateau: expected {n} min_lrs, got {len(self.min_lrs)}")
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def _better(self, a: float) -> bool:
        if self.mode == "min":
            ref = self.best * (1.0 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return a < ref
        ref = self.best * (1.0 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return a > ref

    def step(self, metrics: Any) -> None:
        """Record this epoch's ``metrics`` value; lower the rates after ``patience`` bad epochs."""
        current = float(metrics)
        self.last_epoch += 1
        if self._better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for g, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
                new = max(g["lr"] * self.factor, min_lr)
                if g["lr"] - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The rates after the most recent ``step``."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (everything but the optimizer)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict` (checked first: nothing changes on refusal)."""
        if not isinstance(state, dict):
            raise TypeError(f"ReduceLROnPlateau.load_state_dict: expected a dict, got {type(state).__name__}")
        check_schedule("ReduceLROnPlateau.load_state_dict", state)
        if "factor" in state and not state["factor"] < 1.0:
            raise ValueError(f"ReduceLROnPlateau.load_state_dict: factor must be < 1, got {state['factor']!r}")
        self.__dict__.update({k: v for k, v in state.items() if k != "optimizer"})


# ----------------------------------------------------------------------------- more schedules (breadth)
def _per_group(name: str, optimizer: Optimizer, value: float | Sequence[float], what: str) -> list[float]:
    n = len(optimizer.param_groups)
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name}: expected {n} values of {what} (one per parameter group), got {len(values)}")
    return [float(v) for v in values]


def _set_momentum(optimizer: Optimizer, momentums: list[float]) -> None:
    """Set each group's momentum (``betas[0]`` for Adam-like optimizers), as PyTorch's cyclic schedules do."""
    for g, m in zip(optimizer.param_groups, momentums, strict=True):
        if "betas" in g:
            g["betas"] = (m, *tuple(g["betas"])[1:])
        else:
            g["momentum"] = m


def _check_momentum_support(name: str, optimizer: Optimizer) -> None:
    if isinstance(optimizer, Optimizer) and "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(f"{name}: optimizer must support momentum or beta1 with `cycle_momentum` option enabled "
                         f"({type(optimizer).__name__} has neither); pass cycle_momentum=False")


class ConstantLR(LRScheduler):
    """``lr = base_lr * factor`` for the first ``total_iters`` steps, then ``base_lr``."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        if not 0 <= factor <= 1:
            raise ValueError(f"ConstantLR: factor must be in [0, 1], got {factor}")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        f = self.factor if epoch < self.total_iters else 1.0
        return [b * f for b in self.base_lrs]


class PolynomialLR(LRScheduler):
    """``lr = base_lr * (1 - min(epoch, total_iters) / total_iters) ** power``."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        if total_iters < 1:
            raise ValueError(f"PolynomialLR: total_iters must be >= 1, got {total_iters}")
        self.total_iters, self.power = total_iters, power
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        f = (1.0 - min(epoch, self.total_iters) / self.total_iters) ** self.power
        return [b * f for b in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine annealing from ``base_lr`` to ``eta_min`` over ``T_i`` steps, restarting with
    ``T_{i+1} = T_i * T_mult`` (``T_0`` first). ``step(epoch)`` accepts a fractional epoch, as PyTorch."""

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"CosineAnnealingWarmRestarts: T_0 must be a positive integer, got {T_0!r}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"CosineAnnealingWarmRestarts: T_mult must be an integer >= 1, got {T_mult!r}")
        self.T_0, self.T_mult, self.eta_min = T_0, T_mult, eta_min
        self._epoch: float | None = None
        super().__init__(optimizer, last_epoch)

    def _position(self, epoch: float) -> tuple[float, float]:
        t_cur, t_i = float(epoch), float(self.T_0)
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.T_mult
        return t_cur, t_i

    def lr_at(self, epoch: int) -> list[float]:
        t_cur, t_i = self._position(self._epoch if self._epoch is not None else epoch)
        c = (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0
        return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance one step, or jump to (fractional) ``epoch``."""
        if epoch is None:
            self._epoch = None
            super().step()
            return
        if epoch < 0:
            raise ValueError(f"CosineAnnealingWarmRestarts: expected a non-negative epoch, got {epoch}")
        _warn_if_optimizer_not_stepped(self)
        self._epoch = float(epoch)
        self.last_epoch = math.floor(epoch)
        self._set(self.lr_at(self.last_epoch))


class CyclicLR(LRScheduler):
    """Cyclical learning rate (Smith, 2017) between ``base_lr`` and ``max_lr``, stepped every batch.

    ``mode`` is ``"triangular"``, ``"triangular2"`` (amplitude halved each cycle) or ``"exp_range"``
    (scaled by ``gamma ** iteration``), or give ``scale_fn`` and ``scale_mode``. With
    ``cycle_momentum`` the momentum (``betas[0]`` for Adam-like optimizers) cycles inversely between
    ``max_momentum`` and ``base_momentum``. Same arguments and arithmetic as PyTorch.
    """

    def __init__(self, optimizer: Optimizer, base_lr: float | Sequence[float], max_lr: float | Sequence[float],
                 step_size_up: int = 2000, step_size_down: int | None = None, mode: str = "triangular",
                 gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None, scale_mode: str = "cycle",
                 cycle_momentum: bool = True, base_momentum: float | Sequence[float] = 0.8,
                 max_momentum: float | Sequence[float] = 0.9, last_epoch: int = -1) -> None:
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(f"CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}")
        self.cyclic_base_lrs = _per_group("CyclicLR", optimizer, base_lr, "base_lr")
        self.max_lrs = _per_group("CyclicLR", optimizer, max_lr, "max_lr")
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size, self.step_ratio = up + down, up / (up + down)
        self.mode, self.gamma, self.scale_fn_custom = mode, gamma, scale_fn
        self.scale_mode = scale_mode if scale_fn is not None else ("iterations" if mode == "exp_range" else "cycle")
        self.cycle_momentum = cycle_momentum
        if last_epoch == -1:
            for g, lr in zip(optimizer.param_groups, self.cyclic_base_lrs, strict=True):
                g["lr"] = g["initial_lr"] = lr
        if cycle_momentum:
            _check_momentum_support("CyclicLR", optimizer)
            self.base_momentums = _per_group("CyclicLR", optimizer, base_momentum, "base_momentum")
            self.max_momentums = _per_group("CyclicLR", optimizer, max_momentum, "max_momentum")
            if last_epoch == -1:
                _set_momentum(optimizer, self.max_momentums)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = list(self.cyclic_base_lrs)

    def _scale(self, x: float) -> float:
        if self.scale_fn_custom is not None:
            return self.scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1.0 / (2.0 ** (x - 1))
        return self.gamma ** x

    def _factors(self, epoch: int) -> tuple[float, float]:
        cycle = math.floor(1 + epoch / self.total_size)
        x = 1.0 + epoch / self.total_size - cycle
        scale_factor = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        return scale_factor, self._scale(cycle if self.scale_mode == "cycle" else epoch)

    def lr_at(self, epoch: int) -> list[float]:
        scale_factor, s = self._factors(epoch)
        return [b + (m - b) * scale_factor * s for b, m in zip(self.cyclic_base_lrs, self.max_lrs, strict=True)]

    def step(self) -> None:
        """Advance one batch: set each group's ``lr`` (and momentum with ``cycle_momentum``)."""
        super().step()
        if self.cycle_momentum:
            scale_factor, s = self._factors(self.last_epoch)
            _set_momentum(self.optimizer, [mx - (mx - b) * scale_factor * s
                                           for b, mx in zip(self.base_momentums, self.max_momentums, strict=True)])


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up from ``max_lr / div_factor`` to ``max_lr`` over
    ``pct_start`` of ``total_steps``, then anneal to ``initial_lr / final_div_factor``; momentum cycles
    inversely. ``three_phase=True`` uses PyTorch's symmetric three-phase variant. Step once per batch;
    stepping past ``total_steps`` raises. Same arguments and arithmetic as ``torch.optim.lr_scheduler.OneCycleLR``.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85, max_momentum: float | Sequence[float] = 0.95,
                 div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False, last_epoch: int = -1) -> None:
        if total_steps is None:
            if epochs is None or steps_per_epoch is None or epochs <= 0 or steps_per_epoch <= 0:
                raise ValueError("OneCycleLR: give total_steps, or both epochs and steps_per_epoch (positive integers)")
            total_steps = epochs * steps_per_epoch
        if total_steps <= 0:
            raise ValueError(f"OneCycleLR: expected a positive total_steps, got {total_steps}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: expected pct_start in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps, self.anneal_strategy, self.cycle_momentum = total_steps, anneal_strategy, cycle_momentum
        max_lrs = _per_group("OneCycleLR", optimizer, max_lr, "max_lr")
        self.lr_points = [(m / div_factor, m, m / div_factor / final_div_factor) for m in max_lrs]
        if three_phase:
            self.phases = [(float(pct_start * total_steps) - 1, 0, 1, "max", "base"),
                           (float(2 * pct_start * total_steps) - 2, 1, 0, "base", "max"),
                           (total_steps - 1.0, 0, 2, "max", "max")]
        else:
            self.phases = [(float(pct_start * total_steps) - 1, 0, 1, "max", "base"),
                           (total_steps - 1.0, 1, 2, "base", "max")]
        if last_epoch == -1:
            for g, (initial, m, low) in zip(optimizer.param_groups, self.lr_points, strict=True):
                g["lr"] = g["initial_lr"] = initial
                g["max_lr"], g["min_lr"] = m, low
        if cycle_momentum:
            _check_momentum_support("OneCycleLR", optimizer)
            self.momentum_points = {"base": _per_group("OneCycleLR", optimizer, base_momentum, "base_momentum"),
                                    "max": _per_group("OneCycleLR", optimizer, max_momentum, "max_momentum")}
            if last_epoch == -1:
                _set_momentum(optimizer, self.momentum_points["max"])
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _phase(self, step: int) -> tuple[float, tuple]:
        start_step = 0.0
        for i, phase in enumerate(self.phases):
            if step <= phase[0] or i == len(self.phases) - 1:
                return (step - start_step) / (phase[0] - start_step), phase
            start_step = phase[0]
        raise AssertionError("unreachable")

    def lr_at(self, epoch: int) -> list[float]:
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {epoch} times; the specified number of total steps is "
                             f"{self.total_steps}")
        pct, (_, a, b, _, _) = self._phase(epoch)
        return [self._anneal(pts[a], pts[b], pct) for pts in self.lr_points]

    def step(self) -> None:
        """Advance one batch (raises, changing nothing, past ``total_steps``)."""
        self.lr_at(self.last_epoch + 1)  # validate before anything changes
        super().step()
        if self.cycle_momentum:
            pct, (_, _, _, m0, m1) = self._phase(self.last_epoch)
            _set_momentum(self.optimizer, [self._anneal(s, e, pct) for s, e in
                                           zip(self.momentum_points[m0], self.momentum_points[m1], strict=True)])


class ChainedScheduler(LRScheduler):
    """Step several schedulers together; their factors multiply: ``lr = base_lr * prod(lr_i / base_lr_i)``.

    This equals PyTorch's chaining for the multiplicative schedules (StepLR, MultiStepLR, ExponentialLR,
    ConstantLR, LinearLR, PolynomialLR); nnx schedules are closed forms, so chaining an additive one
    (CosineAnnealingLR with ``eta_min``) multiplies its factor too.
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None) -> None:
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("ChainedScheduler: expected at least one scheduler")
        for s in schedulers:
            if not isinstance(s, LRScheduler) or isinstance(s, (CyclicLR, OneCycleLR, ChainedScheduler)):
                raise TypeError(f"ChainedScheduler: cannot chain a {type(s).__name__}")
        optimizer = optimizer if optimizer is not None else schedulers[0].optimizer
        if any(s.optimizer is not optimizer for s in schedulers):
            raise ValueError("ChainedScheduler: every scheduler must belong to the same optimizer")
        self.optimizer, self.schedulers = optimizer, schedulers
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = schedulers[0].last_epoch
        self._step_count = 1
        self._set(self.lr_at(self.last_epoch))

    def lr_at(self, epoch: int) -> list[float]:
        lrs = list(self.base_lrs)
        for s in self.schedulers:
            for i, (lr, base) in enumerate(zip(s.lr_at(s.last_epoch), s.base_lrs, strict=True)):
                lrs[i] *= lr / base if base else 0.0
        return lrs

    def step(self) -> None:
        """Step every child scheduler and set the product of their factors."""
        _warn_if_optimizer_not_stepped(self)
        for s in self.schedulers:
            s.last_epoch += 1
        self.last_epoch += 1
        lrs = self.lr_at(self.last_epoch)
        self._set(lrs)
        for s in self.schedulers:
            s._last_lr = list(lrs)

    def state_dict(self) -> dict[str, Any]:
        """The chain's state, with the state of each child scheduler."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedulers")}
        out["schedulers"] = [s.state_dict() for s in self.schedulers]
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        children = state.pop("schedulers", [])
        if len(children) != len(self.schedulers):
            raise ValueError(f"ChainedScheduler.load_state_dict: the state has {len(children)} schedulers, this one "
                             f"{len(self.schedulers)}")
        for s, st in zip(self.schedulers, children, strict=True):
            s.__dict__.update(st)
        super().load_state_dict(state)
