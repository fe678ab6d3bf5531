"""ONNX converters of RNN, LSTM and GRU: one ONNX RNN/LSTM/GRU node per layer.

PyTorch and ONNX order the gates differently (LSTM: PyTorch ``i, f, g, o``, ONNX ``i, o, f, c``;
GRU: PyTorch ``r, z, n``, ONNX ``z, r, h``). The initialisers keep PyTorch's layout under their
state_dict names; the reordering is a few ``Split``/``Concat`` nodes on constants, which
onnxruntime folds when it loads the model. PyTorch's GRU applies the reset gate after the hidden
matmul: ``linear_before_reset=1``.
"""

from __future__ import annotations

from typing import Any

from ..layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .builder import GraphBuilder, UnsupportedLayerError, register_converter

#: for each ONNX gate position, the index of the PyTorch gate chunk
_GATE_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}
_ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _reordered(g: GraphBuilder, name: str, mode: str, gates: int) -> str:
    """Initialiser ``name`` with its gate chunks (axis 0) in ONNX's order."""
    order = _GATE_ORDER.get(mode)
    if order is None:
        return name
    chunks = g.node("Split", [name, g.ints([g.shape_of_param(name)[0] // gates] * gates)], n_outputs=gates, axis=0)
    return g.node("Concat", [chunks[i] for i in order], axis=0)


def _stack_directions(g: GraphBuilder, tensors: list[str]) -> str:
    """``(D, ...)``: each direction's tensor with a leading axis, concatenated."""
    axes = g.ints([0], hint="axes")
    return g.node("Concat", [g.node("Unsqueeze", [t, axes]) for t in tensors], axis=0)


def _layer_weights(g: GraphBuilder, module: Any, layer: int) -> tuple[str, str, str | None]:
    """W ``(D, G*H, in)``, R ``(D, G*H, H)`` and B ``(D, 2*G*H)`` of one layer, in ONNX's gate order."""
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    suffixes = [f"_l{layer}"] + ([f"_l{layer}_reverse"] if module.bidirectional else [])
    ws, rs, bs = [], [], []
    for s in suffixes:
        ws.append(_reordered(g, g.param(module, "weight_ih" + s), module.mode, gates))
        rs.append(_reordered(g, g.param(module, "weight_hh" + s), module.mode, gates))
        if module.bias:
            b_ih = _reordered(g, g.param(module, "bias_ih" + s), module.mode, gates)
            b_hh = _reordered(g, g.param(module, "bias_hh" + s), module.mode, gates)
            bs.append(g.node("Concat", [b_ih, b_hh], axis=0))
    return _stack_directions(g, ws), _stack_directions(g, rs), (_stack_directions(g, bs) if bs else None)


@register_converter(RNN, LSTM, GRU)
def recurrent(g: GraphBuilder, module: Any, inputs: list[str]) -> Any:
    """``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``) of a multi-layer, optionally bidirectional layer."""
    name = type(module).__name__
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"nnx.onnx.export: {name} is exported with zero initial states only (one "
                                    f"input), got {len(inputs)} inputs")
    if getattr(module, "proj_size", 0):
        raise UnsupportedLayerError(f"nnx.onnx.export: {name} with proj_size > 0 has no ONNX equivalent")
    x = inputs[0]
    unbatched = g.rank(x) == 2
    if unbatched:
        x = g.node("Unsqueeze", [x, g.ints([1], hint="axes")])
    elif module.batch_first:
        x = g.node("Transpose", [x], perm=[1, 0, 2])  # ONNX layout 0: (L, N, features)
    directions = 2 if module.bidirectional else 1
    attrs: dict[str, Any] = {"hidden_size": int(module.hidden_size),
                             "direction": "bidirectional" if module.bidirectional else "forward"}
    if module.mode == "GRU":
        attrs["linear_before_reset"] = 1
    elif module.mode.startswith("RNN"):
        attrs["activations"] = ["Tanh" if module.mode == "RNN_TANH" else "Relu"] * directions
    op = _ONNX_OP[module.mode]
    n_out = 3 if op == "LSTM" else 2
    h_states, c_states = [], []
    for layer in range(module.num_layers):
        w, r, b = _layer_weights(g, module, layer)
        outs = g.node(op, [x, w, r] + ([b] if b else []), n_outputs=n_out, **attrs)
        h_states.append(outs[1])
        if op == "LSTM":
            c_states.append(outs[2])
        # Y: (L, D, N, H) -> (L, N, D*H), the next layer's input
        y = g.node("Transpose", [outs[0]], perm=[0, 2, 1, 3])
        x = g.node("Reshape", [y, g.ints([0, 0, -1])])
    h_n = h_states[0] if len(h_states) == 1 else g.node("Concat", h_states, axis=0)
    c_n = (c_states[0] if len(c_states) == 1 else g.node("Concat", c_states, axis=0)) if c_states else None
    if unbatched:
        axes = g.ints([1], hint="axes")
        x, h_n = g.node("Squeeze", [x, axes]), g.node("Squeeze", [h_n, axes])
        c_n = g.node("Squeeze", [c_n, axes]) if c_n else None
    elif module.batch_first:
        x = g.node("Transpose", [x], perm=[1, 0, 2])
    return (x, (h_n, c_n)) if op == "LSTM" else (x, h_n)


def _cell_matmul(g: GraphBuilder, module: Any, x: str, which: str) -> str | None:
    """``x @ weight_<which>^T + bias_<which>`` (None when ``x`` is None and there is no bias)."""
    bias = g.param(module, f"bias_{which}") if module.bias else None
    if x is None:
        return bias
    y = g.node("MatMul", [x, g.node("Transpose", [g.param(module, f"weight_{which}")], perm=[1, 0])])
    return g.node("Add", [y, bias]) if bias else y


def _plus(g: GraphBuilder, a: str | None, b: str | None) -> str | None:
    return b if a is None else (a if b is None else g.node("Add", [a, b]))


@register_converter(RNNCell, LSTMCell, GRUCell)
def cell(g: GraphBuilder, module: Any, inputs: list[Any]) -> Any:
    """One step: ``cell(x)`` or ``cell(x, h)`` (LSTMCell: ``cell(x, (h, c))``), PyTorch's gate order;
    a missing state is zero. Batched ``(N, in)`` and unbatched ``(in,)`` inputs."""
    name = type(module).__name__
    if len(inputs) not in (1, 2):
        raise UnsupportedLayerError(f"nnx.onnx.export: {name} takes (input) or (input, hx); got {len(inputs)} inputs")
    x = inputs[0]
    hx = inputs[1] if len(inputs) == 2 else None
    h, c = (tuple(hx) if hx is not None else (None, None)) if module.mode == "LSTM" else (hx, None)
    gi, gh = _cell_matmul(g, module, x, "ih"), _cell_matmul(g, module, h, "hh")
    if module.mode.startswith("RNN"):
        return g.node("Tanh" if module.mode == "RNN_TANH" else "Relu", [_plus(g, gi, gh)])
    size = int(module.hidden_size)
    if module.mode == "LSTM":
        i, f, gg, o = g.node("Split", [_plus(g, gi, gh), g.ints([size] * 4)], n_outputs=4, axis=-1)
        c_new = g.node("Mul", [g.node("Sigmoid", [i]), g.node("Tanh", [gg])])
        if c is not None:
            c_new = g.node("Add", [g.node("Mul", [g.node("Sigmoid", [f]), c]), c_new])
        return g.node("Mul", [g.node("Sigmoid", [o]), g.node("Tanh", [c_new])]), c_new
    ir, iz, i_n = g.node("Split", [gi, g.ints([size] * 3)], n_outputs=3, axis=-1)
    if gh is None:  # no bias and no state: the hidden contribution is zero
        hr = hz = hn = None
    else:
        hr, hz, hn = g.node("Split", [gh, g.ints([size] * 3)], n_outputs=3, axis=-1)
    r = g.node("Sigmoid", [_plus(g, ir, hr)])
    z = g.node("Sigmoid", [_plus(g, iz, hz)])
    n = g.node("Tanh", [i_n if hn is None else g.node("Add", [i_n, g.node("Mul", [r, hn])])])
    h_new = g.node("Mul", [g.node("Sub", [g.const(1.0, like=x), z]), n])
    return h_new if h is None else g.node("Add", [h_new, g.node("Mul", [z, h])])
