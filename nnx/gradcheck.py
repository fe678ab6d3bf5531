"""Numerical gradient checks: the proof that a hand-written backward is right.

:func:`gradcheck` compares the analytic gradient of a scalar projection ``L = sum(y * dy)``
(``dy`` random, fixed) with central differences ``(L(x + h e_i) - L(x - h e_i)) / 2h`` for every
element of every input and parameter, in float64. Perturbations are made on a host copy and
sent back to the backend, so the forward and backward under test run on the backend itself.

>>> import numpy as np
>>> x64 = nnx.asarray(np.random.default_rng(0).standard_normal((4, 3)), dtype="float64")
>>> gradcheck(nnx.Linear(3, 2).double(), x64)        # nnx.gradcheck
True
>>> gradcheck(nnx.functional.tanh_forward, x64)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from .module import Module


class GradcheckError(AssertionError):
    """Raised when analytic and numerical gradients disagree; the message says where and by how much."""


def _flat_index(shape: tuple[int, ...], i: int) -> tuple[int, ...]:
    idx = []
    for s in reversed(shape):
        idx.append(i % s)
        i //= s
    return tuple(reversed(idx))


def _probe(b: backends.Backend, shape: tuple[int, ...], dtype: Any, seed: int) -> Any:
    """A fixed, well spread pseudo-random array in [-1, 1] (pure standard, same on every backend)."""
    xp = b.xp
    n = 1
    for s in shape:
        n *= s
    k = xp.astype(xp.arange(n, device=b.device), xp.float64)
    return xp.astype(xp.reshape(xp.cos(k * 2.399963 + 0.7 + seed), shape), dtype)


def _unit(b: backends.Backend, shape: tuple[int, ...], i: int, dtype: Any) -> Any:
    xp = b.xp
    n = 1
    for s in shape:
        n *= s
    hot = xp.arange(n, device=b.device) == i
    return xp.reshape(xp.astype(hot, dtype), shape)


def _compare(name: str, analytic: Any, numeric: list[float], shape: tuple[int, ...],
             atol: float, rtol: float) -> None:
    worst = None
    for i, num in enumerate(numeric):
        idx = _flat_index(shape, i)
        ana = float(analytic[idx]) if shape else float(analytic)
        err = abs(ana - num)
        if err > atol + rtol * abs(num) and (worst is None or err > worst[0]):
            worst = (err, idx, ana, num)
    if worst is not None:
        err, idx, ana, num = worst
        raise GradcheckError(
            f"gradcheck: gradient of {name} disagrees at index {idx}: analytic {ana:.10g}, "
            f"numerical {num:.10g} (|diff| {err:.3g} > atol {atol} + rtol {rtol} * |numerical|)"
        )


def gradcheck(
    fn: Module | Callable[..., tuple[Any, Callable]],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    check_inputs: Sequence[bool] | None = None,
    seed: int = 0,
    forward_kwargs: dict | None = None,
) -> bool:
    """Check the backward of a Module or a functional ``*_forward`` op numerically.

    Args:
        fn: a Module (its ``forward``/``backward``, parameters included) or a function
            ``f(*inputs) -> (y, backward)`` with ``backward(dy, input_grad) -> (dx, grads)``.
            For a function with several array inputs, ``dx`` covers the first input and
            ``grads`` the others, in order.
        inputs: float64 backend arrays. Non-float inputs (class labels) are passed as is.
        eps, atol, rtol: step and tolerances of the comparison.
        check_inputs: which inputs to check (default: every floating one).
        forward_kwargs: extra keyword arguments for the forward call.

    Returns True, or raises :class:`GradcheckError` naming the array and index that disagree.
    A Module is put in training mode; layers with randomness (dropout) must be checked with it
    switched off.
    """
    if not inputs:
        raise ValueError("gradcheck: give at least one input array")
    b = backends.backend_of(inputs[0])
    floating = [hasattr(x, "dtype") and b.xp.isdtype(x.dtype, "real floating") for x in inputs]
    for x, is_float in zip(inputs, floating, strict=True):
        if is_float and x.dtype != b.xp.float64:
            raise TypeError(f"gradcheck: inputs must be float64 for a meaningful check, got {x.dtype}")
    run = _Run(b, fn, inputs, forward_kwargs or {}, seed)
    input_grads, params, param_grads = run.analytic()
    check = list(check_inputs) if check_inputs is not None else floating
    for k, x in enumerate(inputs):
        if not check[k]:
            continue
        if k >= len(input_grads) or input_grads[k] is None:
            raise GradcheckError(f"gradcheck: backward returned no gradient for input {k}")
        g = input_grads[k]
        if tuple(g.shape) != tuple(x.shape):
            raise GradcheckError(
                f"gradcheck: gradient of input {k} has shape {tuple(g.shape)}, input has {tuple(x.shape)}")

        def set_input(v: Any, k: int = k) -> None:
            run.current[k] = v

        num = run.numeric_grad(x, set_input, eps)
        run.current[k] = inputs[k]
        _compare(f"input {k}", g, num, tuple(x.shape), atol, rtol)

    for (name, p), g in zip(params, param_grads, strict=True):
        if g is None:
            raise GradcheckError(f"gradcheck: backward left no gradient for parameter {name!r}")
        if tuple(g.shape) != tuple(p.shape):
            raise GradcheckError(
                f"gradcheck: gradient of parameter {name!r} has shape {tuple(g.shape)}, parameter has {p.shape}")
        original = p.data

        def set_param(v: Any, p: Any = p) -> None:
            p.data = v

        num = run.numeric_grad(original, set_param, eps)
        p.data = original
        _compare(f"parameter {name!r}", g, num, tuple(p.shape), atol, rtol)
    return True


class _Run:
    """One checked function or module: its analytic gradients and the objective ``sum(y * dy)``
    evaluated at perturbed inputs or parameters (``current`` holds the inputs being evaluated)."""

    def __init__(self, b: Any, fn: Any, inputs: Sequence[Any], kwargs: dict, seed: int) -> None:
        self.b, self.fn, self.kwargs = b, fn, kwargs
        self.module = fn if isinstance(fn, Module) else None
        if self.module is not None:
            self.module.train()
            self.module.clear_tape()
        self.inputs = inputs
        self.current = list(inputs)
        self.seed = seed
        self.dys: list = []

    def __call__(self, args: Sequence[Any]) -> tuple[Any, Callable | None]:
        if self.module is not None:
            return self.module(*args, **self.kwargs), None
        return self.fn(*args, **self.kwargs)

    def analytic(self) -> tuple[list, list, list]:
        """``(input gradients, [(name, parameter)], parameter gradients)`` of one backward."""
        y, backward = self(self.inputs)
        outputs = y if isinstance(y, tuple) else (y,)
        self.dys = [_probe(self.b, tuple(o.shape), o.dtype, self.seed + j) for j, o in enumerate(outputs)]
        dy_arg = tuple(self.dys) if isinstance(y, tuple) else self.dys[0]
        module = self.module
        if module is None:
            dx, grads = backward(dy_arg, True)
            return [dx, *grads], [], []
        saved_grads = [(p, p.grad) for p in module.parameters()]
        for p, _ in saved_grads:
            p.grad = None  # check this backward alone: gradients already there would add up
        dx = module.backward(dy_arg)
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        param_grads = [p.grad for _, p in params]
        for p, g in saved_grads:
            p.grad = g  # leave the caller's gradients as they were
        module.clear_tape()
        return ([dx] if not isinstance(dx, tuple) else list(dx)), params, param_grads

    def objective(self) -> float:
        out = self(self.current)[0]
        outs = out if isinstance(out, tuple) else (out,)
        xp = self.b.xp
        total = 0.0
        for o, d in zip(outs, self.dys, strict=True):
            total += float(xp.sum(o * d))
        if self.module is not None:
            self.module.clear_tape()
        return total

    def numeric_grad(self, base: Any, set_value: Callable[[Any], None], eps: float) -> list[float]:
        """Central differences of :meth:`objective` along every element of ``base``."""
        out = []
        n = 1
        for s in base.shape:
            n *= s
        for i in range(n):
            step = _unit(self.b, tuple(base.shape), i, base.dtype) * eps
            set_value(base + step)
            plus = self.objective()
            set_value(base - step)
            minus = self.objective()
            out.append((plus - minus) / (2 * eps))
        set_value(base)
        return out
