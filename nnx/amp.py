"""Mixed precision: a dynamic loss scaler with ``torch.amp.GradScaler``'s semantics.

With float16 gradients, small values underflow to zero. Multiplying the loss by a large factor
``S`` before backpropagation keeps them representable; the optimizer must then see ``grad / S``,
and a step whose gradients overflowed (Inf/NaN) must be skipped and ``S`` lowered.

nnx has an explicit backward, so "scaling the loss" means scaling the gradient fed into
``backward``: the loss gradient ``dloss`` (what ``loss_fn.backward()`` returns) times ``S``. Both
forms give the same gradients, because backward is linear in its input::

    scaler = nnx.amp.GradScaler()
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(scaler.scale(loss_fn.backward()))   # = backward of (loss * S)
        scaler.step(opt)        # unscales the gradients, skips the step if any is Inf/NaN
        scaler.update()         # backoff on Inf/NaN, growth after growth_interval clean steps

``scale(loss)`` also works (for logging a scaled loss, or for a custom backward that starts from
the loss value). ``unscale_(opt)`` before ``step`` lets you clip true gradients
(``nnx.clip_grad_norm_``). The Inf/NaN check runs on the device (one reduction per gradient); the
step reads its result once (one host read per step, as PyTorch's non-capturable path).

Half-precision compute needs float32 *master weights*: a float16 parameter cannot absorb an update
smaller than its spacing (``1 + 1e-4 == 1`` in float16), so small learning rates would do nothing.
:class:`MasterWeights` keeps float32 copies for the optimizer and float16 ones for the model
(NVIDIA apex's "O2" recipe); the digits examples' ``--amp`` flag trains this way::

    mw = nnx.amp.MasterWeights(model)                 # model now computes in float16
    opt = nnx.optim.AdamW(mw.parameters(), lr=1e-3)   # the optimizer updates float32 masters
    scaler = nnx.amp.GradScaler()
    for x, y in loader:
        logits = model(mw.cast(x))
        loss = loss_fn(mw.to_master(logits), y)       # the loss in float32
        model.backward(mw.cast(scaler.scale(loss_fn.backward())), input_grad=False)
        mw.step(opt, scaler)                          # grads to float32, unscale, step or skip, copy back
"""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

__all__ = ["GradScaler", "MasterWeights"]

_READY, _UNSCALED, _STEPPED = 0, 1, 2


class GradScaler:
    """Dynamic loss scaling (``torch.amp.GradScaler``'s arguments, defaults and state_dict).

    Args:
        init_scale: initial scale factor ``S``.
        growth_factor: ``S`` is multiplied by this after ``growth_interval`` consecutive steps
            without Inf/NaN gradients.
        backoff_factor: ``S`` is multiplied by this after a step with Inf/NaN gradients (skipped).
        growth_interval: number of clean steps between growths.
        enabled: False makes every method a pass-through (``scale`` returns its input).

    >>> scaler = GradScaler(init_scale=1024.0)
    >>> scaler.get_scale()
    1024.0
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        if growth_factor <= 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if int(growth_interval) <= 0:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval}")
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._per_optimizer: dict[int, dict[str, Any]] = {}

    def is_enabled(self) -> bool:
        """Whether scaling is on."""
        return self._enabled

    def get_scale(self) -> float:
        """The current scale factor (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def scale(self, outputs: Any) -> Any:
        """``outputs * S`` for an array (a loss or a loss gradient) or a list/tuple of arrays."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * self._scale

    def _state(self, optimizer: Any) -> dict[str, Any]:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    def unscale_(self, optimizer: Any) -> None:
        """Divide the gradients of ``optimizer``'s parameters by ``S`` in place, and record on the
        device whether any is Inf/NaN. At most once per optimizer between ``update`` calls."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == _UNSCALED:
            raise RuntimeError("GradScaler.unscale_: already called on this optimizer since the last update()")
        if st["stage"] == _STEPPED:
            raise RuntimeError("GradScaler.unscale_: called after step(); call update() first")
        inv = 1.0 / self._scale
        found = None
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                b = backends.backend_of(g)
                xp = b.xp
                bad = xp.any(xp.logical_not(xp.isfinite(g)))
                found = bad if found is None else xp.logical_or(found, bad)
                if b.mutable:
                    g *= inv
                else:  # an immutable library (JAX): store the new array, or nothing would change
                    p.grad = g * inv
        st["found_inf"] = found
        st["stage"] = _UNSCALED

    def _found_inf(self, optimizer: Any) -> bool:
        found = self._state(optimizer)["found_inf"]
        return False if found is None else bool(found)

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Unscale (unless done), then ``optimizer.step()`` unless a gradient is Inf/NaN (skipped:
        returns None). Reads the device flag once."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        st = self._state(optimizer)
        if st["stage"] == _STEPPED:
            raise RuntimeError("GradScaler.step: already called on this optimizer since the last update()")
        if st["stage"] == _READY:
            self.unscale_(optimizer)
        found = self._found_inf(optimizer)
        st["found_inf_host"] = found
        st["stage"] = _STEPPED
        return None if found else optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | None = None) -> None:
        """Back off after a skipped step, grow after ``growth_interval`` clean steps (PyTorch's rule),
        or set ``new_scale``. Resets the per-optimizer state for the next iteration."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale)
        else:
            states = list(self._per_optimizer.values())
            if not states:
                raise RuntimeError("GradScaler.update: no unscale_()/step() was recorded since the last update()")
            found = any(s.get("found_inf_host", bool(s["found_inf"]) if s["found_inf"] is not None else False)
                        for s in states)
            if found:
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer = {}

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's keys: ``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``,
        ``_growth_tracker`` (empty when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (also a ``torch.amp.GradScaler`` state_dict)."""
        if not self._enabled:
            return
        if not state:
            raise RuntimeError("GradScaler.load_state_dict: the state is empty (saved from a disabled scaler)")
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state)
        if missing:
            raise KeyError(f"GradScaler.load_state_dict: missing keys {sorted(missing)}")
        self._scale = float(state["scale"])
        self._growth_factor = float(state["growth_factor"])
        self._backoff_factor = float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])


