"""ONNX export of nnx models, checked by onnxruntime (needs ``pip install 'nnx-backprop[onnx]'``).

* :func:`export` writes a model's eval-mode function as an ONNX graph (``torch.onnx.export``'s
  arguments); every parameter and buffer is an initialiser named by its state_dict key.
* :func:`load_weights` reads those initialisers back into a model.
* :func:`register_converter` adds a converter for a new layer type: a function
  ``(g: GraphBuilder, module, inputs: list[str]) -> output name(s)``; see ``docs/interop.md``.

The ``onnx`` package is imported when a function is called, not when ``nnx.onnx`` is imported.
"""

# the converter modules register themselves on import
from . import (  # noqa: F401
    convert_activation,
    convert_attention,
    convert_basic,
    convert_combinators,
    convert_conv,
    convert_graph,
    convert_losses,
    convert_norm,
    convert_recurrent,
)
from .builder import GraphBuilder, UnsupportedLayerError, converter_for, register_converter
from .export import export, load_weights

__all__ = ["GraphBuilder", "UnsupportedLayerError", "converter_for", "export", "load_weights", "register_converter"]

from . import convert_unpool  # noqa: E402,F401  (registers MaxPool2d with indices and MaxUnpool2d)
