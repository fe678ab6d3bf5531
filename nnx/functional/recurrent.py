"""Recurrent kernels (RNN, LSTM, GRU and their single-step cells), explicit BPTT.

``name_forward(...)`` returns ``(output, backward)``; ``name(...)`` returns only the output.

One time loop serves every cell (:mod:`nnx.functional.recurrent_cells` holds each cell's forward
and backward step side by side) and handles direction, variable lengths, bidirectional and
multi-layer stacks and the LSTM's projection:

* the input projection of all steps is one matrix product ``(T*B, I) @ (I, G*H)``; each step
  is one product ``h @ W_hh^T`` and one fused cell kernel of the backend adapter, its backward
  one fused kernel and one product with ``W_hh``; weight, bias and input gradients are one
  product (or sum) each over all steps;
* per-step arrays are pooled in a layer's :class:`Workspace` on mutable host-memory libraries,
  else kept in lists and stacked once (GPUs: fewer launches; immutable libraries: no writes);
* where the adapter runs a direction's whole loop as one kernel (``Backend.recurrent_scan``:
  NumPy), it does, the weight gradients then one product over ``[x | 1 | h_prev]``.

The loop of one direction is :mod:`nnx.functional.recurrent_loop`; this module stacks layers and
directions and holds the public functions.

Layout follows PyTorch: time-major ``(T, B, features)`` inputs, gate order LSTM ``i, f, g, o``
and GRU ``r, z, n`` with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, flat weight lists in
PyTorch's order (for each layer, for each direction: ``w_ih, w_hh, b_ih, b_hh``).

Variable-length batches: pass ``lengths`` (one integer per sequence). Steps at or past a sequence's
length leave its state unchanged and output zeros, so outputs, final states and gradients equal
those of PyTorch's ``pack_padded_sequence`` / ``pad_packed_sequence(total_length=T)`` pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nnx_backends as backends

from .dropout import dropout_mask
from .recurrent_cells import CELLS, Cell
from .recurrent_loop import _direction_backward, _direction_forward
from .workspace import Workspace

Array = Any
Backward = Callable[..., tuple]

__all__ = [
    "Workspace", "gru", "gru_cell", "gru_cell_forward", "gru_forward", "lengths_mask", "lstm", "lstm_cell",
    "lstm_cell_forward", "lstm_forward", "rnn", "rnn_cell", "rnn_cell_forward", "rnn_forward",
]


# ============================================================================ masks
def lengths_mask(lengths: Any, steps: int, like: Array) -> tuple[Array, Array]:
    """Step masks for a padded time-major batch: ``(T, B, 1)`` booleans and the same as ``like``'s dtype.

    ``lengths`` is a sequence of ints, a host array or a backend integer array of shape ``(B,)``;
    element ``[t, b]`` is true while ``t < lengths[b]``.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> mask, _ = lengths_mask([1, 2], 2, xp.zeros((2, 2, 3), dtype=xp.float32))
    >>> [[bool(v) for v in row] for row in mask[:, :, 0]]
    [[True, True], [False, True]]
    """
    b = backends.backend_of(like)
    xp = b.xp
    device = b.device_of(like)
    if not b.owns(lengths):
        lengths = b.asarray(lengths, dtype=xp.int64)
    elif b.device_of(lengths) != device:
        lengths = b.asarray(b.to_numpy(lengths), dtype=xp.int64)
    steps_idx = xp.arange(steps, dtype=lengths.dtype, device=device)
    mask = steps_idx[:, None] < lengths[None, :]
    mask = mask[:, :, None]
    return mask, xp.astype(mask, like.dtype)


# ============================================================================ full layers
@dataclass(frozen=True)
class _Layout:
    """The shape of a stack: layers, directions, weights per direction, and the input's layout."""

    name: str
    num_layers: int
    directions: int
    has_biases: bool
    has_projections: bool
    hidden: int                # size of h of one direction (proj_size with projections)
    unbatched: bool
    batch_first: bool
    is_lstm: bool

    @property
    def per_dir(self) -> int:
        return (4 if self.has_biases else 2) + (1 if self.has_projections else 0)

    def direction_weights(self, weights: Sequence[Array], k: int) -> tuple:
        """``(w_ih, w_hh, b_ih, b_hh, w_hr)`` of direction ``k`` (absent ones None)."""
        w = list(weights[k * self.per_dir:(k + 1) * self.per_dir])
        b_ih, b_hh = (w[2], w[3]) if self.has_biases else (None, None)
        return w[0], w[1], b_ih, b_hh, w[-1] if self.has_projections else None

    def direction_grads(self, g: tuple) -> list:
        """The gradients of one direction in the order of its weights."""
        return list(g[:2]) + (list(g[2:4]) if self.has_biases else []) + ([g[4]] if self.has_projections else [])

    def to_time_major(self, xp: Any, a: Array | None) -> Array | None:
        if self.unbatched and a is not None:
            return a[:, None, :]
        return xp.permute_dims(a, (1, 0, 2)) if self.batch_first and a is not None else a

    def from_time_major(self, xp: Any, a: Array | None) -> Array | None:
        if self.unbatched and a is not None:
            return a[:, 0, :]
        return xp.permute_dims(a, (1, 0, 2)) if self.batch_first and a is not None else a


