"""Combinators: compose modules without writing a backward.

Merge ops (:class:`Add`, :class:`Mul`, :class:`Concat`, :class:`Stack`) take several inputs and
their ``backward`` returns one gradient per input, as a tuple; :class:`Split` and :class:`Chunk`
return a tuple and their ``backward`` takes one gradient per piece (None for a piece that got
none). :class:`Residual` and :class:`Parallel` derive their backward from their children's.

>>> import nnx
>>> block = nnx.Residual(nnx.Sequential(nnx.Linear(4, 4), nnx.ReLU(), nnx.Linear(4, 4)))
>>> y = block(nnx.asarray([[1.0, 2.0, 3.0, 4.0]]))
>>> dx = block.backward(nnx.asarray([[1.0, 1.0, 1.0, 1.0]]))
>>> tuple(dx.shape)
(1, 4)
>>> two_towers = nnx.Parallel(nnx.Linear(4, 2), nnx.Linear(4, 3), merge="concat", dim=1)
>>> tuple(two_towers(nnx.asarray([[1.0, 2.0, 3.0, 4.0]])).shape)
(1, 5)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from ..module import Module

__all__ = ["Add", "Chunk", "Concat", "Mul", "Parallel", "Residual", "Split", "Stack"]


def _check_inputs(where: str, inputs: Sequence[Any], same_shape: bool) -> Any:
    if len(inputs) < 1:
        raise TypeError(f"{where}: expected at least one input array, got none")
    first = inputs[0]
    for i, x in enumerate(inputs):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{where}: input {i} is a {type(x).__name__}, expected an array")
        if type(x) is not type(first):
            raise TypeError(f"{where}: input {i} is a {type(x).__module__}.{type(x).__name__} but input 0 is a "
                            f"{type(first).__module__}.{type(first).__name__}; put both on one backend")
        if x.dtype != first.dtype:
            raise TypeError(f"{where}: input {i} has dtype {x.dtype} but input 0 has {first.dtype}")
        if same_shape and tuple(x.shape) != tuple(first.shape):
            raise ValueError(f"{where}: every input must have the shape of input 0, {tuple(first.shape)}; "
                             f"input {i} has {tuple(x.shape)}")
    return backends.backend_of(first).xp


def _axis(where: str, dim: int, ndim: int) -> int:
    if not -ndim <= dim < ndim:
        raise ValueError(f"{where}: dim {dim} is out of range for inputs with {ndim} dimensions")
    return dim % ndim


class Add(Module):
    """``y = x_1 + x_2 + ...`` of inputs of one shape; backward returns ``(dy, dy, ...)``."""

    def forward(self, *inputs: Any) -> Any:
        _check_inputs("Add", inputs, same_shape=True)
        y = inputs[0]
        for x in inputs[1:]:
            y = y + x
        n = len(inputs)
        return self.record(y, lambda dy, input_grad=True: ((dy,) * n, ()))


class Mul(Module):
    """``y = x_1 * x_2 * ...`` elementwise; backward returns ``dy * prod(x_j, j != i)`` for each input."""

    def forward(self, *inputs: Any) -> Any:
        _check_inputs("Mul", inputs, same_shape=True)
        y = inputs[0]
        for x in inputs[1:]:
            y = y * x

        def backward(dy: Any, input_grad: bool = True) -> tuple[tuple, tuple]:
            grads = []
            for i in range(len(inputs)):
                g = dy
                for j, x in enumerate(inputs):
                    if j != i:
                        g = g * x
                grads.append(g)
            return tuple(grads), ()

        return self.record(y, backward)


class Concat(Module):
    """Concatenate the inputs along ``dim`` (``torch.cat``); backward slices the gradient back."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, *inputs: Any) -> Any:
        xp = _check_inputs(f"Concat(dim={self.dim})", inputs, same_shape=False)
        axis = _axis(f"Concat(dim={self.dim})", self.dim, inputs[0].ndim)
        sizes = [int(x.shape[axis]) for x in inputs]
        y = xp.concat(list(inputs), axis=axis)

        def backward(dy: Any, input_grad: bool = True) -> tuple[tuple, tuple]:
            out, start = [], 0
            for s in sizes:
                index = [slice(None)] * dy.ndim
                index[axis] = slice(start, start + s)
                out.append(dy[tuple(index)])
                start += s
            return tuple(out), ()

        return self.record(y, backward)


