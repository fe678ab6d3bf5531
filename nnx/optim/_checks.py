"""Argument checks shared by the optimizers of this package (one error style for all).

The same rules run in every constructor and in :meth:`Optimizer.load_state_dict`
(:func:`check_hparams`), so a checkpoint cannot install a value the constructor refuses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_lr(name: str, lr: float) -> None:
    """Raise ``ValueError`` naming the optimizer unless ``lr`` is a non-negative finite number."""
    if not _is_number(lr) or not (0.0 <= lr < math.inf):
        raise ValueError(f"{name}: lr must be a non-negative number, got {lr!r}")


def check_betas(name: str, betas: Any) -> None:
    """Raise ``ValueError`` unless ``betas`` is a pair of numbers in [0, 1)."""
    ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)
    if not ok:
        raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas!r}")


def check_non_negative(name: str, **values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not a non-negative finite number (NaN included)."""
    for k, v in values.items():
        if not _is_number(v) or not (0.0 <= v < math.inf):
            raise ValueError(f"{name}: {k} must be a non-negative number, got {v!r}")


def check_unit_interval(name: str, **values: float) -> None:
    """Raise ``ValueError`` unless each value is a number in [0, 1]."""
    for k, v in values.items():
        if not _is_number(v) or not (0.0 <= v <= 1.0):
            raise ValueError(f"{name}: {k} must be in [0, 1], got {v!r}")


def check_positive_int(name: str, **values: Any) -> None:
    """Raise ``ValueError`` unless each value is an integer >= 1."""
    for k, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {k} must be an integer >= 1, got {v!r}")


def check_flag(name: str, **values: Any) -> None:
    """Raise ``ValueError`` unless each value is a bool."""
    for k, v in values.items():
        if not isinstance(v, bool):
            raise ValueError(f"{name}: {k} must be True or False, got {v!r}")


def _nonneg(name: str, key: str, v: Any) -> None:
    check_non_negative(name, **{key: v})


def _unit(name: str, key: str, v: Any) -> None:
    check_unit_interval(name, **{key: v})


def _flag(name: str, key: str, v: Any) -> None:
    check_flag(name, **{key: v})


def _posint(name: str, key: str, v: Any) -> None:
    check_positive_int(name, **{key: v})


# One rule per hyper-parameter name used by any optimizer of nnx.optim.
_RULES: dict[str, Callable[[str, str, Any], None]] = {
    "lr": lambda n, k, v: check_lr(n, v),
    "betas": lambda n, k, v: check_betas(n, v),
    "eps": _nonneg, "weight_decay": _nonneg, "momentum": _nonneg, "dampening": _nonneg, "lr_decay": _nonneg,
    "initial_accumulator_value": _nonneg, "momentum_decay": _nonneg,
    "tolerance_grad": _nonneg, "tolerance_change": _nonneg,
    "alpha": _unit, "rho": _unit,
    "max_iter": _posint, "max_eval": _posint, "history_size": _posint,
    "nesterov": _flag, "maximize": _flag, "amsgrad": _flag, "centered": _flag, "decoupled_weight_decay": _flag,
}


def check_hparams(name: str, values: dict[str, Any]) -> None:
    """Check every known hyper-parameter in ``values`` (a constructor's arguments or a parameter group).

    ``initial_lr`` (set by the schedulers) follows the ``lr`` rule; unknown keys are left alone.
    """
    for k, v in values.items():
        if k == "initial_lr" and v is not None:
            check_lr(name, v)
        elif k in _RULES:
            _RULES[k](name, k, v)
    if values.get("nesterov") and (values.get("momentum", 0) <= 0 or values.get("dampening", 0) != 0):
        raise ValueError(f"{name}: Nesterov momentum requires a momentum and zero dampening, got "
                         f"momentum={values.get('momentum')!r}, dampening={values.get('dampening')!r}")


def _sched_int(minimum: int) -> Callable[[str, str, Any], None]:
    def rule(name: str, key: str, v: Any) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name}: {key} must be an integer >= {minimum}, got {v!r}")
        if v < minimum:
            raise ValueError(f"{name}: {key} must be an integer >= {minimum}, got {v!r}")
    return rule


def _sched_positive(name: str, key: str, v: Any) -> None:
    if not _is_number(v) or not (0.0 < v < math.inf):
        raise ValueError(f"{name}: {key} must be a finite number > 0, got {v!r}")


def _sched_finite(name: str, key: str, v: Any) -> None:
    if not _is_number(v) or not math.isfinite(v):
        raise ValueError(f"{name}: {key} must be a finite number, got {v!r}")


def _sched_rates(name: str, key: str, v: Any) -> None:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{name}: {key} must be a list of rates, got {type(v).__name__}")
    for r in v:
        _nonneg(name, key, r)


def _sched_ints(name: str, key: str, v: Any) -> None:
    if not isinstance(v, (list, tuple)) or not all(isinstance(m, int) and not isinstance(m, bool) for m in v):
        raise ValueError(f"{name}: {key} must be a list of integers, got {v!r}")


# One rule per attribute name a learning-rate scheduler keeps (checked at construction and on load).
_SCHEDULE_RULES: dict[str, Callable[[str, str, Any], None]] = {
    "last_epoch": _sched_int(-1), "_step_count": _sched_int(0), "step_size": _sched_int(1), "T_max": _sched_int(1),
    "T_0": _sched_int(1), "T_mult": _sched_int(1), "T_i": _sched_int(1), "T_cur": _sched_finite,
    "total_iters": _sched_int(0), "total_steps": _sched_int(1),
    "patience": _sched_int(0), "cooldown": _sched_int(0), "cooldown_counter": _sched_int(0),
    "num_bad_epochs": _sched_int(0),
    "gamma": _sched_positive, "eta_min": _sched_finite, "power": _sched_finite, "factor": _nonneg,
    "start_factor": _sched_finite, "end_factor": _sched_finite, "threshold": _nonneg, "eps": _nonneg,
    "base_lrs": _sched_rates, "min_lrs": _sched_rates, "max_lrs": _sched_rates, "cyclic_base_lrs": _sched_rates,
    "_last_lr": _sched_rates, "milestones": _sched_ints,
}


def check_schedule(name: str, values: dict[str, Any]) -> None:
    """Check every known scheduler attribute in ``values`` (``gamma`` > 0, ``step_size`` >= 1,
    ``last_epoch`` an integer >= -1, rates non-negative ...); NaN and inf are refused."""
    for k, v in values.items():
        rule = _SCHEDULE_RULES.get(k)
        if rule is not None and v is not None:
            rule(name, k, v)