def _stack(xp: Any, arrays: list) -> Array:
    """``stack``, as a view for a single array (one layer, one direction: no copy, no launch)."""
    return arrays[0][None, ...] if len(arrays) == 1 else xp.stack(arrays)


def _state(a: Array | None, unbatched: bool, add_batch: bool) -> Array | None:
    """Add (or drop) the batch axis of an unbatched state ``(L*D, H)``."""
    if a is None or not unbatched:
        return a
    return a[:, None, :] if add_batch else a[:, 0, :]


def _run_layers(lay: _Layout, cell: Cell, b: Any, x: Array, weights: Sequence[Array], h0_all: Array | None,
                c0_all: Array | None, masks: tuple | None, dropout: float, training: bool,
                ws: Workspace | None) -> tuple[Array, list, list, list, list]:
    """The forward of every layer and direction: ``(output, h_n list, c_n list, tapes, dropout masks)``."""
    xp = b.xp
    batch = x.shape[1]
    zeros = c_zeros = None
    if h0_all is None:
        cell_size = weights[1].shape[0] // cell.gates
        zeros = xp.zeros((batch, lay.hidden), dtype=x.dtype, device=b.device_of(x))
        c_zeros = zeros if cell_size == lay.hidden else xp.zeros((batch, cell_size), dtype=x.dtype,
                                                                 device=b.device_of(x))
    layer_in = x
    h_n: list = []
    c_n: list = []
    tapes: list = []
    drops: list = []
    for layer in range(lay.num_layers):
        outs = []
        for d in range(lay.directions):
            k = layer * lay.directions + d
            h0 = h0_all[k, ...] if h0_all is not None else zeros
            c0 = (c0_all[k, ...] if c0_all is not None else c_zeros) if lay.is_lstm else None
            out, hn, cn, tape = _direction_forward(cell, b, layer_in, lay.direction_weights(weights, k), h0, c0,
                                                   masks, d == 1, ws)
            outs.append(out)
            tapes.append(tape)
            h_n.append(hn)
            c_n.append(cn)
        layer_in = outs[0] if lay.directions == 1 else xp.concat(outs, axis=2)
        drop = None
        if training and dropout > 0.0 and layer < lay.num_layers - 1:
            drop = dropout_mask(layer_in, dropout)
            layer_in = layer_in * drop
        drops.append(drop)
    return layer_in, h_n, c_n, tapes, drops


def _layers_backward(lay: _Layout, xp: Any, tapes: list, drops: list, d_out: Array | None, d_hn: Array | None,
                     d_cn: Array | None, input_grad: bool) -> tuple[Array | None, list, list, list]:
    """Differentiate :func:`_run_layers`: ``(dx, dh0 list, dc0 list, grads in the order of the weights)``."""
    grads: list = []
    dh0: list = [None] * len(tapes)
    dc0: list = [None] * len(tapes)
    per_layer: list = [None] * lay.num_layers
    d_layer = d_out
    hid = lay.hidden
    for layer in range(lay.num_layers - 1, -1, -1):
        if drops[layer] is not None and d_layer is not None:
            d_layer = d_layer * drops[layer]
        d_in = None
        layer_grads = []
        for d in range(lay.directions):
            k = layer * lay.directions + d
            dout_d = d_layer if d_layer is None or lay.directions == 1 else d_layer[:, :, d * hid:(d + 1) * hid]
            dx, dh0[k], dc0[k], g = _direction_backward(tapes[k], dout_d,
                                                        d_hn[k, ...] if d_hn is not None else None,
                                                        d_cn[k, ...] if d_cn is not None else None,
                                                        layer > 0 or input_grad)
            tapes[k] = None  # free this direction's activations now
            layer_grads += lay.direction_grads(g)
            if dx is not None:
                d_in = dx if d_in is None else d_in + dx
        per_layer[layer] = layer_grads
        d_layer = d_in
    for layer_grads in per_layer:
        grads += layer_grads
    return d_layer, dh0, dc0, grads


