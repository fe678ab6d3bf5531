"""Optimizer base class with ``torch.optim``'s interface: ``param_groups``, ``state``,
``step``, ``zero_grad``, ``state_dict``/``load_state_dict``.

Updates are atomic: ``step`` checks every gradient (backend, shape, dtype) before it changes any
parameter, so a failed step leaves the model and the optimizer state as they were.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import nnx_backends as backends

from ..errors import describe
from ..module import Parameter
from ._checks import check_hparams


class Optimizer:
    """Base class. Subclasses implement ``_update(group, param, grad, state)``."""

    #: the per-parameter state entries a subclass keeps (checked by load_state_dict; None: not checked)
    _state_keys: frozenset[str] | None = None

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], defaults: dict[str, Any]) -> None:
        check_hparams(type(self).__name__, defaults)
        self.defaults = dict(defaults)
        if "betas" in self.defaults:
            self.defaults["betas"] = tuple(self.defaults["betas"])
        self.state: dict[Parameter, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters (missing ones from defaults)."""
        name = type(self).__name__
        group = dict(group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, Parameter) else list(ps)
        for i, p in enumerate(ps):
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: parameter {i} is a {type(p).__name__}, expected nnx.Parameter "
                                "(pass model.parameters())")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in ps):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        check_hparams(name, {k: v for k, v in group.items() if k != "params"})
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        group.setdefault("initial_lr", group.get("lr"))
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter this optimizer updates."""
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None if set_to_none or p.grad is None else backends.backend_of(p.grad).xp.zeros_like(p.grad)

    def _checked_pairs(self) -> list[tuple[dict, Parameter, Any]]:
        name = type(self).__name__
        pairs = []
        for g in self.param_groups:
            for p in g["params"]:
                grad = p.grad
                if grad is None or not p.requires_grad:
                    continue
                data = p.data
                if type(grad) is not type(data) or tuple(grad.shape) != tuple(data.shape) or grad.dtype != data.dtype:
                    raise ValueError(f"{name}.step: gradient is a {describe(grad)} but its parameter is a "
                                     f"{describe(data)}; nothing was updated")
                b = backends.backend_of(data)
                one = b.single_device  # NumPy: no device to compare
                dev = None if one else b.device_of(data)
                if not one and b.device_of(grad) != dev:
                    raise ValueError(f"{name}.step: gradient is a {describe(grad)} but its parameter is a "
                                     f"{describe(data)}; nothing was updated")
                st = self.state.get(p)
                if st:
                    for k, v in st.items():
                        if hasattr(v, "shape") and (type(v) is not type(data) or (not one and b.device_of(v) != dev)):
                            raise ValueError(
                                f"{name}.step: optimizer state {k!r} lives on another backend or device than its "
                                "parameter "
                                f"({describe(v)} vs {describe(data)}); create the optimizer after model.to(...)")
                pairs.append((g, p, grad))
        return pairs

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient. ``closure`` re-evaluates the loss (optional)."""
        loss = closure() if closure is not None else None
        by_group: dict[int, tuple[dict, list]] = {}
        for g, p, grad in self._checked_pairs():
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {}
            by_group.setdefault(id(g), (g, []))[1].append((p, grad, st))
        for g, items in by_group.values():
            if not self._update_group(g, items):
                for p, grad, st in items:
                    self._update(g, p, grad, st)
        return loss

    def _update(self, group: dict, p: Parameter, grad: Any, state: dict) -> None:
        raise NotImplementedError

    def _update_group(self, group: dict, items: list[tuple[Parameter, Any, dict]]) -> bool:
        """Update a whole group at once, or return False to have :meth:`_update` run per parameter.

        Optimizers with a multi-tensor adapter kernel take it on the device-shaped path (one launch
        for the group instead of one or more per parameter); see :func:`multi_tensor_backend`.
        """
        return False

    # ------------------------------------------------------------------ state
    def _index(self) -> dict[int, int]:
        idx, out = 0, {}
        for g in self.param_groups:
            for p in g["params"]:
                out[id(p)] = idx
                idx += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [...]}`` as ``torch.optim`` (arrays by reference)."""
        index = self._index()
        groups = []
        for g in self.param_groups:
            gg = {k: v for k, v in g.items() if k != "params"}
            gg["params"] = [index[id(p)] for p in g["params"]]
            groups.append(gg)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (of nnx or, converted to arrays, of torch.optim).

        Every value is checked as the constructor checks it (``lr``, ``eps``, ``betas`` ...), the
        state entries are checked against this optimizer's (``step`` a finite count >= 0, moments
        floating arrays of the parameter's shape), and all is converted before anything is assigned:
        a refused state leaves the optimizer as it was.
        """
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: expected a dict with 'state' and 'param_groups', got {type(state_dict).__name__}")
        new_groups = self._checked_groups(name, state_dict.get("param_groups"))
        raw_state = state_dict.get("state", {})
        if not isinstance(raw_state, dict):
            raise ValueError(f"{name}: 'state' must be a dict of parameter index to dict, got "
                             f"{type(raw_state).__name__}")
        params = [p for g in self.param_groups for p in g["params"]]
        new_state: dict[Parameter, dict[str, Any]] = {}
        for key, st in raw_state.items():
            try:
                i = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: state keys must be parameter indices, got {key!r}") from None
            if isinstance(key, bool) or not 0 <= i < len(params):
                raise ValueError(f"{name}: state for parameter index {key!r} but there are {len(params)}")
            if not isinstance(st, dict):
                raise ValueError(f"{name}: the state of parameter {i} must be a dict, got {type(st).__name__}")
            new_state[params[i]] = self._checked_param_state(name, i, params[i], st)
        self.param_groups = new_groups
        self.state = new_state

    def _checked_groups(self, name: str, groups: Any) -> list[dict[str, Any]]:
        """The parameter groups of a state dict, checked and copied (this optimizer's parameters)."""
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"{name}: expected {len(self.param_groups)} parameter groups, "
                             f"got {len(groups) if isinstance(groups, list) else type(groups).__name__}")
        new_groups = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups, strict=True)):
            if not isinstance(theirs, dict):
                raise ValueError(f"{name}: parameter group {gi} must be a dict, got {type(theirs).__name__}")
            n = len(theirs.get("params", ()))
            if n != len(mine["params"]):
                raise ValueError(f"{name}: a parameter group has {n} parameters in the state dict but "
                                 f"{len(mine['params'])} here")
            missing = sorted(k for k in self.defaults if k not in theirs)
            if missing:
                raise ValueError(f"{name}: parameter group {gi} lacks {missing}, which a {type(self).__name__} "
                                 "has (the state of another optimizer class?)")
            g = {k: copy.deepcopy(v) for k, v in theirs.items() if k != "params"}
            check_hparams(name, g)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            g["params"] = mine["params"]
            new_groups.append(g)
        return new_groups

    def _checked_param_state(self, name: str, i: int, p: Parameter, st: dict[str, Any]) -> dict[str, Any]:
        """One parameter's state, checked against this class's entries and converted to ``p``'s backend."""
        from ..backend import to_numpy

        known = self._state_keys
        if known is not None:
            unknown = sorted(str(k) for k in st if k not in known)
            if unknown:
                raise ValueError(f"{name}: the state of parameter {i} has entries {unknown} that a "
                                 f"{type(self).__name__} does not have (expected some of {sorted(known)}; "
                                 "the state of another optimizer class?)")
        b = backends.backend_of(p.data)
        converted: dict[str, Any] = {}
        for k, v in st.items():
            if k in ("step", "mu_product") and known is not None:
                converted[k] = _checked_count(name, i, k, v)
            elif hasattr(v, "shape"):
                if tuple(v.shape) != tuple(p.shape):
                    raise ValueError(f"{name}: state {k!r} of parameter {i} has shape "
                                     f"{tuple(v.shape)}, the parameter has {p.shape}")
                host = to_numpy(v)
                if "float" not in str(host.dtype):
                    raise ValueError(f"{name}: state {k!r} of parameter {i} has dtype {host.dtype}, "
                                     "expected a floating dtype")
                converted[k] = b.asarray(host, dtype=p.dtype, copy=True)
            elif known is not None and not (v is None and k == "momentum_buffer"):
                raise ValueError(f"{name}: state {k!r} of parameter {i} must be an array of shape {p.shape}, "
                                 f"got {describe(v) if hasattr(v, 'dtype') else type(v).__name__}")
            else:
                converted[k] = copy.deepcopy(v)
        return converted

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k not in ("params", "initial_lr"):
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"


