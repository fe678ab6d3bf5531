"""A container for any directed acyclic graph of modules, with a derived backward.

The API is an explicit node list, as Keras' functional API reads: name the inputs, then add
nodes that say which named values they consume, then name the outputs. We chose it over
tracing an ordinary Python ``forward``: a node list is plain data (it can be printed, checked for
cycles and unknown names when it is built, and its backward order is visible), and it needs no
proxy arrays that would have to mimic every array operation of every backend.

>>> import nnx
>>> g = nnx.Graph(inputs=["x"])
>>> g.add("fc1", nnx.Linear(4, 4), "x")
'fc1'
>>> g.add("act", nnx.Tanh(), "fc1")
'act'
>>> g.add("skip", nnx.Add(), "act", "x")          # a skip connection: x is used twice
'skip'
>>> g.add("halves", nnx.Chunk(2, dim=1), "skip")  # several outputs: refer to them as "halves:0"
'halves'
>>> g.set_outputs("halves:0", "halves:1")
>>> a, b = g(nnx.asarray([[1.0, 2.0, 3.0, 4.0]]))
>>> dx = g.backward((nnx.asarray([[1.0, 1.0]]), None))   # None: no gradient for that output
>>> tuple(dx.shape)
(1, 4)

Backward runs the nodes in reverse order of the forward; gradients of a value consumed by
several nodes add up, a module used at several nodes (weight sharing) accumulates its
parameter gradients, and a missing output gradient counts as zero. A graph records each call,
so it can be called several times before as many backward calls, newest first.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import nnx_backends as backends

from ..errors import NotRecordedError
from ..module import Module

__all__ = ["Graph"]


class _Node(NamedTuple):
    name: str
    module: Module
    inputs: tuple[str, ...]


class Graph(Module):
    """A DAG of modules with named inputs and outputs; its backward is derived from the nodes'.

    Args:
        inputs: names of the graph's inputs, in the order ``forward`` takes them (or by keyword).
        nodes: optional ``(name, module, input_names)`` triples, added in order with :meth:`add`.
        outputs: optional output names (see :meth:`set_outputs`).

    A value is named by its node (``"fc1"``) or an input (``"x"``); the i-th element of a node that
    returns a tuple is ``"node:i"``. Not in ``torch.nn``, where autograd derives this from ``forward``.
    """

    def __init__(self, inputs: list[str] | tuple[str, ...], nodes: list | None = None,
                 outputs: list[str] | tuple[str, ...] | None = None) -> None:
        super().__init__()
        if isinstance(inputs, str) or not inputs or not all(isinstance(n, str) for n in inputs):
            raise TypeError(f"Graph: inputs must be a non-empty list of names, got {inputs!r}")
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"Graph: input names must be unique, got {list(inputs)}")
        object.__setattr__(self, "_inputs", tuple(inputs))
        object.__setattr__(self, "_nodes", [])
        object.__setattr__(self, "_outputs", ())
        for node in nodes or []:
            if not (isinstance(node, (tuple, list)) and len(node) == 3):
                raise TypeError(f"Graph: each node must be (name, module, input_names), got {node!r}")
            name, module, ins = node
            self.add(name, module, *((ins,) if isinstance(ins, str) else ins))
        if outputs is not None:
            self.set_outputs(*outputs)

    # ------------------------------------------------------------------ building
    def _known(self) -> set[str]:
        return set(self._inputs) | {n.name for n in self._nodes}

    def _check_ref(self, ref: str, what: str) -> None:
        base, sep, index = ref.partition(":")
        if base not in self._known():
            raise KeyError(f"Graph: {what} refers to {ref!r}, which is neither an input {list(self._inputs)} nor an "
                           f"earlier node {[n.name for n in self._nodes]} (nodes must be added after what they "
                           "consume, so a graph cannot have a cycle)")
        if sep and not index.isdigit():
            raise KeyError(f"Graph: {what}: {ref!r} must be 'node:i' with an integer i")

    def add(self, name: str, module: Module, *inputs: str) -> str:
        """Add node ``name`` computing ``module(*values of inputs)``; returns ``name``.

        Every input must be a graph input or an earlier node, so cycles cannot be built.
        The same module may be added under several names (weight sharing).
        """
        if not isinstance(name, str) or not name or ":" in name or "." in name:
            raise ValueError(f"Graph.add: node names are non-empty strings without ':' or '.', got {name!r}")
        if name in self._known():
            raise ValueError(f"Graph.add: the name {name!r} is already used")
        if not isinstance(module, Module):
            raise TypeError(f"Graph.add({name!r}): expected an nnx Module, got {type(module).__name__}")
        if not inputs:
            raise ValueError(f"Graph.add({name!r}): a node needs at least one input name")
        for ref in inputs:
            self._check_ref(ref, f"node {name!r}")
        self._nodes.append(_Node(name, module, tuple(inputs)))
        self.add_module(name, module)
        return name

    def set_outputs(self, *names: str) -> None:
        """Name the graph's outputs: one name returns an array, several a tuple."""
        if not names:
            raise ValueError("Graph.set_outputs: give at least one output name")
        for ref in names:
            self._check_ref(ref, "an output")
        object.__setattr__(self, "_outputs", tuple(names))

    def extra_repr(self) -> str:
        lines = [f"inputs={list(self._inputs)}"]
        lines += [f"{n.name} <- {', '.join(n.inputs)}" for n in self._nodes]
        lines.append(f"outputs={list(self._outputs)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ forward / backward
    def _bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        if len(args) + len(kwargs) != len(self._inputs):
            raise TypeError(f"Graph: expected {len(self._inputs)} inputs {list(self._inputs)}, got "
                            f"{len(args)} positional and {sorted(kwargs)} by name")
        values = dict(zip(self._inputs, args, strict=False))
        for k, v in kwargs.items():
            if k not in self._inputs:
                raise TypeError(f"Graph: unknown input name {k!r}; the inputs are {list(self._inputs)}")
            if k in values:
                raise TypeError(f"Graph: input {k!r} given twice")
            values[k] = v
        return values

    @staticmethod
    def _get(values: dict[str, Any], ref: str) -> Any:
        base, sep, index = ref.partition(":")
        v = values[base]
        if sep:
            if not isinstance(v, tuple) or int(index) >= len(v):
                raise IndexError(f"Graph: {ref!r}: node {base!r} did not return a tuple with element {index}")
            return v[int(index)]
        return v

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._outputs:
            raise RuntimeError("Graph: no outputs; call set_outputs(...) before using the graph")
        values = self._bind(args, kwargs)
        for node in self._nodes:
            values[node.name] = node.module(*[self._get(values, r) for r in node.inputs])
        outs = tuple(self._get(values, r) for r in self._outputs)
        if self.recording:  # the graph's own record: what each value looked like
            self._tape.append({name: _spec(v) for name, v in values.items()})
        return outs[0] if len(outs) == 1 else outs

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate one gradient per output (a tuple, or a dict by output name; None counts as zero).

        Returns the gradient of the single input, or a tuple with one per input.
        """
        if not self._tape:
            raise NotRecordedError("Graph.backward: no recorded forward pass to differentiate; run forward in "
                                   "training mode (model.train()) outside nnx.no_grad(), once per backward call")
        grads = self._output_grads(grad_output)
        specs = self._tape.pop()
        for node in reversed(self._nodes):
            g = self._node_grad(node, grads.pop(node.name, None), specs)
            needs = input_grad or any(r.partition(":")[0] not in self._inputs for r in node.inputs)
            if len(node.inputs) == 1:
                dx = node.module.backward(g, input_grad=needs)
                parts = (dx,)
            else:
                parts = node.module.backward(g)
                if not isinstance(parts, tuple) or len(parts) != len(node.inputs):
                    raise ValueError(f"Graph: node {node.name!r} ({type(node.module).__name__}) takes "
                                     f"{len(node.inputs)} inputs, so its backward must return a tuple of "
                                     f"{len(node.inputs)} gradients, got {type(parts).__name__}")
            for ref, d in zip(node.inputs, parts, strict=True):
                if d is not None:
                    _accumulate(grads, ref, d)
        if not input_grad:
            return None
        out = tuple(self._input_grad(name, grads.get(name), specs) for name in self._inputs)
        return out[0] if len(out) == 1 else out

    def _output_grads(self, grad_output: Any) -> dict[str, Any]:
        n = len(self._outputs)
        if isinstance(grad_output, dict):
            unknown = sorted(set(grad_output) - set(self._outputs))
            if unknown:
                raise KeyError(f"Graph.backward: gradients given for {unknown}, which are not outputs "
                               f"{list(self._outputs)}")
            given = [grad_output.get(name) for name in self._outputs]
        elif n == 1:
            given = [grad_output]
        elif isinstance(grad_output, (tuple, list)) and len(grad_output) == n:
            given = list(grad_output)
        else:
            got = len(grad_output) if isinstance(grad_output, (tuple, list)) else 1
            raise ValueError(f"Graph.backward: the graph has {n} outputs {list(self._outputs)}; expected {n} "
                             f"gradients (a tuple or a dict by name, None allowed), got {got}")
        grads: dict[str, Any] = {}
        for ref, g in zip(self._outputs, given, strict=True):
            if g is not None:
                _accumulate(grads, ref, g)
        return grads

    def _node_grad(self, node: _Node, g: Any, specs: dict[str, Any]) -> Any:
        """The gradient of a node's output; zeros where nothing flowed back (its record must still be consumed)."""
        spec = specs[node.name]
        if isinstance(spec, tuple) and not isinstance(spec, _ArraySpec):  # a node returning a tuple
            parts = g if isinstance(g, dict) else {}
            return tuple(parts.get(i) for i in range(len(spec)))
        return g if g is not None else _zeros(spec)

    def _input_grad(self, name: str, g: Any, specs: dict[str, Any]) -> Any:
        return g if g is not None else _zeros(specs[name])


class _ArraySpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: Any
    backend: Any


def _spec(v: Any) -> Any:
    if isinstance(v, tuple):
        return tuple(_spec(x) for x in v)
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        b = backends.backend_of(v)
        return _ArraySpec(tuple(v.shape), v.dtype, (b, b.device_of(v)))
    return None


def _zeros(spec: Any) -> Any:
    if not isinstance(spec, _ArraySpec):
        return None
    b, device = spec.backend
    return b.xp.zeros(spec.shape, dtype=spec.dtype, device=device)


def _accumulate(grads: dict[str, Any], ref: str, g: Any) -> None:
    base, sep, index = ref.partition(":")
    if sep:
        parts = grads.setdefault(base, {})
        if not isinstance(parts, dict):
            raise TypeError(f"Graph: value {base!r} is used both whole and by element")
        i = int(index)
        parts[i] = g if i not in parts else parts[i] + g
    else:
        grads[base] = g if base not in grads else grads[base] + g
