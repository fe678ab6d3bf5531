"""PyTorch's ``nn.Module`` conveniences for :class:`nnx.Module`: ``get_submodule``, ``half``, ``cpu``,
``cuda`` and ``register_full_backward_hook``, and nnx's ``raise_deferred_errors``. A mixin, so that
``module.py`` keeps the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends


class ModuleConveniences:
    """Methods mixed into :class:`nnx.Module` (see each docstring)."""

    def raise_deferred_errors(self) -> None:
        """Raise the input errors that this module and its children recorded on the device.

        Checks that would need a device-to-host copy every step on a GPU (an ``Embedding`` token id
        out of range) are recorded as device flags instead; this reads them (one small copy per
        flag), clears them and raises the first error found. On host-memory backends the checks
        raise at once and this does nothing. ``nnx.fit`` calls it at every log step; call it in a
        hand-written loop wherever the loss is read anyway.

        >>> import nnx
        >>> model = nnx.Sequential(nnx.Embedding(10, 4), nnx.Flatten(), nnx.Linear(8, 2))
        >>> _ = model(nnx.asarray([[1, 2]]))
        >>> model.raise_deferred_errors()   # nothing recorded: returns None
        """
        for m in self.modules():  # type: ignore[attr-defined]
            check = getattr(m, "_raise_deferred", None)
            if check is not None:
                check()

    def get_submodule(self, target: str) -> Any:
        """The submodule at the dotted path ``target`` (``""`` is the module itself), as in PyTorch.

        >>> import nnx
        >>> model = nnx.Sequential(nnx.Linear(2, 3), nnx.Sequential(nnx.Tanh(), nnx.Linear(3, 1)))
        >>> model.get_submodule("1.1")
        Linear(in_features=3, out_features=1, bias=True)
        """
        if target == "":
            return self
        mod: Any = self
        for i, item in enumerate(target.split(".")):
            children = mod.__dict__.get("_modules", {})
            if item not in children or children[item] is None:
                where = ".".join(target.split(".")[:i]) or "the module"
                raise AttributeError(f"{type(mod).__name__} ({where}) has no submodule {item!r} "
                                     f"(looking up {target!r}); it has {list(children)}")
            mod = children[item]
        return mod

    def half(self) -> Any:
        """Convert floating parameters and buffers to float16 (in place); returns self."""
        return self.to(dtype="float16")  # type: ignore[attr-defined]

    def cpu(self) -> Any:
        """Move the module to the CPU: ``to("torch", device="cpu")`` on torch, ``to("numpy")`` from CuPy;
        a module already on a CPU backend (numpy, array_api_strict) is returned as is."""
        b = self.backend  # type: ignore[attr-defined]
        if b.name == "torch":
            return self.to("torch", device="cpu")  # type: ignore[attr-defined]
        if b.name == "cupy":
            return self.to("numpy")  # type: ignore[attr-defined]
        return self

    def cuda(self, device: int | str | None = None) -> Any:
        """Move the module to a CUDA GPU: torch's CUDA device when the module is on torch, else CuPy.

        ``device`` is a GPU index (default 0). Raises a clear error when no usable GPU backend exists.
        Not quite PyTorch: from NumPy the module moves to the CuPy backend.
        """
        b = self.backend  # type: ignore[attr-defined]
        index = 0 if device is None else device
        if b.name == "torch":
            target = ("torch", index if isinstance(index, str) else f"cuda:{index}")
        elif b.name in ("numpy", "cupy"):
            target = ("cupy", index)
        else:
            raise RuntimeError(f"{type(self).__name__}.cuda: the {b.name!r} backend has no CUDA device; "
                               "use model.to('cupy') or model.to('torch', device='cuda:0')")
        try:
            return self.to(target[0], device=target[1])  # type: ignore[attr-defined]
        except backends.BackendUnavailable as e:
            raise RuntimeError(f"{type(self).__name__}.cuda: no usable CUDA device for backend {target[0]!r}: "
                               f"{e}") from None

    def register_full_backward_hook(self, hook: Callable[[Any, tuple, tuple], Any]) -> Callable[[], None]:
        """Call ``hook(module, grad_input, grad_output)`` after each ``backward`` of this module.

        ``grad_input`` is a tuple of the gradients ``backward`` returns (dL/d input; ``(None,)`` with
        ``input_grad=False``), ``grad_output`` a tuple of the gradients it was given. A hook may return
        a tuple that replaces ``grad_input``. Works for leaf layers and containers alike, since nnx
        calls ``backward`` explicitly. Returns a function that removes the hook.
        """
        hooks = self.__dict__.setdefault("_backward_hooks", [])
        hooks.append(hook)
        if "backward" not in self.__dict__:
            original = type(self).backward.__get__(self)  # type: ignore[attr-defined]

            def backward(*grad_outputs: Any, **kwargs: Any) -> Any:
                result = original(*grad_outputs, **kwargs)
                grad_input = result if isinstance(result, tuple) else (result,)
                for h in list(self.__dict__.get("_backward_hooks", ())):
                    new = h(self, grad_input, tuple(grad_outputs))
                    if new is not None:
                        grad_input = tuple(new) if isinstance(new, (tuple, list)) else (new,)
                return grad_input if isinstance(result, tuple) else grad_input[0]

            backward.__doc__ = original.__doc__
            object.__setattr__(self, "backward", backward)

        def remove() -> None:
            if hook in hooks:
                hooks.remove(hook)
            if not hooks:
                self.__dict__.pop("backward", None)

        return remove
