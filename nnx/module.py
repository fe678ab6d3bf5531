"""Modules and parameters: the building blocks of models, with explicit backpropagation.

A layer is a :class:`Module` whose ``forward`` calls a functional op that returns the output and
a ``backward`` closure. While the module is in training mode and gradient recording is on, the
closure is pushed on the module's tape; :meth:`Module.backward` pops the newest closure, runs it,
accumulates the parameter gradients into ``p.grad`` and returns the gradient for the input.
Calling a module twice before backward (weight tying, unrolled steps) pushes two closures; two
``backward`` calls, newest first, replay them and the parameter gradients add up.

Containers (:class:`~nnx.containers.Sequential`) chain their children's ``backward`` in reverse order. A custom
composite module writes its own ``backward`` the same way; this explicit ``backward`` is where
nnx differs from PyTorch, which records a graph instead.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import nnx_backends as backends

from .backend import get_backend
from .errors import NotRecordedError
from .grad_mode import is_grad_enabled
from .memory_estimate import closure_nbytes
from .module_conveniences import ModuleConveniences
from .parameter import Parameter

#: A module warns once its tape holds this many unconsumed forward passes (a likely leak).
TAPE_WARNING_LENGTH = 10_000
#: A module also warns once two or more unconsumed forward passes keep about this many bytes of
#: arrays alive (estimated at record time from the arrays its backward closures hold).
TAPE_WARNING_BYTES = 64 * 2**20


class TapeGrowthWarning(UserWarning):
    """Forward passes are being recorded in training mode but never consumed by ``backward``."""


#: depth of enclosing training-mode containers in the current forward (see Module.__call__)
_FORCED_RECORDING = [0]


class _OutputSpec(NamedTuple):
    """What a recorded forward produced (kept instead of the output itself, which it does not keep alive)."""

    shape: tuple[int, ...]
    dtype: Any
    array_type: type
    device: Any


def _spec_of(output: Any) -> _OutputSpec | None:
    if not hasattr(output, "shape") or not hasattr(output, "dtype"):
        return None  # outputs that are tuples (recurrent layers) are checked by their own backward
    return _OutputSpec(tuple(output.shape), output.dtype, type(output), getattr(output, "device", None))


def _check_grad_output(where: str, dy: Any, spec: _OutputSpec | None) -> None:
    """Refuse a gradient that does not match the recorded output before anything is consumed:
    broadcasting a (1, F) gradient over a (N, F) output, or a float64 gradient turning float32
    parameter gradients into float64, would otherwise be silently wrong."""
    if spec is None:
        return
    if not hasattr(dy, "shape") or not hasattr(dy, "dtype"):
        raise TypeError(f"{where}.backward: expected the gradient of the output as an array of shape "
                        f"{spec.shape}, got {type(dy).__name__}")
    if type(dy) is not spec.array_type or getattr(dy, "device", None) != spec.device:
        from .errors import BackendMismatchError, describe

        raise BackendMismatchError(
            f"{where}.backward: the output gradient is a {describe(dy)}, but the output was a "
            f"{spec.array_type.__module__}.{spec.array_type.__name__} on {spec.device}; "
            "put it on the output's backend with nnx.asarray(dy, backend=..., device=...)")
    if tuple(dy.shape) != spec.shape:
        raise ValueError(f"{where}.backward: the output gradient has shape {tuple(dy.shape)}, but the output "
                         f"it belongs to has shape {spec.shape}")
    if dy.dtype != spec.dtype:
        raise TypeError(f"{where}.backward: the output gradient has dtype {backends.Backend.dtype_name(dy.dtype)}, "
                        f"but the output has dtype {backends.Backend.dtype_name(spec.dtype)}")


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` found: keys the model has but the dict lacks, and the reverse."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module(ModuleConveniences):
    """Base class of every layer, loss and model.

    Subclasses assign :class:`Parameter` and :class:`Module` attributes in ``__init__`` (after
    ``super().__init__()``), implement ``forward`` and, unless they are leaf layers built on a
    functional op, ``backward``.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_tape", [])
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ attribute registry
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        params, mods, bufs = d["_parameters"], d["_modules"], d["_buffers"]
        if isinstance(value, (Parameter, Module)):
            target = params if isinstance(value, Parameter) else mods
            for store in (params, mods, bufs):
                if store is not target:
                    store.pop(name, None)
            d.pop(name, None)
            target[name] = value  # a re-assigned name keeps its place (backward pairs grads by that order)
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}: cannot assign a {type(value).__name__} to parameter {name!r}; "
                    f"assign a Parameter, None, or set {name}.data"
                )
            params[name] = None
        elif name in bufs:
            bufs[name] = value
        elif name in mods and value is None:
            mods[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for key in ("_parameters", "_modules", "_buffers"):
            store = d.get(key)
            if store is not None and name in store:
                return store[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for key in ("_parameters", "_modules", "_buffers"):
            if name in self.__dict__[key]:
                del self.__dict__[key][name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> None:
        """A non-trainable array that belongs to the state (BatchNorm's running mean, say)."""
        self.__dict__.pop(name, None)
        self._buffers[name] = value
        if not persistent:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or None, for an absent optional parameter such as a bias)."""
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        """Register a child module under ``name``."""
        self._modules[name] = module

    # ------------------------------------------------------------------ forward / backward
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the output; subclasses implement it (call the module, not ``forward``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._modules and self.training and is_grad_enabled():
            # a container in training mode records its children's passes even where a child is in
            # eval() (a frozen BatchNorm or a disabled Dropout): their eval formula is differentiated
            _FORCED_RECORDING[0] += 1
            try:
                out = self.forward(*args, **kwargs)
            finally:
                _FORCED_RECORDING[0] -= 1
        else:
            out = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in list(self._forward_hooks):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook: Callable[[Module, tuple, Any], Any]) -> Callable[[], None]:
        """Call ``hook(module, inputs, output)`` after every forward; returns a remover."""
        self._forward_hooks.append(hook)

        def remove() -> None:
            if hook in self._forward_hooks:
                self._forward_hooks.remove(hook)

        return remove

    @property
    def recording(self) -> bool:
        """True when a forward pass now would record its backward closure: grad mode on, and this
        module or an enclosing one (through which it is being called) in training mode."""
        return (self.training or _FORCED_RECORDING[0] > 0) and is_grad_enabled()

    def record(self, output: Any, backward: Callable, params: tuple[str, ...] = ()) -> Any:
        """Record one forward pass of a leaf op and return its ``output``: the public way to add an op.

        ``backward(dy, input_grad)`` is the op's closure; it returns ``(dx, grads)`` where ``grads``
        holds one gradient (or None) for each name in ``params``, in that order: gradients are paired
        with parameters by name, never by registration order. Nothing is recorded in eval mode or
        under :func:`nnx.no_grad`, so the closure and the activations it holds are dropped at once.

        >>> import nnx
        >>> import nnx.functional as F
        >>> class Scale(nnx.Module):          # y = x * w, written as a leaf op
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = nnx.Parameter(nnx.asarray([2.0]))
        ...     def forward(self, x):
        ...         w = self.w.data
        ...         def backward(dy, input_grad=True):
        ...             dx = dy * w if input_grad else None
        ...             return dx, (nnx.get_backend().xp.sum(dy * x, axis=0),)
        ...         return self.record(x * w, backward, params=("w",))
        >>> m = Scale()
        >>> y = m(nnx.asarray([[1.0], [3.0]]))
        >>> dx = m.backward(nnx.asarray([[1.0], [1.0]]))
        >>> nnx.to_numpy(m.w.grad).tolist(), nnx.to_numpy(dx).tolist()
        ([4.0], [[2.0], [2.0]])

        Not in PyTorch, which records a graph instead.
        """
        if not self.recording:
            return output
        for name in params:
            if name not in self._parameters:
                raise KeyError(f"{type(self).__name__}.record: {name!r} is not a parameter of this module "
                               f"(it has {list(self._parameters)})")
        tape = self._tape
        tape.append((backward, tuple(params), _spec_of(output)))
        n = len(tape)
        if n >= 2 and (n & (n - 1) == 0 or n % 16 == 0):  # estimated at 2, 4, 8, 16, 32, 48, ...: cheap
            self._warn_if_tape_holds_much(n, backward)
        if len(tape) == TAPE_WARNING_LENGTH:
            warnings.warn(
                f"{type(self).__name__} holds {TAPE_WARNING_LENGTH} recorded forward passes that no backward "
                "has consumed, and the activations they keep; run inference under model.eval() or "
                "nnx.no_grad(), or call model.zero_grad() / model.clear_tape() between steps",
                TapeGrowthWarning, stacklevel=3)
        return output

    def _warn_if_tape_holds_much(self, n: int, backward: Callable) -> None:
        """Warn (once per filling of the tape) when ``n`` unconsumed passes hold about TAPE_WARNING_BYTES."""
        warned_at = self.__dict__.get("_tape_bytes_warned")
        if warned_at is not None and warned_at <= n:
            return
        own = {id(p.data) for p in self._parameters.values() if p is not None}  # weights are not activations
        held = n * closure_nbytes(backward, _seen=own)  # this pass's closure as the estimate for each pass
        if held < TAPE_WARNING_BYTES:
            if warned_at is not None:
                object.__setattr__(self, "_tape_bytes_warned", None)  # the tape was emptied since the warning
            return
        object.__setattr__(self, "_tape_bytes_warned", n)
        warnings.warn(
            f"{type(self).__name__} holds {n} recorded forward passes that no backward has consumed, keeping "
            f"about {held / 2**20:.0f} MiB of activations alive; run inference and evaluation under model.eval() "
            "or nnx.no_grad(), or call model.zero_grad() / model.clear_tape() between steps "
            "(threshold: nnx.module.TAPE_WARNING_BYTES)",
            TapeGrowthWarning, stacklevel=4)

    def _pop_record(self) -> tuple[Callable, tuple[str, ...], Any]:
        try:
            return self._tape.pop()
        except IndexError:
            if self._modules and type(self).backward is Module.backward:
                raise NotRecordedError(
                    f"{type(self).__name__}.backward: this module has child modules but no backward of its own. "
                    "Compose it from containers whose backward is derived (nnx.Sequential, nnx.Residual, "
                    "nnx.Parallel, nnx.Graph) or write a backward that calls the children in reverse order "
                    "(see examples/custom_backward.py)"
                ) from None
            raise NotRecordedError(
                f"{type(self).__name__}.backward: no recorded forward pass to differentiate; "
                "run forward in training mode (model.train()) outside nnx.no_grad(), once per backward call"
            ) from None

    def _pop(self) -> Callable:
        """The newest recorded closure (for modules whose own ``backward`` replays it)."""
        return self._pop_record()[0]

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate ``grad_output`` (dL/d output) through the newest recorded forward.

        Fills ``p.grad`` of this module's parameters (adding to what is there) and returns
        dL/d input, or None when ``input_grad`` is False (the first layer of a network, whose
        input is data, skips that product).

        Leaf layers use this default: the closure recorded by :meth:`record` returns
        ``(dx, grads)``, one gradient for each parameter name given to :meth:`record`.
        """
        if self._tape:
            _check_grad_output(type(self).__name__, grad_output, self._tape[-1][2])
        fn, names, _ = self._pop_record()
        dx, grads = fn(grad_output, input_grad)
        if len(grads) != len(names):
            raise RuntimeError(
                f"{type(self).__name__}.backward: the recorded op returned {len(grads)} parameter gradients "
                f"for the {len(names)} parameters it was recorded with {names}")
        params = self._parameters
        for name, g in zip(names, grads, strict=True):
            p = params[name]
            if p is not None:
                p.accumulate_grad(g)
        return dx

    def clear_tape(self) -> None:
        """Drop every recorded forward pass of this module and its children (frees activations)."""
        for m in self.modules():
            m._tape.clear()

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", memo: set | None = None,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for this module and every descendant, depth first, as torch."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        if remove_duplicate:
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, depth first."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for the direct children."""
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        """The direct children."""
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs with PyTorch's dotted names; shared parameters appear once."""
        seen: set[int] = set()
        mods = self.named_modules() if recurse else [("", self)]
        for mod_prefix, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                full = ".".join(s for s in (prefix, mod_prefix, name) if s)
                yield full, p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter (shared ones once), in registration order; pass it to an optimizer."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Any]]:
        """``(name, array)`` for every buffer (running statistics and the like)."""
        mods = self.named_modules() if recurse else [("", self)]
        for mod_prefix, m in mods:
            for name, b in m._buffers.items():
                if b is not None:
                    yield ".".join(s for s in (prefix, mod_prefix, name) if s), b

    def buffers(self, recurse: bool = True) -> Iterator[Any]:
        """Every buffer array."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every submodule (children first) and on self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active, batch statistics, forward passes recorded)."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
            if not mode:
                m._tape.clear()
        return self

    def eval(self) -> Module:
        """Evaluation mode: nothing is recorded, dropout is off, running statistics are used."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient (to None by default) and drop recorded passes."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = backends.backend_of(p.grad).xp.zeros_like(p.grad)  # exact zeros, even from inf/NaN
        self.clear_tape()

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    # ------------------------------------------------------------------ state
    def _state_items(self) -> Iterator[tuple[str, Module, str, str]]:
        """(full key, owning module, local name, 'param' | 'buffer') in PyTorch's state_dict order."""
        for mod_prefix, m in self.named_modules(remove_duplicate=False):  # shared modules under every name
            for name, p in m._parameters.items():
                if p is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), m, name, "param"
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), m, name, "buffer"

    def state_dict(self) -> OrderedDict[str, Any]:
        """Parameters and persistent buffers by PyTorch's keys (``"0.weight"``, ``"bn.running_mean"``).

        Values are the backend arrays themselves (not copies), as in PyTorch.
        """
        out: OrderedDict[str, Any] = OrderedDict()
        for key, m, name, kind in self._state_items():
            out[key] = m._parameters[name].data if kind == "param" else m._buffers[name]
        return out

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` (any backend, NumPy arrays, torch tensors) into the model.

        Every value is checked (shape, numeric kind) and converted to this module's backend,
        device and dtype before any is assigned, so an error leaves the model unchanged. With
        ``strict=True`` missing or unexpected keys raise RuntimeError (as PyTorch); otherwise they are returned.
        """
        from .backend import to_numpy

        items = list(self._state_items())
        own = {key for key, *_ in items}
        given = set(state_dict)
        missing = [k for k, *_ in items if k not in given]
        unexpected = sorted(given - own)
        where = f"{type(self).__name__}.load_state_dict"
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise RuntimeError(f"{where}: " + "; ".join(parts) + " (pass strict=False to load the rest)")
        staged: list[tuple[Module, str, str, Any]] = []
        for key, m, name, kind in items:
            if key not in given:
                continue
            current = m._parameters[name].data if kind == "param" else m._buffers[name]
            value = state_dict[key]
            if isinstance(value, Parameter):
                value = value.data
            shape = tuple(getattr(value, "shape", ()))
            if shape != tuple(current.shape):
                raise ValueError(
                    f"{where}: {key!r} has shape {shape} in the state dict but {tuple(current.shape)} in the model"
                )
            b = backends.backend_of(current)
            cur_kind = backends.Backend.dtype_name(current.dtype)
            try:
                host = to_numpy(value)
            except Exception as exc:
                raise TypeError(f"{where}: {key!r} is not an array ({type(value).__name__}): {exc}") from None
            got_kind = str(host.dtype)
            if _numeric_kind(backends.backend_of(host).xp, host.dtype) != _numeric_kind(b.xp, current.dtype):
                raise TypeError(f"{where}: {key!r} has dtype {got_kind} but the model expects {cur_kind}")
            staged.append((m, name, kind, b.asarray(host, dtype=current.dtype, copy=True)))
        for m, name, kind, arr in staged:
            if kind == "param":
                m._parameters[name].data = arr
            else:
                m._buffers[name] = arr
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ backend, device, dtype
    @property
    def backend(self) -> backends.Backend:
        """The backend the module's parameters live on (the current backend if it has none)."""
        for _, arr in self.state_dict().items():
            return backends.backend_of(arr)
        return get_backend()

    def to(self, backend: str | backends.Backend | None = None, device: Any = None, dtype: Any = None) -> Module:
        """Move parameters and buffers to another backend/device and/or floating dtype, in place.

        >>> model = nnx.Linear(4, 2)
        >>> _ = model.to(dtype="float64"); str(model.weight.dtype)
        'float64'
        >>> # needs a CUDA GPU with CuPy, so not run as a doctest:
        >>> model.to("cupy")                 # doctest: +SKIP

        Gradients move with their parameters. Create optimizers after moving a model (their
        state stays where it was created). Not in PyTorch: the backend argument. Between backends
        on one device (NumPy <-> torch CPU, CuPy <-> torch CUDA) arrays move by DLPack and share
        memory with the old ones (no bytes are copied); see :func:`nnx.from_dlpack` for when a
        copy is made.
        """
        from .dlpack import from_dlpack

        if backend is None and device is None and dtype is None:
            return self
        if isinstance(backend, str) and device is None and ":" in backend:
            backend, _, device = backend.partition(":")
        src = self.backend
        target = backends.get(backend if backend is not None else src.name,
                              device if device is not None else (None if backend is not None else src.device))
        if isinstance(dtype, str) and dtype not in ("float16", "float32", "float64", "bfloat16"):
            raise ValueError(f"{type(self).__name__}.to: dtype must be a floating dtype name, got {dtype!r}")

        def convert(arr: Any) -> Any:
            if arr is None:
                return None
            floating = backends.backend_of(arr).xp.isdtype(arr.dtype, "real floating")
            want = target.dtype(dtype) if (dtype is not None and floating) else None
            if target.owns(arr) and target.device_of(arr) == target.device:
                if want is None or arr.dtype == want:
                    return arr
                return target.xp.astype(arr, want)
            moved = from_dlpack(arr, backend=target)  # one device: shares memory, no bytes move (nnx/dlpack.py)
            return moved if want is None or moved.dtype == want else target.xp.astype(moved, want)

        staged, staged_buffers = [], []  # convert everything first: a failure leaves the model as it was
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    staged.append((p, convert(p.data), convert(p.grad)))
            for name, b in list(m._buffers.items()):
                staged_buffers.append((m, name, convert(b)))
        for p, data, grad in staged:
            p.data, p.grad = data, grad
        for m, name, b in staged_buffers:
            m._buffers[name] = b
        self.clear_tape()
        return self

    def double(self) -> Module:
        """Convert floating parameters and buffers to float64 (in place); returns self."""
        return self.to(dtype="float64")

    def float(self) -> Module:
        """Convert floating parameters and buffers to float32 (in place); returns self."""
        return self.to(dtype="float32")

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        """The layer's settings shown inside its ``repr`` (override in subclasses)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        head = f"{type(self).__name__}("
        if not lines:
            return head + ")"
        if len(lines) == 1 and extra:  # torch's layout: a one-line extra_repr stays inline
            return head + extra + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _numeric_kind(xp: Any, dtype: Any) -> str:
    """``"float"``, ``"int"`` or the dtype's name: what a loaded array may be converted from."""
    if xp.isdtype(dtype, "real floating"):
        return "float"
    if xp.isdtype(dtype, "integral"):
        return "int"
    return backends.Backend.dtype_name(dtype)