class Stack(Module):
    """Stack inputs of one shape along a new ``dim`` (``torch.stack``); backward unstacks the gradient."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, *inputs: Any) -> Any:
        xp = _check_inputs(f"Stack(dim={self.dim})", inputs, same_shape=True)
        axis = _axis(f"Stack(dim={self.dim})", self.dim, inputs[0].ndim + 1)
        y = xp.stack(list(inputs), axis=axis)
        n = len(inputs)

        def backward(dy: Any, input_grad: bool = True) -> tuple[tuple, tuple]:
            return tuple(dy[(slice(None),) * axis + (i, ...)] for i in range(n)), ()

        return self.record(y, backward)


class _Pieces(Module):
    """Shared forward/backward of Split and Chunk: cut ``x`` along ``dim`` into the given sizes."""

    dim: int

    def _sizes(self, length: int) -> list[int]:
        raise NotImplementedError

    def forward(self, input: Any) -> tuple:
        where = f"{type(self).__name__}({self.extra_repr()})"
        xp = _check_inputs(where, [input], same_shape=False)
        axis = _axis(where, self.dim, input.ndim)
        sizes = self._sizes(int(input.shape[axis]))
        pieces, start = [], 0
        for s in sizes:
            index = [slice(None)] * input.ndim
            index[axis] = slice(start, start + s)
            pieces.append(input[tuple(index)])
            start += s
        shapes = [tuple(p.shape) for p in pieces]
        dtype, device = input.dtype, backends.backend_of(input).device_of(input)

        def backward(grads: Any, input_grad: bool = True) -> tuple[Any, tuple]:
            if not isinstance(grads, (tuple, list)) or len(grads) != len(shapes):
                raise ValueError(f"{where}.backward: expected a tuple of {len(shapes)} gradients (None allowed), "
                                 f"one per piece, got {type(grads).__name__}"
                                 f"{f' of {len(grads)}' if isinstance(grads, (tuple, list)) else ''}")
            full = [g if g is not None else xp.zeros(s, dtype=dtype, device=device) for g, s in zip(grads, shapes,
                                                                                                  strict=True)]
            return xp.concat(full, axis=axis), ()

        self.record(None, backward)
        return tuple(pieces)


class Split(_Pieces):
    """``torch.split``: pieces of ``split_size_or_sections`` along ``dim`` (an int: equal pieces, the last
    smaller; a list: those sizes). Returns a tuple; backward takes a tuple of gradients (None allowed)."""

    def __init__(self, split_size_or_sections: int | Sequence[int], dim: int = 0) -> None:
        super().__init__()
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections < 1:
                raise ValueError(f"Split: split_size must be a positive int, got {split_size_or_sections}")
        elif not all(isinstance(s, int) and s >= 0 for s in split_size_or_sections):
            raise ValueError(f"Split: sections must be non-negative ints, got {split_size_or_sections!r}")
        self.split_size_or_sections = split_size_or_sections
        self.dim = dim

    def extra_repr(self) -> str:
        return f"split_size_or_sections={self.split_size_or_sections!r}, dim={self.dim}"

    def _sizes(self, length: int) -> list[int]:
        s = self.split_size_or_sections
        if isinstance(s, int):
            return [min(s, length - i) for i in range(0, length, s)] or [0]
        if sum(s) != length:
            raise ValueError(f"Split(sections={list(s)}): the sections add up to {sum(s)}, but dimension "
                             f"{self.dim} has size {length}")
        return list(s)


class Chunk(_Pieces):
    """``torch.chunk``: ``chunks`` pieces of ceil(size / chunks) along ``dim`` (fewer when the size is small)."""

    def __init__(self, chunks: int, dim: int = 0) -> None:
        super().__init__()
        if not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"Chunk: chunks must be a positive int, got {chunks!r}")
        self.chunks, self.dim = chunks, dim

    def extra_repr(self) -> str:
        return f"chunks={self.chunks}, dim={self.dim}"

    def _sizes(self, length: int) -> list[int]:
        step = -(-length // self.chunks) if length else 1
        return [min(step, length - i) for i in range(0, length, step)] or [0]


_MERGES: dict[str, Callable[[int], Module]] = {
    "concat": lambda dim: Concat(dim),
    "add": lambda dim: Add(),
    "mul": lambda dim: Mul(),
    "stack": lambda dim: Stack(dim),
}


class Residual(Module):
    """``y = block(x) + shortcut(x)``, the identity shortcut by default (ResNet's skip connection).

    The shortcut may be any module, e.g. a 1x1 ``Conv2d`` + ``BatchNorm2d`` downsample.
    Backward is derived: ``dx = block.backward(dy) + shortcut.backward(dy)`` (``+ dy`` for identity).
    Not in ``torch.nn``, where the addition is written in ``forward`` and autograd derives it.
    """

    def __init__(self, block: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        if not isinstance(block, Module) or (shortcut is not None and not isinstance(shortcut, Module)):
            raise TypeError(f"Residual: block and shortcut must be nnx Modules, got {type(block).__name__} and "
                            f"{type(shortcut).__name__}")
        self.block = block
        self.shortcut = shortcut

    def forward(self, input: Any) -> Any:
        y = self.block(input)
        skip = input if self.shortcut is None else self.shortcut(input)
        if tuple(y.shape) != tuple(skip.shape):
            raise ValueError(f"Residual: the block's output has shape {tuple(y.shape)} but the shortcut gives "
                             f"{tuple(skip.shape)}; give a shortcut that matches (e.g. a strided 1x1 Conv2d)")
        return y + skip

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        skip = grad_output if self.shortcut is None else self.shortcut.backward(grad_output, input_grad=input_grad)
        body = self.block.backward(grad_output, input_grad=input_grad)
        if not input_grad:
            return None
        return body + skip


class Parallel(Module):
    """Run every branch on the same input and merge the outputs (Inception blocks, two-tower models).

    ``merge`` is ``"concat"`` (along ``dim``), ``"add"``, ``"mul"``, ``"stack"`` (along ``dim``) or a
    Module taking one input per branch whose ``backward`` returns one gradient per branch (as
    :class:`Concat`). Backward is derived; the gradients of the branches add up at the input.
    """

    def __init__(self, *branches: Module, merge: str | Module = "concat", dim: int = 1) -> None:
        super().__init__()
        if not branches or not all(isinstance(b, Module) for b in branches):
            raise TypeError("Parallel: expected one or more nnx Modules as branches, got "
                            f"{[type(b).__name__ for b in branches]}")
        if isinstance(merge, str):
            if merge not in _MERGES:
                raise ValueError(f"Parallel: merge must be one of {sorted(_MERGES)} or a Module, got {merge!r}")
            merge_module = _MERGES[merge](dim)
        elif isinstance(merge, Module):
            merge_module = merge
        else:
            raise TypeError(f"Parallel: merge must be a string or an nnx Module with a backward, got "
                            f"{type(merge).__name__}")
        for i, b in enumerate(branches):
            self.add_module(str(i), b)
        self.merge = merge_module
        self._branches = list(branches)

    def forward(self, input: Any) -> Any:
        return self.merge(*[b(input) for b in self._branches])

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        grads = self.merge.backward(grad_output)
        if not isinstance(grads, tuple) or len(grads) != len(self._branches):
            raise ValueError(f"Parallel: the merge module's backward must return one gradient per branch "
                             f"({len(self._branches)}), got {type(grads).__name__}")
        dx = None
        for b, g in zip(reversed(self._branches), reversed(grads), strict=True):
            d = b.backward(g, input_grad=input_grad)
            if input_grad:
                dx = d if dx is None else dx + d
        return dx
