"""The graph under construction and the converter registry of :mod:`nnx.onnx`.

A converter turns one nnx Module into ONNX nodes. It is a function
``converter(g: GraphBuilder, module, inputs: list[str]) -> str | tuple`` that adds nodes (and
constants) through ``g`` and returns the name(s) of the module's output(s), nested like the
module's own output (an LSTM returns ``(output, (h_n, c_n))``). A converter of a layer whose
``forward`` takes non-array keyword arguments (``is_causal=True``) accepts them as keyword
arguments too; a parent converter passes them with ``g.convert(child, inputs, is_causal=True)``.
The builder runs the module on the
example values too, so every name has a concrete value: ``g.shape(name)`` and ``g.dtype_name(name)``
give converters the traced shapes they need (a ``Reshape`` target, a pooling window).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from ..backend import to_numpy
from ..grad_mode import no_grad
from ..module import Module

Converter = Callable[["GraphBuilder", Module, list], Any]

_CONVERTERS: dict[type, Converter] = {}

#: ONNX element types of the dtypes nnx uses (``onnx.TensorProto`` values)
_ELEM = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9, "float16": 10, "float64": 11}


class UnsupportedLayerError(NotImplementedError):
    """Raised by :func:`nnx.onnx.export` for a layer (or a layer setting) with no ONNX converter."""


def onnx_module() -> Any:
    """The ``onnx`` package, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise ImportError("nnx.onnx needs the 'onnx' package: pip install 'nnx-backprop[onnx]' "
                          "(or pip install onnx onnxruntime)") from exc


def register_converter(*layer_types: type) -> Callable[[Converter], Converter]:
    """Decorator: register ``fn`` as the ONNX converter of ``layer_types`` (subclasses inherit it).

    >>> from nnx.onnx import register_converter
    >>> class Double(nnx.Module):
    ...     def forward(self, x):
    ...         return self.record(x * 2.0, lambda dy, input_grad=True: (dy * 2.0, ()))
    >>> @register_converter(Double)
    ... def _double(g, module, inputs):
    ...     return g.node("Mul", [inputs[0], g.const(2.0, like=inputs[0])])
    """
    def decorate(fn: Converter) -> Converter:
        for t in layer_types:
            _CONVERTERS[t] = fn
        return fn
    return decorate