def _recurrent_forward(mode: str, x: Array, hx: Any, weights: Sequence[Array], *, num_layers: int,
                       bidirectional: bool, batch_first: bool, dropout: float, training: bool,
                       lengths: Any, has_biases: bool, workspace: Workspace | None = None,
                       has_projections: bool = False) -> tuple[tuple, Backward]:
    cell = CELLS[mode]
    b = backends.backend_of(x)
    xp = b.xp
    is_lstm = cell.has_cell_state
    lay = _Layout(f"{mode.lower()}_forward", num_layers, 2 if bidirectional else 1, has_biases, has_projections,
                  weights[1].shape[1] if len(weights) > 1 else 0, x.ndim == 2, batch_first, is_lstm)
    if len(weights) != num_layers * lay.directions * lay.per_dir:
        raise ValueError(f"{lay.name}: expected {num_layers * lay.directions * lay.per_dir} weight arrays "
                         f"for num_layers={num_layers}, bidirectional={bidirectional}, has_biases={has_biases}"
                         f"{', has_projections=True' if has_projections else ''}; got {len(weights)}")
    x = lay.to_time_major(xp, x)
    h0_all, c0_all = (hx if is_lstm else (hx, None)) if hx is not None else (None, None)
    h0_all, c0_all = _state(h0_all, lay.unbatched, True), _state(c0_all, lay.unbatched, True)
    masks = lengths_mask(lengths, x.shape[0], x) if lengths is not None else None
    output, h_n, c_n, tapes, drops = _run_layers(lay, cell, b, x, weights, h0_all, c0_all, masks, dropout,
                                                 training, workspace)
    output = lay.from_time_major(xp, output)
    hn_all = _state(_stack(xp, h_n), lay.unbatched, False)
    cn_all = _state(_stack(xp, c_n), lay.unbatched, False) if is_lstm else None
    result = (output, (hn_all, cn_all)) if is_lstm else (output, hn_all)
    given_hx = hx is not None

    def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
        if tapes[0] is None:
            raise RuntimeError(f"{mode.lower()} backward: this forward pass was already differentiated or released")
        d_out, d_state = dy if isinstance(dy, tuple) else (dy, None)
        d_hn, d_cn = (d_state if d_state is not None else (None, None)) if is_lstm else (d_state, None)
        dx, dh0, dc0, grads = _layers_backward(lay, xp, tapes, drops, lay.to_time_major(xp, d_out),
                                               _state(d_hn, lay.unbatched, True),
                                               _state(d_cn, lay.unbatched, True), input_grad)
        dx = lay.from_time_major(xp, dx)
        if not given_hx:
            return dx, tuple(grads)
        dh0_all = _state(xp.stack(dh0), lay.unbatched, False)
        if not is_lstm:
            return (dx, dh0_all), tuple(grads)
        return (dx, (dh0_all, _state(xp.stack(dc0), lay.unbatched, False))), tuple(grads)

    return result, backward


_DOC_COMMON = """
    Args:
        x: input ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``) or unbatched
            ``(T, input_size)``.
        hx: initial state{hx}, or None for zeros.
        weights: flat list in PyTorch's order: for each layer, for each direction,
            ``w_ih (G*H, in), w_hh (G*H, H)`` and, with ``has_biases``, ``b_ih (G*H,), b_hh (G*H,)``.
        lengths: optional ``(B,)`` valid lengths (nnx's equivalent of ``pack_padded_sequence``):
            outputs past a sequence's length are zero and its final state is the one at its last
            valid step.
        dropout, training: dropout on the outputs of every layer but the last, while training.
        workspace: a :class:`Workspace` that lends the buffer of the input projection during the
            forward (mutable libraries only); layers pass their own. None allocates per call.

    ``backward(dy, input_grad=True)`` takes ``dy`` shaped like the output ({dy}); any part may be
    None. It returns ``(dx, grads)``, or ``((dx, dhx), grads)`` when ``hx`` was given, with
    ``grads`` in the order of ``weights``.
"""


