"""Containers whose backward is derived: :class:`Sequential`, :class:`ModuleList`, :class:`ModuleDict`.

``Sequential`` chains its children's ``backward`` in reverse order (after checking that every leaf
recorded its forward, so a failure writes no gradient) and applies the peephole fusions of
:data:`PAIR_FUSIONS` (on the device-shaped path, and on a host adapter for the activations its
kernels run).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import NotRecordedError
from .module import Module

__all__ = ["PAIR_FUSIONS", "ModuleDict", "ModuleList", "Sequential"]


def _check_all_recorded(module: Module, path: str) -> None:
    """Raise NotRecordedError, naming the submodule, if a leaf layer under ``module`` that uses the default
    backward has no recorded forward. Modules with a backward of their own are trusted to check theirs."""
    for name, child in module.named_children():
        where = f"{path}.{name}"
        if type(child).backward is Module.backward:
            if not child._tape and not child._modules:
                raise NotRecordedError(
                    f"{type(child).__name__}.backward: no recorded forward pass to differentiate (at {where}); run "
                    "forward in training mode (model.train()) outside nnx.no_grad(), and do not switch a layer to "
                    "eval() between forward and backward; no gradient was written")
        elif isinstance(child, Sequential):
            _check_all_recorded(child, where)


#: Peephole fusions :class:`Sequential` applies to adjacent children: each rule ``rule(first, second)``
#: returns a function running both on one input (recording both, so ``backward`` is unchanged) or None.
#: The layers package registers them (``nnx/layers/linear.py``: Linear + activation on the
#: device-shaped path and where a host adapter's kernels run the activation). Children with hooks
#: are never fused.
PAIR_FUSIONS: list[Callable[[Module, Module], Callable[[Any], Any] | None]] = []


def _hooked(m: Module) -> bool:
    return bool(m._forward_hooks) or "backward" in m.__dict__


class Sequential(Module):
    """Modules applied in order; ``backward`` runs their backward passes in reverse order.

    >>> import numpy as np
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    >>> x, dy = nnx.asarray(np.ones((3, 4))), nnx.asarray(np.ones((3, 2)))
    >>> y = model(x); dx = model.backward(dy)
    >>> tuple(y.shape), tuple(dx.shape)
    ((3, 2), (3, 4))

    Also accepts an ``OrderedDict`` of named modules, as in PyTorch.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                self.add_module(str(name), m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)
        self._seq: list[Module] = list(self._modules.values())

    def add_module(self, name: str, module: Module | None) -> None:
        super().add_module(name, module)
        if "_seq" in self.__dict__:
            self._seq = list(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._seq)

    def __getitem__(self, idx: int | slice) -> Module:
        if isinstance(idx, slice):  # keeps the original names, as torch
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return self._seq[idx]

    def forward(self, input: Any) -> Any:
        """Apply the modules in order (adjacent pairs that a rule of :data:`PAIR_FUSIONS` fuses run as one)."""
        x = input  # PyTorch's argument name (m(input=t) works)
        seq = self._seq
        if not PAIR_FUSIONS or len(seq) < 2:
            for m in seq:
                x = m(x)
            return x
        i, n = 0, len(seq)
        while i < n:
            m = seq[i]
            if i + 1 < n and not _hooked(m) and not _hooked(seq[i + 1]):
                fused = next((f for f in (rule(m, seq[i + 1]) for rule in PAIR_FUSIONS) if f is not None), None)
                if fused is not None:
                    x = fused(x)
                    i += 2
                    continue
            x = m(x)
            i += 1
        return x

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate through the children in reverse order (derived; nothing to write).

        Every leaf below is checked for a recorded forward first, so a child switched to eval()
        between forward and backward raises before any gradient is written (all or nothing).
        """
        seq = self._seq
        _check_all_recorded(self, type(self).__name__)
        for m in reversed(seq[1:]):
            grad_output = m.backward(grad_output)
        return seq[0].backward(grad_output, input_grad=input_grad) if seq else grad_output


class ModuleList(Module):
    """A list of modules registered as children (for models that loop over layers)."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        for m in modules or ():
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Add every module of ``modules`` at the end; returns self."""
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, idx: int | slice) -> Module | ModuleList:
        if isinstance(idx, slice):  # a ModuleList, as torch
            return ModuleList(list(self._modules.values())[idx])
        return list(self._modules.values())[idx]


class ModuleDict(Module):
    """A dict of modules registered as children."""

    def __init__(self, modules: dict[str, Module] | None = None) -> None:
        super().__init__()
        for k, m in (modules or {}).items():
            self.add_module(k, m)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> Iterable[str]:
        """The names, in insertion order."""
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        """The modules, in insertion order."""
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        """``(name, module)`` pairs, in insertion order."""
        return self._modules.items()
