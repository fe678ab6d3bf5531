"""``nnx.onnx.export`` and ``nnx.onnx.load_weights``."""

from __future__ import annotations

import os
import warnings
from typing import IO, Any

import nnx_backends as backends

from ..backend import asarray
from ..grad_mode import no_grad
from ..module import IncompatibleKeys, Module
from .builder import GraphBuilder, UnsupportedLayerError, _flatten, onnx_module

MIN_OPSET = 13  # Softmax over one axis, Split/Squeeze/Unsqueeze with input tensors


def _as_inputs(model: Module, example_input: Any) -> list[Any]:
    items = list(example_input) if isinstance(example_input, (tuple, list)) else [example_input]
    if not items:
        raise ValueError("nnx.onnx.export: example_input is empty; give one array (or a tuple of arrays)")
    target = model.backend
    out = []
    for i, x in enumerate(items):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"nnx.onnx.export: example input {i} is a {type(x).__name__}, expected an array")
        out.append(x if target.owns(x) else asarray(x, backend=target))
    return out


def _names(given: Any, count: int, stem: str) -> list[str]:
    if given is None:
        return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]
    given = list(given)
    if len(given) != count:
        raise ValueError(f"nnx.onnx.export: {count} {stem}s but {len(given)} {stem}_names: {given}")
    return [str(n) for n in given]


def _dims(dynamic: Any, shape: tuple[int, ...], name: str) -> list[Any]:
    """Concrete sizes, with the dynamic axes (a list of axes or {axis: name}) as symbolic names."""
    dims: list[Any] = list(shape)
    if dynamic is None:
        return dims
    named = dict(dynamic) if isinstance(dynamic, dict) else {int(a): f"{name}_dim{int(a)}" for a in dynamic}
    for axis, label in named.items():
        if not -len(shape) <= int(axis) < len(shape):
            raise ValueError(f"nnx.onnx.export: dynamic axis {axis} of {name!r} is out of range for its "
                             f"{len(shape)} dimensions")
        dims[int(axis) % len(shape)] = str(label)
    return dims


def _check_fits(model: Module, inputs: list[Any]) -> Any:
    """Run the model on the example input; a wrong shape fails here with the layer's message."""
    try:
        with no_grad():
            return model(*inputs)
    except (ValueError, TypeError) as exc:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ValueError(f"nnx.onnx.export: the example input of shape {shapes} does not fit "
                         f"{type(model).__name__}: {exc}") from exc


def export(model: Module, example_input: Any, path: str | os.PathLike | IO[bytes], opset_version: int = 17,
           input_names: list[str] | None = None, output_names: list[str] | None = None,
           dynamic_axes: dict[str, Any] | None = None, *, check: bool = True) -> Any:
    """Write ``model`` as an ONNX file (``torch.onnx.export``'s arguments where they apply).

    Args:
        model: an nnx Module built from layers with a converter (see :func:`register_converter`).
        example_input: an array (any backend, or NumPy) or a tuple of arrays, as the model is called.
            It fixes the dtypes and the static sizes of the graph.
        path: a file name or a binary file object.
        opset_version: the ONNX opset (13 to what the installed ``onnx`` supports; default 17).
        input_names, output_names: names of the graph's inputs and (flattened) outputs; default
            ``"input"``/``"output"`` (``"input_0"``, ... when there are several).
        dynamic_axes: ``{name: [axes]}`` or ``{name: {axis: "label"}}`` for inputs and outputs,
            e.g. ``{"input": {0: "batch"}, "output": {0: "batch"}}``; the others sizes stay fixed.
        check: run ``onnx.checker.check_model`` (with shape inference) on the result.

    The graph computes the model's eval-mode function: a model in training mode is exported as
    in eval mode with a warning (as PyTorch), and is left in the mode it was in. Every parameter
    and buffer is an initialiser named by its ``state_dict`` key (see :func:`load_weights`).
    Returns the ``onnx.ModelProto``.

    Raises :class:`UnsupportedLayerError` naming a layer that has no converter, and ValueError
    when ``example_input`` does not fit the model.

    >>> import pytest; _ = pytest.importorskip("onnx")    # pip install 'nnx-backprop[onnx]'
    >>> import io, numpy as np, nnx, nnx.onnx
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2)).eval()
    >>> f = io.BytesIO()                                  # or a file name: "m.onnx"
    >>> proto = nnx.onnx.export(model, nnx.asarray(np.zeros((1, 4))), f,
    ...                         dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    >>> [node.op_type for node in proto.graph.node]
    ['Gemm', 'Relu', 'Gemm', 'Identity']
    """
    onnx = onnx_module()
    if not isinstance(model, Module):
        raise TypeError(f"nnx.onnx.export: expected an nnx Module, got {type(model).__name__}")
    max_opset = onnx.defs.onnx_opset_version()
    if not isinstance(opset_version, int) or not MIN_OPSET <= opset_version <= max_opset:
        raise ValueError(f"nnx.onnx.export: opset_version must be an int in [{MIN_OPSET}, {max_opset}], "
                         f"got {opset_version!r}")
    modes = {m: m.training for m in model.modules()}
    if model.training:
        warnings.warn("nnx.onnx.export: the model is in training mode; exporting its eval-mode behaviour "
                      "(dropout off, BatchNorm running statistics). Call model.eval() to silence this.",
                      UserWarning, stacklevel=2)
    model.eval()
    try:
        proto = _build(onnx, model, example_input, opset_version, input_names, output_names, dynamic_axes or {})
    finally:
        for m, mode in modes.items():
            m.training = mode
    if check:
        onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, path if not isinstance(path, os.PathLike) else os.fspath(path))
    return proto