def rnn_forward(x: Array, hx: Array | None, weights: Sequence[Array], *, nonlinearity: str = "tanh",
                num_layers: int = 1, bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                training: bool = False, lengths: Any = None, has_biases: bool = True,
                workspace: Workspace | None = None) -> tuple[tuple, Backward]:
    """Elman RNN ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``; returns ``((output, h_n), backward)``."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_forward: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    return _recurrent_forward(mode, x, hx, weights, num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first, dropout=dropout, training=training, lengths=lengths,
                              has_biases=has_biases, workspace=workspace)


def lstm_forward(x: Array, hx: tuple[Array, Array] | None, weights: Sequence[Array], *, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 training: bool = False, lengths: Any = None, has_biases: bool = True,
                 workspace: Workspace | None = None, has_projections: bool = False) -> tuple[tuple, Backward]:
    """Long short-term memory, gate order ``i, f, g, o``; returns ``((output, (h_n, c_n)), backward)``.

    With ``has_projections`` each direction of each layer has a fifth array ``w_hr`` (``(P, H)``,
    after the biases, PyTorch's order) and carries ``h = (o * tanh(c)) @ w_hr.T`` of size ``P``.
    """
    return _recurrent_forward("LSTM", x, hx, weights, num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first, dropout=dropout, training=training, lengths=lengths,
                              has_biases=has_biases, workspace=workspace, has_projections=has_projections)


def gru_forward(x: Array, hx: Array | None, weights: Sequence[Array], *, num_layers: int = 1,
                bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                training: bool = False, lengths: Any = None, has_biases: bool = True,
                workspace: Workspace | None = None) -> tuple[tuple, Backward]:
    """Gated recurrent unit, gate order ``r, z, n``; returns ``((output, h_n), backward)``."""
    return _recurrent_forward("GRU", x, hx, weights, num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first, dropout=dropout, training=training, lengths=lengths,
                              has_biases=has_biases, workspace=workspace)


rnn_forward.__doc__ += _DOC_COMMON.format(hx=" ``(L*D, B, H)``", dy="``(d_output, d_h_n)``")
lstm_forward.__doc__ += _DOC_COMMON.format(hx=" ``(h0, c0)``, each ``(L*D, B, H)``",
                                           dy="``(d_output, (d_h_n, d_c_n))``")
gru_forward.__doc__ += _DOC_COMMON.format(hx=" ``(L*D, B, H)``", dy="``(d_output, d_h_n)``")


def rnn(x: Array, hx: Array | None, weights: Sequence[Array], **kwargs: Any) -> tuple:
    """Functional form of :func:`rnn_forward`: ``(output, h_n)``."""
    return rnn_forward(x, hx, weights, **kwargs)[0]


def lstm(x: Array, hx: tuple[Array, Array] | None, weights: Sequence[Array], **kwargs: Any) -> tuple:
    """Functional form of :func:`lstm_forward`: ``(output, (h_n, c_n))``."""
    return lstm_forward(x, hx, weights, **kwargs)[0]


def gru(x: Array, hx: Array | None, weights: Sequence[Array], **kwargs: Any) -> tuple:
    """Functional form of :func:`gru_forward`: ``(output, h_n)``."""
    return gru_forward(x, hx, weights, **kwargs)[0]


# ============================================================================ cells
def _cell_forward(mode: str, x: Array, hx: Any, w_ih: Array, w_hh: Array, b_ih: Array | None,
                  b_hh: Array | None, workspace: Workspace | None = None) -> tuple[Any, Backward]:
    """One step of ``mode``'s cell: the time loop of :func:`_direction_forward` over one step."""
    cell = CELLS[mode]
    b = backends.backend_of(x)
    xp = b.xp
    is_lstm = cell.has_cell_state
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None, :]
    given_hx = hx is not None
    if given_hx:
        h0, c0 = hx if is_lstm else (hx, None)
        if unbatched:
            h0 = h0[None, :]
            c0 = c0[None, :] if c0 is not None else None
    else:
        h0 = xp.zeros((x.shape[0], w_hh.shape[1]), dtype=x.dtype, device=b.device_of(x))
        c0 = h0 if is_lstm else None
    _, h1, c1, tape = _direction_forward(cell, b, x[None, ...], (w_ih, w_hh, b_ih, b_hh, None), h0, c0, None,
                                         False, workspace)
    if unbatched:
        h1 = h1[0, :]
        c1 = c1[0, :] if c1 is not None else None
    result = (h1, c1) if is_lstm else h1

    def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
        dh, dc = dy if is_lstm else (dy, None)
        if unbatched:
            dh = dh[None, :] if dh is not None else None
            dc = dc[None, :] if dc is not None else None
        dx, dh0, dc0, grads = _direction_backward(tape, None, dh, dc, input_grad)
        n = 4 if b_ih is not None else 2
        if dx is not None:
            dx = dx[0, 0, :] if unbatched else dx[0, ...]
        if not given_hx:
            return dx, grads[:n]
        if unbatched:
            dh0 = dh0[0, :]
            dc0 = dc0[0, :] if dc0 is not None else None
        return (dx, (dh0, dc0) if is_lstm else dh0), grads[:n]

    return result, backward


