"""L-BFGS (limited-memory BFGS), closure-based, with ``torch.optim.LBFGS``'s algorithm and arguments."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import nnx_backends as backends

from ..backend import to_numpy
from ..module import Parameter
from ._line_search import strong_wolfe
from .optimizer import Optimizer, xp_of


class LBFGS(Optimizer):
    """L-BFGS, as ``torch.optim.LBFGS`` (same arguments, defaults and iteration; one parameter group).

    ``step(closure)`` needs a closure that re-evaluates the model. With nnx's explicit backward the
    closure zeroes the gradients, runs forward, the loss and backward, and returns the loss::

        def closure():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            return loss

        opt = nnx.optim.LBFGS(model.parameters(), lr=1, line_search_fn="strong_wolfe")
        opt.step(closure)

    ``line_search_fn`` is None (fixed step ``lr``) or ``"strong_wolfe"``. Each iteration reads a few
    scalars (dot products, the loss) back to the host, as PyTorch does. Memory: ``2 * history_size``
    flat copies of the parameters.
    """

    def __init__(self, params: Iterable[Parameter], lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): pass one list")
        self._params = self.param_groups[0]["params"]

    # ------------------------------------------------------------ flat-vector helpers
    def _xp(self) -> Any:
        return xp_of(self._params[0])

    def _gather_flat_grad(self) -> Any:
        xp = self._xp()
        views = [xp.zeros(p.size, dtype=p.dtype, device=backends.device_of(p.data)) if p.grad is None
                 else xp.reshape(p.grad, (-1,)) for p in self._params]
        return xp.concat(views)

    def _add_grad(self, step_size: float, update: Any) -> None:
        xp, offset = self._xp(), 0
        for p in self._params:
            n = p.size
            p.data += step_size * xp.reshape(update[offset:offset + n], p.shape)
            offset += n

    def _clone_param(self) -> list[Any]:
        xp = self._xp()
        return [xp.asarray(p.data, copy=True) for p in self._params]

    def _set_param(self, values: list[Any]) -> None:
        for p, v in zip(self._params, values, strict=True):
            if backends.backend_of(p.data).mutable:
                p.data[...] = v  # in place: arrays that alias the parameter see the restored values
            else:
                p.data = v

    @staticmethod
    def _scalar(x: Any) -> float:
        return float(to_numpy(x))

    def _dot(self, a: Any, b: Any) -> float:
        return self._scalar(self._xp().sum(a * b))

    def _max_abs(self, a: Any) -> float:
        return self._scalar(self._xp().max(self._xp().abs(a)))

    def _directional_evaluate(self, closure: Callable[[], Any], x: list[Any], t: float, d: Any) -> tuple[float, Any]:
        self._add_grad(t, d)
        loss = self._scalar(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    def _direction(self, state: dict, flat_grad: Any, group: dict) -> Any:
        """The quasi-Newton direction from the two-loop recursion (updates the history in ``state``)."""
        if state["n_iter"] == 1:
            state.update(old_dirs=[], old_stps=[], ro=[], H_diag=1.0)
            return -flat_grad
        y = flat_grad - state["prev_flat_grad"]
        s = state["d"] * state["t"]
        ys = self._dot(y, s)
        old_dirs, old_stps, ro = state["old_dirs"], state["old_stps"], state["ro"]
        if ys > 1e-10:
            if len(old_dirs) == group["history_size"]:
                old_dirs.pop(0)
                old_stps.pop(0)
                ro.pop(0)
            old_dirs.append(y)
            old_stps.append(s)
            ro.append(1.0 / ys)
            state["H_diag"] = ys / self._dot(y, y)
        al = [0.0] * len(old_dirs)
        q = -flat_grad
        for i in range(len(old_dirs) - 1, -1, -1):
            al[i] = self._dot(old_stps[i], q) * ro[i]
            q = q - al[i] * old_dirs[i]
        r = q * state["H_diag"]
        for i in range(len(old_dirs)):
            be_i = self._dot(old_dirs[i], r) * ro[i]
            r = r + (al[i] - be_i) * old_stps[i]
        return r

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # noqa: C901  (torch's loop, kept whole)
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss of the first closure call."""
        if closure is None:
            raise TypeError("LBFGS.step: needs a closure that zeroes the gradients, runs forward, the loss and "
                            "backward, and returns the loss")
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        state = self.state.setdefault(self._params[0], {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = self._scalar(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        if self._max_abs(flat_grad) <= tolerance_grad:
            return orig_loss
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            d = self._direction(state, flat_grad, group)
            state["prev_flat_grad"] = flat_grad
            prev_loss = loss
            state["prev_loss"] = prev_loss
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / self._scalar(self._xp().sum(self._xp().abs(flat_grad)))) * lr
            else:
                t = lr
            gtd = self._dot(flat_grad, d)
            if gtd > -tolerance_change:
                state["d"], state["t"] = d, t
                break
            ls_func_evals = 0
            if group["line_search_fn"] == "strong_wolfe":
                x_init = self._clone_param()
                loss, flat_grad, t, ls_func_evals = strong_wolfe(
                    lambda x, t_, d_: self._directional_evaluate(closure, x, t_, d_), x_init, t, d, loss,
                    flat_grad, gtd, dot=self._dot, d_norm=self._max_abs(d), max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = self._max_abs(flat_grad) <= tolerance_grad
            else:
                self._add_grad(t, d)
                opt_cond = False
                if n_iter != max_iter:
                    loss = self._scalar(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = self._max_abs(flat_grad) <= tolerance_grad
                    ls_func_evals = 1
            state["d"], state["t"] = d, t
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if self._max_abs(d) * abs(t) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break
        return orig_loss