class MasterWeights:
    """Float16 compute with float32 master parameters (see the module docstring for the loop).

    Args:
        model: converted in place to ``dtype`` (parameters and floating buffers).
        dtype: the compute dtype, ``"float16"`` (default) or ``"bfloat16"`` where the backend has it.

    :meth:`parameters` are the float32 masters to give the optimizer; :meth:`step` copies the model's
    gradients to them, steps (through ``scaler`` when given: unscaled, skipped on Inf/NaN), copies
    the masters back into the model and clears both sets of gradients. ``state_dict`` of the model
    then holds float16 values: save ``mw.master_state_dict()`` for full precision checkpoints.

    >>> import nnx
    >>> model = nnx.Linear(3, 2)
    >>> mw = MasterWeights(model)
    >>> model.weight.dtype == nnx.get_backend().xp.float16, mw.parameters()[0].dtype == model.weight.data.dtype
    (True, False)
    """

    def __init__(self, model: Any, dtype: str = "float16") -> None:
        from .module import Parameter

        params = list(model.named_parameters())
        if not params:
            raise ValueError("MasterWeights: the model has no parameters")
        b = backends.backend_of(params[0][1].data)
        xp = b.xp
        for name, p in params:
            if not xp.isdtype(p.data.dtype, "real floating"):
                raise TypeError(f"MasterWeights: parameter {name!r} is {p.data.dtype}, expected a floating dtype")
        self._masters = [Parameter(xp.astype(p.data, xp.float32), requires_grad=p.requires_grad) for _, p in params]
        self._names = [name for name, _ in params]
        self.model = model.to(dtype=dtype)
        self._model_params = [p for _, p in model.named_parameters()]
        self.dtype = self._model_params[0].data.dtype

    def parameters(self) -> list:
        """The float32 master parameters, in the model's ``named_parameters()`` order."""
        return list(self._masters)

    def cast(self, x: Any) -> Any:
        """``x`` in the compute dtype (inputs, and the loss gradient fed to ``model.backward``)."""
        xp = backends.backend_of(x).xp
        return x if x.dtype == self.dtype else xp.astype(x, self.dtype)

    def to_master(self, x: Any) -> Any:
        """``x`` in float32 (the model's output before the loss)."""
        xp = backends.backend_of(x).xp
        return x if x.dtype == xp.float32 else xp.astype(x, xp.float32)

    def grads_to_master(self) -> None:
        """Set each master's gradient to its model parameter's gradient in float32 (None stays None)."""
        for m, p in zip(self._masters, self._model_params, strict=True):
            m.grad = None if p.grad is None else backends.backend_of(p.grad).xp.astype(p.grad, m.data.dtype)

    def master_to_model(self) -> None:
        """Copy the masters' values into the model's parameters (rounded to the compute dtype)."""
        for m, p in zip(self._masters, self._model_params, strict=True):
            p.data = backends.backend_of(m.data).xp.astype(m.data, self.dtype)

    def step(self, optimizer: Any, scaler: GradScaler | None = None) -> bool:
        """One optimizer step on the masters; returns False when the scaler skipped it (Inf/NaN)."""
        self.grads_to_master()
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            stepped = scaler.get_scale() >= scale  # a skipped step backs the scale off
        else:
            optimizer.step()
            stepped = True
        self.master_to_model()
        optimizer.zero_grad()
        for p in self._model_params:
            p.grad = None
        return stepped

    def master_state_dict(self) -> dict[str, Any]:
        """The model's ``state_dict`` with the float32 masters in place of the parameters."""
        state = self.model.state_dict()
        for name, m in zip(self._names, self._masters, strict=True):
            state[name] = m.data
        return state
