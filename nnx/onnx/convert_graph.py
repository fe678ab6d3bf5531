"""ONNX converters of :class:`nnx.Graph` and the multi-output layers Split and Chunk."""

from __future__ import annotations

from typing import Any

from ..layers import Chunk, Graph, Split
from ..layers.combinators import _Pieces
from .builder import GraphBuilder, UnsupportedLayerError, register_converter


@register_converter(Split, Chunk)
def pieces(g: GraphBuilder, module: _Pieces, inputs: list[str]) -> tuple[str, ...]:
    """One ``Split`` node with the piece sizes of the traced input (the split axis has a fixed size)."""
    x = inputs[0]
    shape = g.shape(x)
    axis = int(module.dim) % len(shape)
    sizes = module._sizes(shape[axis])
    if len(sizes) == 1:
        return (g.node("Identity", [x]),)
    return tuple(g.node("Split", [x, g.ints(sizes)], n_outputs=len(sizes), axis=axis))


def _element(values: dict[str, Any], ref: str, graph_name: str) -> Any:
    base, sep, index = ref.partition(":")
    v = values[base]
    if not sep:
        return v
    if not isinstance(v, (tuple, list)) or int(index) >= len(v):
        raise UnsupportedLayerError(f"nnx.onnx.export: Graph {graph_name}: {ref!r} refers to element {index} "
                                    f"of node {base!r}, which has no such element")
    return v[int(index)]


@register_converter(Graph)
def graph(g: GraphBuilder, module: Graph, inputs: list[str]) -> Any:
    """Each node in order on the names of the values it consumes (``"node:i"``: element i of a
    node's tuple output); a module shared by several nodes keeps one set of initialisers."""
    if len(inputs) != len(module._inputs):
        raise UnsupportedLayerError(f"nnx.onnx.export: Graph takes {len(module._inputs)} inputs "
                                    f"{list(module._inputs)}, the export gave {len(inputs)}")
    values: dict[str, Any] = dict(zip(module._inputs, inputs, strict=True))
    name = repr(list(module._inputs))
    for node in module._nodes:
        values[node.name] = g.convert(node.module, [_element(values, r, name) for r in node.inputs])
    outs = tuple(_element(values, r, name) for r in module._outputs)
    return outs[0] if len(outs) == 1 else outs