def _checked_count(name: str, i: int, key: str, v: Any) -> float:
    """A ``step`` (finite, >= 0) or ``mu_product`` (finite) state entry as a float."""
    from ..backend import to_numpy

    try:
        f = float(to_numpy(v)) if hasattr(v, "shape") else float(v)
        if isinstance(v, (str, bytes, bool)):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name}: state {key!r} of parameter {i} must be a number, got {v!r}") from None
    if not math.isfinite(f) or (key == "step" and f < 0):
        raise ValueError(f"{name}: state {key!r} of parameter {i} must be a finite number"
                         f"{' >= 0' if key == 'step' else ''}, got {v!r}")
    return f


def multi_tensor_backend(items: list[tuple[Parameter, Any, dict]], kind: str | None = None) -> Any:
    """The backend whose multi-tensor optimizer kernels should update ``items`` at once, or None:
    taken on the device-shaped path of a mutable backend when every parameter lives there, and on
    a host adapter that runs optimizer ``kind`` as one kernel for the group
    (``Backend.multi_tensor_kinds()``; NumPy with its host kernels: Adam and SGD, one C-pool run
    instead of one or more per parameter). Elsewhere the per-parameter steps keep their own thread split."""
    from ..functional._device import device_shaped

    b = backends.backend_of(items[0][0].data)
    if not (b.mutable and (device_shaped(b) or kind in b.multi_tensor_kinds())):
        return None
    if any(backends.backend_of(p.data) is not b for p, _, _ in items):
        return None
    return b


def xp_of(p: Parameter) -> Any:
    return backends.backend_of(p.data).xp