def converter_for(module: Module) -> Converter | None:
    """The converter registered for ``type(module)`` or its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    return None


def _flatten(obj: Any) -> list:
    if isinstance(obj, (tuple, list)):
        return [leaf for item in obj for leaf in _flatten(item)]
    return [obj]


class GraphBuilder:
    """Collects the nodes, initialisers and traced values of one export.

    Every parameter and buffer of the exported model is an initialiser named by its
    ``state_dict`` key (``"0.weight"``); :meth:`param` returns that name for a converter.
    """

    def __init__(self, model: Module, opset_version: int) -> None:
        self.onnx = onnx_module()
        self.opset_version = opset_version
        self.nodes: list = []
        self.initializers: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self._counter = 0
        self._dtypes: dict[str, str] = {}  # dtypes of intermediate values (no traced array)
        self._prefix = {id(m): name for name, m in model.named_modules()}
        self._state = model.state_dict()

    # ------------------------------------------------------------------ names and values
    def fresh(self, hint: str = "t") -> str:
        """A new unique value name."""
        self._counter += 1
        return f"{hint}_{self._counter}"

    def shape(self, name: str) -> tuple[int, ...]:
        """The traced (example-input) shape of value ``name``."""
        return tuple(int(d) for d in self.values[name].shape)

    def rank(self, name: str) -> int:
        """The number of dimensions of value ``name``."""
        return len(self.values[name].shape)

    def dtype_name(self, name: str) -> str:
        """The dtype name (``"float32"``) of value ``name``."""
        from nnx_backends import Backend

        if name in self.values:
            return Backend.dtype_name(self.values[name].dtype)
        return self._dtypes[name]

    def elem_type(self, dtype_name: str) -> int:
        """The ONNX element type of a dtype name."""
        if dtype_name not in _ELEM:
            raise UnsupportedLayerError(f"nnx.onnx.export: dtype {dtype_name!r} has no ONNX element type here")
        return _ELEM[dtype_name]

    # ------------------------------------------------------------------ initialisers
    def param(self, module: Module, attr: str) -> str:
        """The initialiser name of ``module.<attr>`` (its state_dict key), added on first use."""
        prefix = self._prefix.get(id(module))
        if prefix is None:
            raise ValueError(f"nnx.onnx.export: {type(module).__name__} is not a submodule of the exported model")
        key = f"{prefix}.{attr}" if prefix else attr
        if key not in self._state:
            raise KeyError(f"nnx.onnx.export: {type(module).__name__} has no parameter or buffer {attr!r}")
        self.add_initializer(key, self._state[key])
        return key

    def shape_of_param(self, key: str) -> tuple[int, ...]:
        """The shape of initialiser/state_dict entry ``key``."""
        return tuple(int(d) for d in self._state[key].shape)

    def add_initializer(self, name: str, array: Any) -> str:
        """Add ``array`` (any backend, or host) as initialiser ``name``; returns the name."""
        if name not in self.initializers:
            host = to_numpy(array)
            self.initializers[name] = self.onnx.numpy_helper.from_array(host, name)
            self._dtypes[name] = str(host.dtype)
        return name

    def const(self, values: Any, like: str | None = None, dtype: str | None = None, hint: str = "const") -> str:
        """A constant tensor (a Python scalar or nested list) as a new initialiser.

        ``dtype`` is a dtype name, or taken from value ``like`` (default ``"float32"``).
        """
        dtype = dtype or (self.dtype_name(like) if like is not None else "float32")
        name = self.fresh(hint)
        tensor = self.onnx.helper.make_tensor(
            name, self.elem_type(dtype), _shape_of(values), _flatten(values) if isinstance(values, (list, tuple))
            else [values])
        self.initializers[name] = tensor
        self._dtypes[name] = dtype
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        """A 1-D int64 constant (a Reshape target, Split sizes, axes)."""
        return self.const([int(v) for v in values], dtype="int64", hint=hint)

    # ------------------------------------------------------------------ nodes
    def node(self, op_type: str, inputs: Sequence[str], n_outputs: int = 1, **attrs: Any) -> Any:
        """Add an ONNX node; returns its output name (or a list of ``n_outputs`` names)."""
        outputs = [self.fresh(op_type.lower()) for _ in range(n_outputs)]
        known = [n for n in inputs if n in self.values or n in self._dtypes]
        dtype = "int64" if op_type == "Shape" else (self.dtype_name(known[0]) if known else None)
        if dtype is not None:
            self._dtypes.update(dict.fromkeys(outputs, dtype))
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outputs, **attrs))
        return outputs[0] if n_outputs == 1 else outputs

    def placeholder(self, name: str, shape: Sequence[int], like: str) -> str:
        """Give value ``name`` (a node output inside a converter) a traced stand-in: zeros of ``shape``
        with the dtype and backend of value ``like``, so that converters called on it can ask
        :meth:`shape` and :meth:`rank`. Returns ``name``."""
        ref = self.values[like]
        b = backends_of(ref)
        self.values[name] = b.xp.zeros(tuple(int(s) for s in shape), dtype=ref.dtype, device=b.device_of(ref))
        return name

    def convert(self, module: Module, inputs: Sequence[Any], **kwargs: Any) -> Any:
        """Convert ``module`` applied to values ``inputs``; returns its output name(s).

        ``kwargs`` are non-array keyword arguments of the module's ``forward`` (``is_causal=True``):
        they are passed to the converter and to the traced call. An input may be a nested tuple of
        names where the layer takes one (an LSTMCell's ``(h, c)``).
        Raises :class:`UnsupportedLayerError` naming the layer when no converter is registered.
        """
        fn = converter_for(module)
        if fn is None:
            raise UnsupportedLayerError(
                f"nnx.onnx.export: no ONNX converter for {type(module).__name__} ({type(module).__module__}); "
                "register one with nnx.onnx.register_converter (see docs/interop.md)")
        names = fn(self, module, list(inputs), **kwargs)
        flat = _flatten(names)
        if any(n not in self.values for n in flat):
            with no_grad():
                outputs = module(*[self._value_of(n) for n in inputs], **kwargs)
            values = _flatten(outputs)
            if len(values) != len(flat):
                raise RuntimeError(f"nnx.onnx: the converter of {type(module).__name__} returned {len(flat)} "
                                   f"outputs but the layer returns {len(values)}")
            for n, v in zip(flat, values, strict=True):
                if n is not None:  # an output the layer returns as None (MultiheadAttention's weights)
                    self.values[n] = v
        return names

    def _value_of(self, name: Any) -> Any:
        if isinstance(name, (tuple, list)):
            return tuple(self._value_of(n) for n in name)
        return self.values[name]


def backends_of(x: Any) -> Any:
    """The nnx backend adapter that owns array ``x``."""
    import nnx_backends

    return nnx_backends.backend_of(x)


def _shape_of(values: Any) -> list[int]:
    shape = []
    while isinstance(values, (list, tuple)):
        shape.append(len(values))
        values = values[0] if values else None
    return shape
