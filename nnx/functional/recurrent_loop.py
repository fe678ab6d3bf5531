"""The time loop of one direction of one recurrent layer, forward and backward (explicit BPTT):
what :mod:`nnx.functional.recurrent` runs for every layer and direction of a stack and for the
single-step cells.

The loop drives a :class:`~nnx.functional.recurrent_cells.Cell` (its forward and backward step
side by side) and keeps a :class:`_Tape` for the backward. Where the adapter runs the whole loop
as one kernel (``Backend.recurrent_scan``: NumPy with its host kernels and an OpenBLAS it can
call), :func:`_scan_forward` hands it over; everything else (other backends, ``lengths``,
``proj_size``) runs the loop of per-step adapter kernels here, the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .recurrent_cells import Cell
from .workspace import Steps as _Steps
from .workspace import Workspace

Array = Any

__all__: list[str] = []


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
        xg = b.matmul(x2, w_ihT)
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
    dx = xp.reshape(b.matmul(dz, w_ih), (steps, -1, w_ih.shape[1])) if need_dx else None
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
    b = tape.b
    w_ih, w_hh, b_ih, _, w_hr = tape.weights
    gsize = w_ih.shape[0]
    dzh = xp.reshape(dgh.stacked(), (-1, gsize)) if tape.cell.split_bias else dz
    if tape.xh is not None:
        return _joint_weight_grads(b, tape.xh, dz, dzh, w_ih.shape[1], b_ih is not None, tape.cell.split_bias)
    hp = xp.reshape(tape.h_prev.stacked(), (-1, w_hh.shape[1]))
    dw_ih = b.matmul(xp.matrix_transpose(dz), tape.x2)
    dw_hh = b.matmul(xp.matrix_transpose(dzh), hp)
    db_ih = db_hh = None
    if b_ih is not None:
        db_ih = xp.sum(dz, axis=0)  # b_hh's gradient its own array: a parameter's gradient may be updated in place
        db_hh = xp.sum(dzh, axis=0) if tape.cell.split_bias else xp.asarray(db_ih, copy=True)
    dw_hr = None
    if w_hr is not None:
        dw_hr = xp.matmul(xp.matrix_transpose(xp.reshape(xp.stack(dproj), (-1, w_hr.shape[0]))),
                          xp.reshape(xp.stack(tape.unprojected), (-1, w_hr.shape[1])))
    return dw_ih, dw_hh, db_ih, db_hh, dw_hr


def _joint_weight_grads(b: Any, xh: Array, dz: Array, dzh: Array, in_size: int, has_bias: bool,
                        split_bias: bool) -> tuple:
    """:func:`_weight_grads` from ``xh = [x | 1 | h_prev]`` (:func:`_scan_forward`): one product
    ``dz^T xh`` gives ``[dW_ih | db | dW_hh]``; with a split bias (GRU), ``dz^T [x | 1]`` and
    ``dzh^T [1 | h_prev]``. Each gradient is returned as its own contiguous array."""
    xp = b.xp
    nb = 1 if has_bias else 0

    def part(g: Array, lo: int, hi: int) -> Array:
        return xp.asarray(g[:, lo:hi], copy=True)

    if split_bias:
        gi = b.matmul(xp.matrix_transpose(dz), xh[:, :in_size + nb])
        gh = b.matmul(xp.matrix_transpose(dzh), xh[:, in_size:])
        if not nb:
            return gi, gh, None, None, None
        return (part(gi, 0, in_size), part(gh, 1, gh.shape[1]), part(gi, in_size, in_size + 1)[:, 0],
                part(gh, 0, 1)[:, 0], None)
    g = b.matmul(xp.matrix_transpose(dz), xh)
    if not nb:
        return part(g, 0, in_size), part(g, in_size, g.shape[1]), None, None, None
    db = part(g, in_size, in_size + 1)[:, 0]
    return part(g, 0, in_size), part(g, in_size + 1, g.shape[1]), db, xp.asarray(db, copy=True), None
