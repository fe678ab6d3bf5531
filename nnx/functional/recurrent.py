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
  else kept in lists and stacked once (GPUs: fewer launches; immutable libraries: no writes).

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
from .workspace import Steps as _Steps
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


# ============================================================================ one direction of one layer
@dataclass
class _Tape:
    """What the forward of one direction of one layer keeps for its backward (one per call)."""

    cell: Cell
    b: Any
    x2: Array                  # the input, (T*B, I)
    weights: tuple             # w_ih, w_hh, b_ih, b_hh, w_hr (absent ones None)
    reverse: bool
    masks: tuple | None        # (bool, float) masks (T, B, 1), or None
    h_prev: _Steps             # per step: the state h before the step
    c_prev: _Steps             # per step: the cell state before the step (LSTM), else Nones
    saved: _Steps              # per step: what the cell's step_backward needs (one array)
    unprojected: list | None   # per step: h before the projection (LSTM with proj_size)
    ws: Workspace | None       # the layer's workspace, or None
    live: bool = True
    xh: Array | None = None    # (T*B, I [+ 1] + H) [x | 1 | h_prev] when the adapter ran the loop (_scan_forward)


def _input_bias(xp: Any, cell: Cell, weights: tuple) -> Array | None:
    """The bias added with the input projection: ``b_ih + b_hh`` (GRU: only ``b_hh``'s ``r`` and
    ``z`` parts; its ``n`` part goes to the cell, multiplied by ``r``), or None."""
    w_ih, _, b_ih, b_hh, _ = weights
    if b_ih is None:
        return None
    if cell.split_bias:
        split = 2 * (w_ih.shape[0] // 3)
        return xp.concat([b_ih[:split] + b_hh[:split], b_ih[split:]])
    return b_ih + b_hh


def _input_projection(b: Any, cell: Cell, x2: Array, weights: tuple, ws: Workspace | None,
                      shared: Array | None) -> tuple[Array, Any]:
    """``x W_ih^T + bias`` for all steps at once, ``(T*B, G*H)``; returns ``(xg, buffer to give back)``.
    With ``shared`` (``(T*B, G*H)``, a view into the buffer the steps share) it is written there."""
    xp = b.xp
    w_ih = weights[0]
    w_ihT = xp.matrix_transpose(w_ih)
    bias = _input_bias(xp, cell, weights)
    if shared is not None and bias is not None:
        # the bias as one more input column of ones: one product writes x W_ih^T + bias into the
        # strided shared buffer (a broadcast add over its rows costs as much as the product itself)
        x_aug = xp.ones((x2.shape[0], x2.shape[1] + 1), dtype=x2.dtype, device=b.device_of(x2))
        x_aug[:, :-1] = x2
        return b.matmul_into(x_aug, xp.concat([w_ihT, bias[None, :]], axis=0), shared), None
    buf = None
    if shared is not None:
        xg = b.matmul_into(x2, w_ihT, shared)
    elif ws is not None and b.mutable:
        buf = ws.take(xp, (x2.shape[0], w_ih.shape[0]), x2.dtype, b.device_of(x2), type(x2))
        xg = b.matmul_into(x2, w_ihT, buf)
    else:
        xg = xp.matmul(x2, w_ihT)
    if bias is not None:
        xg += bias
    return xg, buf


def _direction_forward(cell: Cell, b: Any, x: Array, weights: tuple, h0: Array, c0: Array | None,
                       masks: tuple | None, reverse: bool, ws: Workspace | None) -> tuple[Array, Array, Any, _Tape]:
    """One direction of one layer over ``x`` ``(T, B, I)``: ``(out (T, B, H), h_n, c_n, tape)``; ``weights``
    ``(w_ih, w_hh, b_ih, b_hh, w_hr)`` (absent ones None; with ``w_hr`` ``(P, H)``, ``h = h' @ w_hr.T``)."""
    xp = b.xp
    steps, batch, in_size = x.shape
    w_ih, w_hh, _, b_hh, w_hr = weights
    x2 = xp.reshape(x, (steps * batch, in_size))
    gsize = w_ih.shape[0]
    shared = None
    if (ws is not None and b.mutable and b.host_memory and cell.saved >= cell.gates
            and x.dtype == w_ih.dtype == w_hh.dtype == h0.dtype):
        # One buffer (T, B, saved*H): step t's input projection in its first G*H columns, overwritten by
        # the step's saved activations once consumed, and in the backward by the step's gate gradients
        # once those are consumed: as little memory touched per call as the steps need.
        shared = ws.take(xp, (steps, batch, cell.saved * (gsize // cell.gates)), x.dtype, b.device_of(x), type(x))
    bh = b_hh[2 * (w_hh.shape[0] // 3):] if cell.split_bias and b_hh is not None else None  # GRU: b_hh's n part
    if shared is not None and masks is None and w_hr is None and b.recurrent_scan(cell.name, x, h0, c0, w_hh):
        return _scan_forward(cell, b, x2, weights, h0, c0, bh, reverse, ws, shared)
    xg, buf = _input_projection(b, cell, x2, weights, ws,
                                None if shared is None else xp.reshape(shared[..., :gsize], (steps * batch, gsize)))
    xg = xp.reshape(xg, (steps, batch, gsize))
    w_hhT = xp.matrix_transpose(w_hh)
    if b.host_memory and b.mutable:  # row-major, once per sequence: OpenBLAS's per-step h W_hh^T is
        w_hhT = xp.reshape(w_hhT, w_hhT.shape, copy=True)  # 1.25x faster than on the transposed view
    w_hrT = xp.matrix_transpose(w_hr) if w_hr is not None else None
    mb, mf = masks if masks is not None else (None, None)
    outs: list = [None] * steps
    tape = _Tape(cell, b, x2, weights, reverse, masks, _Steps(b, ws, steps), _Steps(b, ws, steps),
                 _Steps(b, ws, steps, shared), [None] * steps if w_hr is not None else None, ws)
    step, saved, h_prev, c_prev = cell.step_forward, tape.saved, tape.h_prev, tape.c_prev
    has_c = cell.has_cell_state
    h, c = h0, c0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        out = saved.slot(t)  # pooled: the kernel writes the activations straight into the shared buffer
        h_new, c_new, act = step(b, xg[t, ...], h, c, w_hhT, bh, out=out)
        if out is None:
            saved[t] = act
        h_prev[t] = h
        if has_c:
            c_prev[t] = c
        if w_hrT is not None:
            tape.unprojected[t] = h_new
            h_new = xp.matmul(h_new, w_hrT)
        if mb is not None:
            outs[t] = h_new * mf[t, ...]
            h = xp.where(mb[t, ...], h_new, h)
            c = xp.where(mb[t, ...], c_new, c) if c is not None else None
        else:
            outs[t] = h = h_new
            c = c_new
    if buf is not None:
        ws.give(buf)  # nothing of the step results aliases the projection
    if saved.buf is not None and cell.saved_is_state:
        h = xp.asarray(h, copy=True)  # h_n may be a step of the shared buffer, which the backward overwrites
    return xp.stack(outs), h, c, tape


def _scan_forward(cell: Cell, b: Any, x2: Array, weights: tuple, h0: Array, c0: Array | None, bh: Array | None,
                  reverse: bool, ws: Workspace, shared: Array) -> tuple[Array, Array, Any, _Tape]:
    """:func:`_direction_forward`'s loop as one adapter call (``Backend.recurrent_scan``): the same
    tape, its per-step arrays written by the adapter into whole ``(T, B, H)`` buffers.

    The input, a column of ones (with biases) and the states before each step are the columns of
    one ``(T*B, I [+ 1] + H)`` buffer, ``xh``: the input projection reads its first columns (the
    ones column adds the bias in the same product), and the weight gradients are one product
    ``dz^T xh`` (``[dW_ih | db | dW_hh]``, measured 2.5 against 3.1 ms for three at the LSTM
    benchmark's 2048 x 512 gates) instead of two products and a sum."""
    xp = b.xp
    steps, batch, hid = shared.shape[0], shared.shape[1], weights[1].shape[1]
    gsize, in_size = weights[0].shape
    bias = _input_bias(xp, cell, weights)
    nb = 0 if bias is None else 1
    dev, kind = b.device_of(shared), type(shared)
    xh = ws.take(xp, (steps * batch, in_size + nb + hid), shared.dtype, dev, kind)
    xh[:, :in_size] = x2
    w_in = xp.matrix_transpose(weights[0])
    if nb:
        xh[:, in_size] = 1.0
        w_in = xp.concat([w_in, bias[None, :]], axis=0)
    b.matmul_into(xh[:, :in_size + nb], w_in, xp.reshape(shared[..., :gsize], (steps * batch, gsize)))
    h_prev = _Steps(b, ws, steps, xp.reshape(xh, (steps, batch, -1))[..., in_size + nb:], owned=False)
    c_prev = _Steps(b, ws, steps, ws.take(xp, (steps, batch, hid), shared.dtype, dev, kind)
                    if cell.has_cell_state else None)
    out = xp.empty((steps, batch, hid), dtype=shared.dtype, device=dev)
    h, c = b.recurrent_scan_forward(cell.name, shared, h0, c0, weights[1], bh, reverse, out, h_prev.buf, c_prev.buf)
    tape = _Tape(cell, b, x2, weights, reverse, None, h_prev, c_prev, _Steps(b, ws, steps, shared), None, ws,
                 xh=xh)
    return out, h, c, tape


def _direction_backward(tape: _Tape, dout: Array | None, dh_n: Array | None, dc_n: Array | None,
                        need_dx: bool) -> tuple[Array | None, Array, Array | None, tuple]:
    """Differentiate one :func:`_direction_forward`.

    Returns ``(dx (T, B, I) or None, dh0, dc0 or None, (dw_ih, dw_hh, db_ih, db_hh, dw_hr))``;
    ``dout``, ``dh_n``, ``dc_n`` may be None (no gradient).
    """
    if not tape.live:
        raise RuntimeError("recurrent backward: this forward pass was already differentiated or released")
    tape.live = False
    b, cell = tape.b, tape.cell
    xp = b.xp
    w_ih, w_hh, _, _, w_hr = tape.weights
    steps = len(tape.saved)
    shared = tape.saved.buf if tape.saved.pool is not None else None  # see _direction_forward
    dgx = _Steps(b, tape.ws, steps, None if shared is None else shared[..., :w_ih.shape[0]], owned=False)
    dgh = dgx
    if cell.split_bias:
        dgh = _Steps(b, tape.ws, steps, None if shared is None else
                     tape.ws.take(xp, (steps, *shared.shape[1:-1], w_ih.shape[0]), shared.dtype, b.device_of(shared),
                                  type(shared)))
    dproj: list = [None] * steps
    if tape.xh is not None:
        dh, dc = b.recurrent_scan_backward(cell.name, shared, w_hh, tape.h_prev.buf, tape.c_prev.buf, dout, dh_n,
                                           dc_n, tape.reverse, dgh.buf if dgh is not dgx else None)
    else:
        dh, dc = _loop_backward(tape, dout, dh_n, dc_n, dgx, dgh, dproj)
    dz = xp.reshape(dgx.stacked(), (-1, w_ih.shape[0]))
    grads = _weight_grads(xp, tape, dz, dgh, dproj)
    dx = xp.reshape(xp.matmul(dz, w_ih), (steps, -1, w_ih.shape[1])) if need_dx else None
    for pooled in {id(c): c for c in (dgx, dgh, tape.h_prev, tape.c_prev, tape.saved)}.values():
        pooled.give_back()
    if tape.xh is not None:
        tape.ws.give(tape.xh)
    tape.unprojected, tape.xh = [], None
    return dx, dh, dc, grads


def _loop_backward(tape: _Tape, dout: Array | None, dh_n: Array | None, dc_n: Array | None, dgx: _Steps,
                   dgh: _Steps, dproj: list) -> tuple[Array, Array | None]:
    """The time loop of :func:`_direction_backward`: fills ``dgx``, ``dgh`` (and ``dproj``) step by
    step; returns the gradients of the initial states ``(dh0, dc0)``."""
    b, cell = tape.b, tape.cell
    xp = b.xp
    w_hh, w_hr = tape.weights[1], tape.weights[4]
    mb, mf = tape.masks if tape.masks is not None else (None, None)
    dh = dh_n if dh_n is not None else xp.zeros_like(tape.h_prev[0])
    dc = dc_n
    if dc is None and mb is not None and cell.has_cell_state:
        dc = xp.zeros_like(tape.c_prev[0])
    steps = len(tape.saved)
    step, saved, h_prev, c_prev = cell.step_backward, tape.saved, tape.h_prev, tape.c_prev
    has_c, needs_h = cell.has_cell_state, cell.step_needs_h
    for t in (range(steps) if tape.reverse else range(steps - 1, -1, -1)):
        dh_new = dh + dout[t, ...] if dout is not None else dh
        dc_new = dc
        if mb is not None:
            m = mf[t, ...]
            dh_new = dh_new * m
            dh_pass = dh - dh * m
            if dc is not None:
                dc_new = dc * m
                dc_pass = dc - dc_new
        if w_hr is not None:
            dproj[t] = dh_new
            dh_new = xp.matmul(dh_new, w_hr)
        out = dgx.slot(t)  # pooled: the kernel writes the gate gradients over the step's activations
        out_gh = dgh.slot(t) if dgh is not dgx else None
        dgx_t, dgh_t, dh, dc = step(b, dh_new, dc_new, saved[t], h_prev[t] if needs_h else None,
                                    c_prev[t] if has_c else None, w_hh, out=out, out_gh=out_gh)
        if out is None:
            dgx[t] = dgx_t
        if dgh is not dgx and out_gh is None:
            dgh[t] = dgh_t
        if mb is not None:
            dh = dh + dh_pass
            dc = dc + dc_pass if dc is not None else None
    return dh, dc


def _weight_grads(xp: Any, tape: _Tape, dz: Array, dgh: _Steps, dproj: list) -> tuple:
    """``(dw_ih, dw_hh, db_ih, db_hh, dw_hr)`` from the gate gradients ``dz`` ``(T*B, G*H)`` (one
    product each)."""
    w_ih, w_hh, b_ih, _, w_hr = tape.weights
    gsize = w_ih.shape[0]
    dzh = xp.reshape(dgh.stacked(), (-1, gsize)) if tape.cell.split_bias else dz
    if tape.xh is not None:
        return _joint_weight_grads(xp, tape.xh, dz, dzh, w_ih.shape[1], b_ih is not None, tape.cell.split_bias)
    hp = xp.reshape(tape.h_prev.stacked(), (-1, w_hh.shape[1]))
    dw_ih = xp.matmul(xp.matrix_transpose(dz), tape.x2)
    dw_hh = xp.matmul(xp.matrix_transpose(dzh), hp)
    db_ih = db_hh = None
    if b_ih is not None:
        db_ih = xp.sum(dz, axis=0)  # b_hh's gradient its own array: a parameter's gradient may be updated in place
        db_hh = xp.sum(dzh, axis=0) if tape.cell.split_bias else xp.asarray(db_ih, copy=True)
    dw_hr = None
    if w_hr is not None:
        dw_hr = xp.matmul(xp.matrix_transpose(xp.reshape(xp.stack(dproj), (-1, w_hr.shape[0]))),
                          xp.reshape(xp.stack(tape.unprojected), (-1, w_hr.shape[1])))
    return dw_ih, dw_hh, db_ih, db_hh, dw_hr


def _joint_weight_grads(xp: Any, xh: Array, dz: Array, dzh: Array, in_size: int, has_bias: bool,
                        split_bias: bool) -> tuple:
    """:func:`_weight_grads` from ``xh = [x | 1 | h_prev]`` (:func:`_scan_forward`): one product
    ``dz^T xh`` gives ``[dW_ih | db | dW_hh]``; with a split bias (GRU), ``dz^T [x | 1]`` and
    ``dzh^T [1 | h_prev]``. Each gradient is returned as its own contiguous array."""
    nb = 1 if has_bias else 0

    def part(g: Array, lo: int, hi: int) -> Array:
        return xp.asarray(g[:, lo:hi], copy=True)

    if split_bias:
        gi = xp.matmul(xp.matrix_transpose(dz), xh[:, :in_size + nb])
        gh = xp.matmul(xp.matrix_transpose(dzh), xh[:, in_size:])
        if not nb:
            return gi, gh, None, None, None
        return (part(gi, 0, in_size), part(gh, 1, gh.shape[1]), part(gi, in_size, in_size + 1)[:, 0],
                part(gh, 0, 1)[:, 0], None)
    g = xp.matmul(xp.matrix_transpose(dz), xh)
    if not nb:
        return part(g, 0, in_size), part(g, in_size, g.shape[1]), None, None, None
    db = part(g, in_size, in_size + 1)[:, 0]
    return part(g, 0, in_size), part(g, in_size + 1, g.shape[1]), db, xp.asarray(db, copy=True), None


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
