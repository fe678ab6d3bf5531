"""A whole training step compiled by ``jax.jit`` on the JAX backend: :func:`compile_step`.

nnx's forward, backward and optimizer update store every result they compute (nothing is written
in place on an immutable library), so on JAX one training step is a pure function of the
parameters, buffers, optimizer state, learning rates and batch. :func:`compile_step` traces that
function once with ``jax.jit`` (the parameter and state buffers donated) and replays the compiled
program on every later call; XLA fuses the whole step into a few kernels on the CPU or GPU.

>>> # not run as a doctest: JAX's eager first step and the XLA compile take ~8 s on a CPU
>>> # (tests/training/test_compiled.py runs this on JAX and compares it with eager steps)
>>> import numpy as np
>>> with nnx.use_backend("jax"):                                    # doctest: +SKIP
...     model = nnx.Sequential(nnx.Linear(8, 16), nnx.ReLU(), nnx.Linear(16, 3))
...     opt = nnx.optim.Adam(model.parameters(), lr=1e-2)
...     step = nnx.compile_step(model, nnx.CrossEntropyLoss(), opt)
...     x, y = nnx.asarray(np.ones((4, 8))), nnx.asarray(np.array([0, 1, 2, 0]))
...     for _ in range(3):
...         loss = step(x, y)                                       # a 0-d array; no host read

Semantics and limits (each checked, with a clear error where it can be):

* The first call runs eagerly (it creates the optimizer state); later calls run the compiled step.
  A new input shape or dtype, or a change of any hyper-parameter other than the learning rate,
  traces again (learning rates are inputs of the program, so schedulers work without retracing).
* Results equal eager execution (tests compare them step by step); the model, its buffers and the
  optimizer state are updated in place of the eager ones, so ``state_dict``, checkpoints,
  evaluation and eager steps work before and after.
* Random numbers (dropout in training mode) are drawn on the host in nnx, which a compiled program
  cannot do: tracing such a model raises ``ValueError``; put dropout layers in ``eval()`` or use
  eager steps.
* Host reads inside the step (range checks of class labels and token ids) are skipped inside the
  program, as on a GPU: check labels before training.
* Gradients do not accumulate across compiled steps (each step starts from ``zero_grad``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

__all__ = ["CompiledStep", "compile_step"]


def compile_step(model: Any, loss_fn: Any, optimizer: Any, *, donate: bool | None = None) -> CompiledStep:
    """Compile ``zero_grad; loss = loss_fn(model(x), y); backward; optimizer.step()`` with ``jax.jit``.

    Returns a :class:`CompiledStep`: ``step(x, y)`` returns the loss (a 0-d array). The model's
    parameters must live on the JAX backend. ``donate=True`` lets XLA reuse the buffers of the old
    parameters and optimizer state for the new ones (default: on GPUs; XLA's CPU backend cannot).
    """
    params = list(model.parameters())
    if not params:
        raise ValueError("compile_step: the model has no parameters")
    b = backends.backend_of(params[0].data)
    if b.name != "jax":
        raise ValueError(f"compile_step: compiled steps need the JAX backend (jax.jit); the model is on "
                         f"{b.name!r}. Move it with model.to('jax') and create the optimizer after that")
    owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if any(id(p) not in owned for p in params):
        raise ValueError("compile_step: the optimizer does not update every parameter of the model")
    return CompiledStep(model, loss_fn, optimizer, b, b.device.platform != "cpu" if donate is None else donate)


class CompiledStep:
    """A training step compiled by :func:`compile_step`; call it with ``(x, y)``."""

    def __init__(self, model: Any, loss_fn: Any, optimizer: Any, backend: Any, donate: bool) -> None:
        self.model, self.loss_fn, self.optimizer, self.backend = model, loss_fn, optimizer, backend
        self.donate = donate
        self._params = list(model.parameters())
        self._buffers = [(m, name) for m in model.modules() for name, v in m._buffers.items() if v is not None]
        self._compiled: dict[tuple, Callable] = {}
        self._stepped: list[bool] = []
        self.traces = 0  #: how many times the step was traced (compiled)
        self._warm = False

    # ------------------------------------------------------------------ the pure step
    def _eager(self, x: Any, y: Any) -> Any:
        opt = self.optimizer
        opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        opt.step()
        return loss

    def _static_key(self) -> tuple:
        """Everything of the optimizer's groups except the learning rates: a change retraces."""
        key = []
        for g in self.optimizer.param_groups:
            key.append(tuple(sorted((k, repr(v)) for k, v in g.items() if k not in ("params", "lr", "initial_lr"))))
        return tuple(key)

    def _pure(self, params: list, buffers: list, states: list, lrs: list, x: Any, y: Any) -> tuple:
        """Install the traced values, run the eager step on them, collect the new values."""
        opt = self.optimizer
        saved_lrs = [g["lr"] for g in opt.param_groups]
        rng_before = self.backend.get_rng_state()
        try:
            for p, a in zip(self._params, params, strict=True):
                p.data = a
            for (m, name), a in zip(self._buffers, buffers, strict=True):
                m._buffers[name] = a
            for p, st in zip(self._params, states, strict=True):
                opt.state[p] = dict(st)
            for g, lr in zip(opt.param_groups, lrs, strict=True):
                g["lr"] = lr
            loss = self._eager(x, y)
            self._stepped = [p.grad is not None for p in self._params]
            out = ([p.data for p in self._params], [m._buffers[name] for m, name in self._buffers],
                   [dict(opt.state.get(p, {})) for p in self._params], loss)
        finally:
            for g, lr in zip(opt.param_groups, saved_lrs, strict=True):
                g["lr"] = lr
            for p in self._params:
                p.grad = None
        if self.backend.get_rng_state() != rng_before:
            raise ValueError(
                "compile_step: the step draws random numbers (dropout in training mode?), which nnx draws on "
                "the host and a compiled program would freeze into constants; put those layers in eval() or "
                "train with eager steps")
        return out

    # ------------------------------------------------------------------ calling
    def __call__(self, x: Any, y: Any) -> Any:
        opt = self.optimizer
        if not self._warm:  # the first step runs eagerly: it creates the optimizer state
            self._warm = True
            return self._eager(x, y)
        jax = self.backend._jax
        key = (self._static_key(), tuple(x.shape), str(x.dtype), tuple(y.shape), str(y.dtype))
        fn = self._compiled.get(key)
        if fn is None:  # a new function object per key: jax.jit's own cache is keyed on the function

            def traced(params: list, buffers: list, states: list, lrs: list, x: Any, y: Any) -> tuple:
                self.traces += 1
                return self._pure(params, buffers, states, lrs, x, y)

            fn = self._compiled[key] = jax.jit(traced, donate_argnums=(0, 1, 2) if self.donate else ())
        # Python numbers (learning rates, step counters) enter the program as weakly typed scalars: their
        # values change without retracing, and float32 parameters stay float32
        states = [dict(opt.state[p]) for p in self._params]
        lrs = [float(g["lr"]) for g in opt.param_groups]
        old = [{k: v for k, v in st.items() if isinstance(v, (int, float))} for st in states]
        host_memory = self.backend.host_memory
        self.backend.host_memory = False  # no host reads inside the program (as on a GPU)
        self.backend.tracing = True  # nor device-side flags kept outside it (Embedding's id check)
        before = ([p.data for p in self._params], [m._buffers[n] for m, n in self._buffers], states)
        try:
            params, buffers, new_states, loss = fn(*before, lrs, x, y)
        except BaseException:  # a failed trace leaves tracers behind: put the real arrays back
            for p, a in zip(self._params, before[0], strict=True):
                p.data = a
            for (m, name), a in zip(self._buffers, before[1], strict=True):
                m._buffers[name] = a
            for p, st in zip(self._params, before[2], strict=True):
                opt.state[p] = st
            self.model.clear_tape()
            self.loss_fn.clear_tape()
            raise
        finally:
            self.backend.host_memory = host_memory
            self.backend.tracing = False
        for p, a in zip(self._params, params, strict=True):
            p.data = a
        for (m, name), a in zip(self._buffers, buffers, strict=True):
            m._buffers[name] = a
        for p, st, prev, stepped in zip(self._params, new_states, old, self._stepped, strict=True):
            st = dict(st)
            if "step" in prev:  # the step counter stays a Python number, counted on the host (no read back)
                st["step"] = type(prev["step"])(prev["step"] + 1) if stepped else prev["step"]
            opt.state[p] = st
        return loss