def rnn_cell_forward(x: Array, hx: Array | None, w_ih: Array, w_hh: Array, b_ih: Array | None = None,
                     b_hh: Array | None = None, nonlinearity: str = "tanh",
                     workspace: Workspace | None = None) -> tuple[Array, Backward]:
    """One step ``h' = act(W_ih x + b_ih + W_hh h + b_hh)`` for ``x`` ``(B, I)`` or ``(I,)``.

    ``backward(dh', input_grad=True)`` returns ``(dx, grads)`` or ``((dx, dh), grads)`` when
    ``hx`` was given; ``grads = (dw_ih, dw_hh[, db_ih, db_hh])``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_cell_forward: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return _cell_forward("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", x, hx, w_ih, w_hh, b_ih, b_hh,
                         workspace)


def lstm_cell_forward(x: Array, hx: tuple[Array, Array] | None, w_ih: Array, w_hh: Array, b_ih: Array | None = None,
                      b_hh: Array | None = None, workspace: Workspace | None = None
                      ) -> tuple[tuple[Array, Array], Backward]:
    """One LSTM step; returns ``((h', c'), backward)``.

    ``backward((dh', dc'), input_grad=True)`` (either may be None) returns ``(dx, grads)`` or
    ``((dx, (dh, dc)), grads)`` when ``hx`` was given.
    """
    return _cell_forward("LSTM", x, hx, w_ih, w_hh, b_ih, b_hh, workspace)


def gru_cell_forward(x: Array, hx: Array | None, w_ih: Array, w_hh: Array, b_ih: Array | None = None,
                     b_hh: Array | None = None, workspace: Workspace | None = None) -> tuple[Array, Backward]:
    """One GRU step; returns ``(h', backward)`` with the same backward as :func:`rnn_cell_forward`."""
    return _cell_forward("GRU", x, hx, w_ih, w_hh, b_ih, b_hh, workspace)


def rnn_cell(x: Array, hx: Array | None, w_ih: Array, w_hh: Array, b_ih: Array | None = None,
             b_hh: Array | None = None, nonlinearity: str = "tanh") -> Array:
    """Functional form of :func:`rnn_cell_forward`."""
    return rnn_cell_forward(x, hx, w_ih, w_hh, b_ih, b_hh, nonlinearity)[0]


def lstm_cell(x: Array, hx: tuple[Array, Array] | None, w_ih: Array, w_hh: Array, b_ih: Array | None = None,
              b_hh: Array | None = None) -> tuple[Array, Array]:
    """Functional form of :func:`lstm_cell_forward`."""
    return lstm_cell_forward(x, hx, w_ih, w_hh, b_ih, b_hh)[0]


def gru_cell(x: Array, hx: Array | None, w_ih: Array, w_hh: Array, b_ih: Array | None = None,
             b_hh: Array | None = None) -> Array:
    """Functional form of :func:`gru_cell_forward`."""
    return gru_cell_forward(x, hx, w_ih, w_hh, b_ih, b_hh)[0]