def _build(onnx: Any, model: Module, example_input: Any, opset: int, input_names: Any, output_names: Any,
           dynamic_axes: dict[str, Any]) -> Any:
    helper = onnx.helper
    inputs = _as_inputs(model, example_input)
    in_names = _names(input_names, len(inputs), "input")
    outputs = _flatten(_check_fits(model, inputs))
    out_names = _names(output_names, len(outputs), "output")
    unknown = set(dynamic_axes) - set(in_names) - set(out_names)
    if unknown:
        raise ValueError(f"nnx.onnx.export: dynamic_axes names {sorted(unknown)} are neither input names "
                         f"{in_names} nor output names {out_names}")
    g = GraphBuilder(model, opset)
    for name, x in zip(in_names, inputs, strict=True):
        g.values[name] = x
    results = _flatten(g.convert(model, in_names))
    for inner, name in zip(results, out_names, strict=True):
        g.nodes.append(helper.make_node("Identity", [inner], [name]))
    for key, arr in model.state_dict().items():  # the whole state: the file is a checkpoint too
        g.add_initializer(key, arr)

    def info(name: str, value: Any) -> Any:
        return helper.make_tensor_value_info(name, g.elem_type(backends.Backend.dtype_name(value.dtype)),
                                             _dims(dynamic_axes.get(name), tuple(value.shape), name))

    graph_inputs = [info(n, x) for n, x in zip(in_names, inputs, strict=True)]
    if dynamic_axes:  # an output's other axes may follow a dynamic input axis: leave them unnamed
        graph_outputs = [helper.make_tensor_value_info(
            n, g.elem_type(backends.Backend.dtype_name(v.dtype)),
            _dims(dynamic_axes.get(n), tuple(v.shape), n) if n in dynamic_axes else [None] * len(v.shape))
            for n, v in zip(out_names, outputs, strict=True)]
    else:
        graph_outputs = [info(n, v) for n, v in zip(out_names, outputs, strict=True)]
    graph = helper.make_graph(g.nodes, type(model).__name__, graph_inputs, graph_outputs,
                              initializer=list(g.initializers.values()))
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="nnx",
                              ir_version=helper.find_min_ir_version_for(opsets))
    return proto


def load_weights(model: Module, path: str | os.PathLike | IO[bytes] | Any, strict: bool = True) -> IncompatibleKeys:
    """Load the initialisers of an ONNX file written by :func:`export` back into ``model``.

    Initialisers are matched to ``model.state_dict()`` by name (``export`` names them by their
    state_dict keys); the graph's own constants are ignored. ``path`` may also be an
    ``onnx.ModelProto``. With ``strict=True`` a state_dict key missing from the file raises
    RuntimeError; shapes and dtypes are checked before anything is assigned, so a failed load
    leaves the model as it was (see :meth:`nnx.Module.load_state_dict`).

    >>> import pytest; _ = pytest.importorskip("onnx")    # pip install 'nnx-backprop[onnx]'
    >>> import io, numpy as np, nnx, nnx.onnx
    >>> model, f = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2)).eval(), io.BytesIO()
    >>> _ = nnx.onnx.export(model, nnx.asarray(np.zeros((1, 4))), f)
    >>> fresh_model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    >>> _ = f.seek(0); nnx.onnx.load_weights(fresh_model, f)   # or a file name: "m.onnx"
    IncompatibleKeys(missing_keys=[], unexpected_keys=[])
    >>> bool((nnx.to_numpy(fresh_model[0].weight) == nnx.to_numpy(model[0].weight)).all())
    True
    """
    onnx = onnx_module()
    proto = path if hasattr(path, "graph") else onnx.load_model(
        path if not isinstance(path, os.PathLike) else os.fspath(path))
    own = set(model.state_dict())
    arrays = {t.name: onnx.numpy_helper.to_array(t).copy() for t in proto.graph.initializer if t.name in own}
    if not arrays:
        raise ValueError(f"nnx.onnx.load_weights: no initialiser of the file is named like a state_dict key of "
                         f"{type(model).__name__} (expected names such as {sorted(own)[:3]}); was it exported by nnx?")
    return model.load_state_dict(arrays, strict=strict)


__all__ = ["UnsupportedLayerError", "export", "load_weights"]
