"""ONNX converters of the combinators: Residual, Parallel and the merge layers (Add, Mul, Concat, Stack)."""

from __future__ import annotations

from typing import Any

from ..layers import Add, Concat, Mul, Parallel, Residual, Stack
from .builder import GraphBuilder, register_converter


@register_converter(Residual)
def residual(g: GraphBuilder, module: Residual, inputs: list[str]) -> str:
    """``block(x) + shortcut(x)`` (``+ x`` for the identity shortcut)."""
    x = inputs[0]
    y = g.convert(module.block, [x])
    skip = x if module.shortcut is None else g.convert(module.shortcut, [x])
    return g.node("Add", [y, skip])


@register_converter(Parallel)
def parallel(g: GraphBuilder, module: Parallel, inputs: list[str]) -> Any:
    """Every branch on the same input, then the merge module on the branch outputs."""
    branches = [child for name, child in module.named_children() if name != "merge"]
    outs = [g.convert(b, inputs[:1]) for b in branches]
    return g.convert(module.merge, outs)


def _chain(g: GraphBuilder, op: str, inputs: list[str]) -> str:
    y = inputs[0]
    for x in inputs[1:]:
        y = g.node(op, [y, x])
    return y


@register_converter(Add)
def add(g: GraphBuilder, module: Add, inputs: list[str]) -> str:
    """Elementwise sum of the inputs."""
    return _chain(g, "Add", inputs)


@register_converter(Mul)
def mul(g: GraphBuilder, module: Mul, inputs: list[str]) -> str:
    """Elementwise product of the inputs."""
    return _chain(g, "Mul", inputs)


@register_converter(Concat)
def concat(g: GraphBuilder, module: Concat, inputs: list[str]) -> str:
    """``Concat`` along ``dim``."""
    return g.node("Concat", inputs, axis=int(module.dim))


@register_converter(Stack)
def stack(g: GraphBuilder, module: Stack, inputs: list[str]) -> str:
    """Each input unsqueezed at ``dim``, then concatenated there."""
    axis = int(module.dim) % (g.rank(inputs[0]) + 1)
    axes = g.ints([axis], hint="axes")
    return g.node("Concat", [g.node("Unsqueeze", [x, axes]) for x in inputs], axis=axis)
