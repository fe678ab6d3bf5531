"""ONNX converters of the containers and the shape layers: Sequential, Linear, Identity, Dropout,
Flatten, Unflatten, Embedding."""

from __future__ import annotations

from typing import Any

from ..containers import Sequential
from ..layers import Dropout, Dropout2d, Embedding, Flatten, Identity, Linear, Unflatten
from .builder import GraphBuilder, UnsupportedLayerError, register_converter


@register_converter(Sequential)
def sequential(g: GraphBuilder, module: Sequential, inputs: list[str]) -> Any:
    """Each child in turn, the output of one the input of the next."""
    out: Any = inputs[0]
    for child in module:
        out = g.convert(child, [out])
    return out


@register_converter(Identity, Dropout, Dropout2d)
def identity(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """Identity, and the dropouts in eval mode (identity, as torch.onnx exports them)."""
    return inputs[0]


@register_converter(Linear)
def linear(g: GraphBuilder, module: Linear, inputs: list[str]) -> str:
    """``Gemm(x, W, b, transB=1)`` for a matrix input, ``MatMul(x, W^T) + b`` otherwise."""
    x, weight = inputs[0], g.param(module, "weight")
    bias = g.param(module, "bias") if module.bias is not None else None
    if g.rank(x) == 2:
        return g.node("Gemm", [x, weight] + ([bias] if bias else []), transB=1)
    y = g.node("MatMul", [x, g.node("Transpose", [weight], perm=[1, 0])])
    return g.node("Add", [y, bias]) if bias else y


def _axis(dim: int, rank: int) -> int:
    return dim % rank


@register_converter(Flatten)
def flatten(g: GraphBuilder, module: Flatten, inputs: list[str]) -> str:
    """``Flatten`` when everything after ``start_dim`` is flattened, else a ``Reshape``."""
    x = inputs[0]
    rank = g.rank(x)
    start, end = _axis(module.start_dim, rank), _axis(module.end_dim, rank)
    if start == 1 and end == rank - 1:
        return g.node("Flatten", [x], axis=1)
    shape = g.shape(x)
    # dims before start_dim keep their size (0 copies it, so a dynamic batch stays dynamic)
    target = [0] * start + [-1] + list(shape[end + 1:])
    return g.node("Reshape", [x, g.ints(target)])


@register_converter(Unflatten)
def unflatten(g: GraphBuilder, module: Unflatten, inputs: list[str]) -> str:
    """A ``Reshape`` that splits dimension ``dim`` into ``unflattened_size``."""
    x = inputs[0]
    shape = g.shape(x)
    dim = _axis(module.dim, len(shape))
    target = [0] * dim + list(module.unflattened_size) + list(shape[dim + 1:])
    return g.node("Reshape", [x, g.ints(target)])


@register_converter(Embedding)
def embedding(g: GraphBuilder, module: Embedding, inputs: list[str]) -> str:
    """``Gather(weight, indices)``; ``max_norm`` (which rewrites the weights in forward) is not exported."""
    if module.max_norm is not None:
        raise UnsupportedLayerError("nnx.onnx.export: Embedding with max_norm is not supported (its forward "
                                    "renormalises the weights); export a copy with max_norm=None")
    return g.node("Gather", [g.param(module, "weight"), inputs[0]], axis=0)
