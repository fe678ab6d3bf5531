"""Embedding and recurrent kernels (RNN, LSTM, GRU and their single-step cells), explicit BPTT.

Every op follows the functional convention of nnx: ``name_forward(...)`` returns
``(output, backward)``; ``name(...)`` returns only the output.

Backpropagation through time is written out by hand and organised for speed:

* the input projection of all time steps is one matrix product ``(T*B, I) @ (I, G*H)``;
* the recurrent part is one fused matrix product per step for all gates
  (``(B, H) @ (H, 4H)`` for the LSTM, ``3H`` for the GRU), one ``tanh`` over all gates (the
  sigmoid gates use ``sigmoid(z) = (1 + tanh(z/2)) / 2`` with the halving folded into a scaled copy
  of the weights, made once per call);
* the backward pass runs one ``(B, G*H) @ (G*H, H)`` product per step; the weight gradients,
  bias gradients and the input gradient are then one matrix product (or sum) each over all steps;
* the closure keeps only the activations of the call and nothing survives its backward.

Layout follows PyTorch: time-major ``(T, B, features)`` inputs, gate order LSTM ``i, f, g, o``
and GRU ``r, z, n`` with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, flat weight lists in
PyTorch's order (for each layer, for each direction: ``w_ih, w_hh, b_ih, b_hh``).

Variable-length batches: pass ``lengths`` (one integer per sequence). Steps at or past a
sequence's length leave its state unchanged and produce zeros in the output, so the outputs,
final states and gradients equal those of PyTorch's ``pack_padded_sequence`` /
``pad_packed_sequence(total_length=T)`` pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

from .workspace import Workspace

Array = Any
Backward = Callable[..., tuple]

__all__ = [
    "Workspace",
    "embedding",
    "embedding_forward",
    "embedding_renorm_",
    "gru",
    "gru_cell",
    "gru_cell_forward",
    "gru_forward",
    "lengths_mask",
    "lstm",
    "lstm_cell",
    "lstm_cell_forward",
    "lstm_forward",
    "rnn",
    "rnn_cell",
    "rnn_cell_forward",
    "rnn_forward",
]


# ============================================================================ embedding
def embedding_renorm_(weight: Array, indices: Array, max_norm: float, norm_type: float = 2.0) -> Array:
    """Rescale, in place, the rows of ``weight`` named in ``indices`` whose norm exceeds ``max_norm``.

    As ``torch.embedding_renorm_``: such a row is multiplied by ``max_norm / (norm + 1e-7)``; other
    rows are untouched. Not differentiated (PyTorch does the same under ``no_grad``).
    Returns ``weight``.
    """
    b = backends.backend_of(weight)
    xp = b.xp
    n = weight.shape[0]
    flat = xp.reshape(indices, (-1,))
    ones = xp.ones((flat.shape[0], 1), dtype=weight.dtype, device=weight.device)
    counts = b.scatter_add(xp.zeros((n, 1), dtype=weight.dtype, device=weight.device), flat, ones)
    if norm_type == 2.0:
        norms = xp.sqrt(xp.sum(weight * weight, axis=1, keepdims=True))
    elif norm_type == float("inf"):
        norms = xp.max(xp.abs(weight), axis=1, keepdims=True)
    else:
        norms = xp.sum(xp.abs(weight) ** norm_type, axis=1, keepdims=True) ** (1.0 / norm_type)
    rescale = (counts > 0.0) & (norms > max_norm)
    scale = xp.where(rescale, max_norm / (norms + 1e-7), xp.ones_like(norms))
    weight[...] = weight * scale
    return weight


def embedding_forward(input: Array, weight: Array, padding_idx: int | None = None, max_norm: float | None = None,
                      norm_type: float = 2.0, scale_grad_by_freq: bool = False) -> tuple[Array, Backward]:
    """Look up rows of ``weight`` (``(num_embeddings, embedding_dim)``) for integer ``input`` of any shape.

    Output: ``input.shape + (embedding_dim,)``. ``backward(dy, input_grad=True)`` returns
    ``(None, (dweight,))``: the gradient of the table is a scatter-add of ``dy``'s rows (repeated
    ids sum), from the backend adapter's ``scatter_add``; row ``padding_idx`` gets none. With
    ``scale_grad_by_freq`` each row's gradient is divided by how often its id occurs in ``input``.
    With ``max_norm``, looked-up rows are renormalised in place first (as PyTorch).

    >>> y, backward = embedding_forward(ids, table)       # doctest: +SKIP
    """
    b = backends.backend_of(weight)
    xp = b.xp
    if max_norm is not None:
        embedding_renorm_(weight, input, float(max_norm), float(norm_type))
    shape = tuple(input.shape)
    flat = xp.reshape(input, (-1,))
    n, dim = weight.shape
    y = xp.reshape(xp.take(weight, flat, axis=0), shape + (dim,))
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n

    def backward(dy: Array, input_grad: bool = True) -> tuple[None, tuple]:
        rows = xp.reshape(dy, (-1, dim))
        if scale_grad_by_freq:
            ones = xp.ones((flat.shape[0], 1), dtype=dy.dtype, device=dy.device)
            counts = b.scatter_add(xp.zeros((n, 1), dtype=dy.dtype, device=dy.device), flat, ones)
            rows = rows / xp.take(counts, flat, axis=0)
        dweight = b.scatter_add(xp.zeros((n, dim), dtype=dy.dtype, device=dy.device), flat, rows)
        if padding_idx is not None:
            dweight[padding_idx, ...] = 0.0
        return None, (dweight,)

    return y, backward


def embedding(input: Array, weight: Array, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False) -> Array:
    """Functional form of :func:`embedding_forward` (``torch.nn.functional.embedding``)."""
    return embedding_forward(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq)[0]


# ============================================================================ masks
def lengths_mask(lengths: Any, steps: int, like: Array) -> tuple[Array, Array]:
    """Step masks for a padded time-major batch: ``(T, B, 1)`` booleans and the same as ``like``'s dtype.

    ``lengths`` is a sequence of ints, a host array or a backend integer array of shape ``(B,)``;
    element ``[t, b]`` is true while ``t < lengths[b]``.
    """
    b = backends.backend_of(like)
    xp = b.xp
    if not b.owns(lengths):
        lengths = b.asarray(lengths, dtype=xp.int64)
    elif lengths.device != like.device:
        lengths = b.asarray(b.to_numpy(lengths), dtype=xp.int64)
    steps_idx = xp.arange(steps, dtype=lengths.dtype, device=like.device)
    mask = steps_idx[:, None] < lengths[None, :]
    mask = mask[:, :, None]
    return mask, xp.astype(mask, like.dtype)


# ============================================================================ one direction of one layer
def _prescale(xp: Any, mode: str, hidden: int, dtype: Any, device: Any) -> Array | None:
    """Per-gate-row factor folded into the weights: 0.5 for sigmoid gates (tanh(z/2) trick), else 1."""
    if mode == "LSTM":
        parts = [0.5, 0.5, 1.0, 0.5]
    elif mode == "GRU":
        parts = [0.5, 0.5, 1.0]
    else:
        return None
    return xp.concat([xp.full((hidden,), p, dtype=dtype, device=device) for p in parts])


def _direction(mode: str, xp: Any, x: Array, w_ih: Array, w_hh: Array, b_ih: Array | None, b_hh: Array | None,
               h0: Array, c0: Array | None, masks: tuple[Array, Array] | None, reverse: bool,
               consts: dict, w_hr: Array | None = None) -> tuple[Array, Array, Array | None, Callable]:
    """Run one direction of one layer over ``x`` (``(T, B, I)``).

    Returns ``(out (T, B, H), h_n, c_n or None, backward)`` with
    ``backward(dout, dh_n, dc_n, need_dx) -> (dx, dh0, dc0, (dw_ih, dw_hh, db_ih, db_hh, dw_hr))``
    (``dout``, ``dh_n``, ``dc_n`` may be None) and ``backward.release()`` to give the buffers back
    without differentiating.

    Storage: the input projection ``xg`` (``(T, B, G*H)``) is overwritten step by step with the
    gate activations, and in the backward pass with the gate gradients; the previous states (and
    for the LSTM the cell states and ``tanh(c)``) go into workspace buffers. An LSTM with
    projections (``w_hr``, ``(P, H)``) carries ``h = (o * tanh(c)) @ w_hr.T`` of size ``P``.
    """
    steps, batch, in_size = x.shape
    state_size = w_hh.shape[1]  # size of h: hidden, or proj_size for an LSTM with projections
    gh = w_hh.shape[0]  # gates * hidden
    hidden = gh // {"LSTM": 4, "GRU": 3}.get(mode, 1)
    scale = consts.get("prescale")
    ws: Workspace | None = consts.get("workspace")
    dtype, device = x.dtype, x.device
    kind = type(x)

    def take(shape: tuple[int, ...]) -> Array:
        if ws is None:
            return xp.empty(shape, dtype=dtype, device=device)
        return ws.take(xp, shape, dtype, device, kind)

    x2 = xp.reshape(x, (steps * batch, in_size))
    if scale is not None:
        w_ih_s = w_ih * scale[:, None]
        w_hh_sT = xp.matrix_transpose(w_hh * scale[:, None])
    else:
        w_ih_s, w_hh_sT = w_ih, xp.matrix_transpose(w_hh)
    xg = xp.matmul(x2, xp.matrix_transpose(w_ih_s))
    bh = None
    if mode == "GRU":
        if b_ih is not None:
            xg += b_ih * scale
            bh = b_hh * scale
    elif b_ih is not None:
        bias = b_ih + b_hh
        xg += bias * scale if scale is not None else bias
    xg = xp.reshape(xg, (steps, batch, gh))
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    mb, mf = masks if masks is not None else (None, None)

    outs: list = [None] * steps
    hp = take((steps, batch, state_size))       # state before each step
    mp = None
    cp = tc_buf = gn = None
    h, c = h0, c0
    two_h = 2 * hidden
    if mode == "LSTM":
        cp = take((steps, batch, hidden))       # cell state before each step
        tc_buf = take((steps, batch, hidden))   # tanh(new cell state)
        if w_hr is not None:
            mp = take((steps, batch, hidden))   # o * tanh(c), before the projection
            w_hrT = xp.matrix_transpose(w_hr)
        a_scale, a_shift = consts["act_scale"], consts["act_shift"]
        for t in order:
            z = xp.matmul(h, w_hh_sT)
            z += xg[t, ...]
            a = xp.tanh(z)
            a *= a_scale
            a += a_shift
            xg[t, ...] = a
            i, f, g, o = a[:, :hidden], a[:, hidden:two_h], a[:, two_h:3 * hidden], a[:, 3 * hidden:]
            c_new = f * c
            c_new += i * g
            tc = xp.tanh(c_new)
            h_new = o * tc
            if w_hr is not None:
                mp[t, ...] = h_new
                h_new = xp.matmul(h_new, w_hrT)
            hp[t, ...] = h
            cp[t, ...] = c
            tc_buf[t, ...] = tc
            if mb is not None:
                outs[t] = h_new * mf[t, ...]
                h = xp.where(mb[t, ...], h_new, h)
                c = xp.where(mb[t, ...], c_new, c)
            else:
                outs[t] = h = h_new
                c = c_new
    elif mode == "GRU":
        gn = take((steps, batch, hidden))       # W_hn h + b_hn
        for t in order:
            gh_t = xp.matmul(h, w_hh_sT)
            if bh is not None:
                gh_t += bh
            xt = xg[t, ...]
            rz = xp.tanh(xt[:, :two_h] + gh_t[:, :two_h])
            rz *= 0.5
            rz += 0.5
            ghn = gh_t[:, two_h:]
            n = ghn * rz[:, :hidden]
            n += xt[:, two_h:]
            n = xp.tanh(n)
            h_new = h - n
            h_new *= rz[:, hidden:]
            h_new += n
            xg[t, :, :two_h] = rz
            xg[t, :, two_h:] = n
            gn[t, ...] = ghn
            hp[t, ...] = h
            if mb is not None:
                outs[t] = h_new * mf[t, ...]
                h = xp.where(mb[t, ...], h_new, h)
            else:
                outs[t] = h = h_new
    else:
        relu = mode == "RNN_RELU"
        for t in order:
            z = xp.matmul(h, w_hh_sT)
            z += xg[t, ...]
            h_new = xp.maximum(z, 0.0) if relu else xp.tanh(z)
            xg[t, ...] = h_new
            hp[t, ...] = h
            if mb is not None:
                outs[t] = h_new * mf[t, ...]
                h = xp.where(mb[t, ...], h_new, h)
            else:
                outs[t] = h = h_new
    out = xp.stack(outs)
    del outs
    h_n, c_n = h, c
    state = {"live": True}

    def release() -> None:
        if state["live"] and ws is not None:
            ws.give(*[buf for buf in (hp, cp, tc_buf, gn, mp) if buf is not None])
        state["live"] = False

    def backward(dout: Array | None, dh_n: Array | None, dc_n: Array | None,
                 need_dx: bool) -> tuple[Array | None, Array, Array | None, tuple]:
        if not state["live"]:
            raise RuntimeError("recurrent backward: this forward pass was already differentiated or released")
        dh = dh_n if dh_n is not None else xp.zeros_like(h0)
        dc = None
        dzh = None
        if mode == "LSTM":
            dc = dc_n if dc_n is not None else xp.zeros_like(c0)
            d_shift = consts["d_shift"]
            s_mask = consts["d_smask"]
            if w_hr is not None:
                dhp = take((steps, batch, state_size))  # gradients of the projected outputs
        elif mode == "GRU":
            dzh = take((steps, batch, gh))
        back_order = range(steps) if reverse else range(steps - 1, -1, -1)
        for t in back_order:
            if mb is not None:
                m = mf[t, ...]
                dh_in = dh + dout[t, ...] if dout is not None else dh
                dh_new = dh_in * m
                dh_pass = dh - dh * m
                if dc is not None:
                    dc_new = dc * m
                    dc_pass = dc - dc_new
            else:
                dh_new = dh + dout[t, ...] if dout is not None else dh
                dc_new = dc
            if mode == "LSTM":
                a = xg[t, ...]
                tc = tc_buf[t, ...]
                i, f, g, o = a[:, :hidden], a[:, hidden:two_h], a[:, two_h:3 * hidden], a[:, 3 * hidden:]
                if w_hr is not None:
                    dhp[t, ...] = dh_new
                    dh_new = xp.matmul(dh_new, w_hr)
                dcn = dh_new * o
                dcn *= 1.0 - tc * tc
                dcn += dc_new
                d_act = xp.concat([dcn * g, dcn * cp[t, ...], dcn * i, dh_new * tc], axis=1)
                deriv = s_mask - a
                deriv *= a
                deriv += d_shift
                d_act *= deriv
                dc = dcn * f
                xg[t, ...] = d_act          # the activations of step t are not needed any more
                dh = xp.matmul(d_act, w_hh)
                if mb is not None:
                    dc += dc_pass
            elif mode == "GRU":
                xt = xg[t, ...]
                rz, n = xt[:, :two_h], xt[:, two_h:]
                ghn = gn[t, ...]
                r, z = rz[:, :hidden], rz[:, hidden:]
                dn = dh_new - dh_new * z
                dpre_n = dn * (1.0 - n * n)
                d_rz = xp.concat([dpre_n * ghn, dh_new * (hp[t, ...] - n)], axis=1)
                d_rz *= rz * (1.0 - rz)
                dzh_t = xp.concat([d_rz, dpre_n * r], axis=1)
                dh_direct = dh_new * z
                xg[t, ...] = xp.concat([d_rz, dpre_n], axis=1)
                dzh[t, ...] = dzh_t
                dh = xp.matmul(dzh_t, w_hh)
                dh += dh_direct
            else:
                hn = xg[t, ...]
                if mode == "RNN_RELU":
                    dz = dh_new * xp.astype(hn > 0.0, hn.dtype)
                else:
                    dz = dh_new * (1.0 - hn * hn)
                xg[t, ...] = dz
                dh = xp.matmul(dz, w_hh)
            if mb is not None:
                dh += dh_pass
        dz_all = xp.reshape(xg, (steps * batch, gh))
        hp2 = xp.reshape(hp, (steps * batch, state_size))
        dzh_all = dz_all if dzh is None else xp.reshape(dzh, (steps * batch, gh))
        dw_ih = xp.matmul(xp.matrix_transpose(dz_all), x2)
        dw_hh = xp.matmul(xp.matrix_transpose(dzh_all), hp2)
        if b_ih is not None:
            db_ih = xp.sum(dz_all, axis=0)
            db_hh = xp.sum(dzh_all, axis=0) if dzh is not None else db_ih
        else:
            db_ih = db_hh = None
        dx = xp.reshape(xp.matmul(dz_all, w_ih), (steps, batch, in_size)) if need_dx else None
        dw_hr = None
        if w_hr is not None:
            dw_hr = xp.matmul(xp.matrix_transpose(xp.reshape(dhp, (steps * batch, state_size))),
                              xp.reshape(mp, (steps * batch, hidden)))
            if ws is not None:
                ws.give(dhp)
        if dzh is not None and ws is not None:
            ws.give(dzh)
        release()
        return dx, dh, dc, (dw_ih, dw_hh, db_ih, db_hh, dw_hr)

    backward.release = release  # type: ignore[attr-defined]
    return out, h_n, c_n, backward


def _constants(xp: Any, mode: str, hidden: int, dtype: Any, device: Any) -> dict:
    consts: dict = {"prescale": _prescale(xp, mode, hidden, dtype, device)}
    if mode == "LSTM":
        def vec(parts: list[float]) -> Array:
            return xp.concat([xp.full((hidden,), p, dtype=dtype, device=device) for p in parts])

        consts["act_scale"] = vec([0.5, 0.5, 1.0, 0.5])  # sigmoid(z) = 0.5 * tanh(z / 2) + 0.5
        consts["act_shift"] = vec([0.5, 0.5, 0.0, 0.5])
        consts["d_smask"] = vec([1.0, 1.0, 0.0, 1.0])    # a * (m - a) + s: a(1-a) or 1 - a^2
        consts["d_shift"] = vec([0.0, 0.0, 1.0, 0.0])
    return consts


# ============================================================================ full layers
def _recurrent_forward(mode: str, x: Array, hx: Any, weights: Sequence[Array], *, num_layers: int,
                       bidirectional: bool, batch_first: bool, dropout: float, training: bool,
                       lengths: Any, has_biases: bool, workspace: Workspace | None = None,
                       has_projections: bool = False) -> tuple[tuple, Backward]:
    b = backends.backend_of(x)
    xp = b.xp
    directions = 2 if bidirectional else 1
    per_dir = (4 if has_biases else 2) + (1 if has_projections else 0)
    if len(weights) != num_layers * directions * per_dir:
        raise ValueError(f"{mode.lower()}_forward: expected {num_layers * directions * per_dir} weight arrays "
                         f"for num_layers={num_layers}, bidirectional={bidirectional}, has_biases={has_biases}"
                         f"{', has_projections=True' if has_projections else ''}; got {len(weights)}")
    is_lstm = mode == "LSTM"
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = xp.permute_dims(x, (1, 0, 2))
    steps, batch = x.shape[0], x.shape[1]
    hidden = weights[1].shape[1]          # size of h (proj_size with projections)
    cell_size = weights[1].shape[0] // 4 if is_lstm else hidden
    h0_all = c0_all = None
    if hx is not None:
        h0_all, c0_all = hx if is_lstm else (hx, None)
        if unbatched:
            h0_all = h0_all[:, None, :]
            c0_all = c0_all[:, None, :] if c0_all is not None else None
    zeros = c_zeros = None
    if h0_all is None:
        zeros = xp.zeros((batch, hidden), dtype=x.dtype, device=x.device)
        c_zeros = zeros if cell_size == hidden else xp.zeros((batch, cell_size), dtype=x.dtype, device=x.device)
    masks = lengths_mask(lengths, steps, x) if lengths is not None else None
    consts = _constants(xp, mode, cell_size, x.dtype, x.device)
    consts["workspace"] = workspace

    layer_in = x
    backs: list = []      # per layer: list of per-direction backward closures
    drops: list = []      # per layer: dropout scale mask or None
    h_n: list = []
    c_n: list = []
    for layer in range(num_layers):
        outs, dir_backs = [], []
        for d in range(directions):
            k = layer * directions + d
            w = weights[k * per_dir:(k + 1) * per_dir]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            h0 = h0_all[k, ...] if h0_all is not None else zeros
            c0 = (c0_all[k, ...] if c0_all is not None else c_zeros) if is_lstm else None
            out, hn, cn, back = _direction(mode, xp, layer_in, w[0], w[1], b_ih, b_hh, h0, c0, masks,
                                           reverse=d == 1, consts=consts,
                                           w_hr=w[-1] if has_projections else None)
            outs.append(out)
            dir_backs.append(back)
            h_n.append(hn)
            c_n.append(cn)
        layer_out = outs[0] if directions == 1 else xp.concat(outs, axis=2)
        drop = None
        if training and dropout > 0.0 and layer < num_layers - 1:
            if dropout >= 1.0:
                drop = xp.zeros(layer_out.shape, dtype=layer_out.dtype, device=layer_out.device)
            else:
                drop = b.bernoulli(tuple(layer_out.shape), 1.0 - dropout, layer_out.dtype)
                drop *= 1.0 / (1.0 - dropout)
            layer_out = layer_out * drop
        backs.append(dir_backs)
        drops.append(drop)
        layer_in = layer_out
    output = layer_in
    hn_all = xp.stack(h_n)
    cn_all = xp.stack(c_n) if is_lstm else None
    if unbatched:
        output = output[:, 0, :]
        hn_all = hn_all[:, 0, :]
        cn_all = cn_all[:, 0, :] if is_lstm else None
    elif batch_first:
        output = xp.permute_dims(output, (1, 0, 2))
    result = (output, (hn_all, cn_all)) if is_lstm else (output, hn_all)
    given_hx = hx is not None

    def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
        if backs[0][0] is None:
            raise RuntimeError(f"{mode.lower()} backward: this forward pass was already differentiated or released")
        d_out, d_state = dy if isinstance(dy, tuple) else (dy, None)
        d_hn = d_cn = None
        if is_lstm:
            if d_state is not None:
                d_hn, d_cn = d_state
        else:
            d_hn = d_state
        if d_out is not None:
            if unbatched:
                d_out = d_out[:, None, :]
            elif batch_first:
                d_out = xp.permute_dims(d_out, (1, 0, 2))
        if unbatched:
            d_hn = d_hn[:, None, :] if d_hn is not None else None
            d_cn = d_cn[:, None, :] if d_cn is not None else None
        grads: list = [None] * len(weights)
        dh0: list = [None] * (num_layers * directions)
        dc0: list = [None] * (num_layers * directions)
        d_layer = d_out
        for layer in range(num_layers - 1, -1, -1):
            if drops[layer] is not None and d_layer is not None:
                d_layer = d_layer * drops[layer]
            need_dx = layer > 0 or input_grad
            d_in = None
            for d in range(directions):
                k = layer * directions + d
                if d_layer is None:
                    dout_d = None
                elif directions == 1:
                    dout_d = d_layer
                else:
                    dout_d = d_layer[:, :, d * hidden:(d + 1) * hidden]
                dx, dh, dc, g = backs[layer][d](dout_d, d_hn[k, ...] if d_hn is not None else None,
                                                d_cn[k, ...] if d_cn is not None else None, need_dx)
                backs[layer][d] = None  # free this direction's activations now
                dh0[k], dc0[k] = dh, dc
                grads[k * per_dir:(k + 1) * per_dir] = (list(g[:2]) + (list(g[2:4]) if has_biases else [])
                                                        + ([g[4]] if has_projections else []))
                if dx is not None:
                    d_in = dx if d_in is None else d_in + dx
            d_layer = d_in
        dx = d_layer
        if dx is not None:
            if unbatched:
                dx = dx[:, 0, :]
            elif batch_first:
                dx = xp.permute_dims(dx, (1, 0, 2))
        if not given_hx:
            return dx, tuple(grads)
        dh0_all = xp.stack(dh0)
        dc0_all = xp.stack(dc0) if is_lstm else None
        if unbatched:
            dh0_all = dh0_all[:, 0, :]
            dc0_all = dc0_all[:, 0, :] if is_lstm else None
        return (dx, (dh0_all, dc0_all) if is_lstm else dh0_all), tuple(grads)

    def release() -> None:
        for dir_backs in backs:
            for d, back in enumerate(dir_backs):
                if back is not None:
                    back.release()
                    dir_backs[d] = None

    backward.release = release  # type: ignore[attr-defined]
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
        workspace: a :class:`Workspace` whose buffers the call borrows until its backward (or
            ``backward.release()``) runs; layers pass their own. None allocates per call.

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
                 training: bool = False, lengths: Any = None,
                 has_biases: bool = True, workspace: Workspace | None = None,
                 has_projections: bool = False) -> tuple[tuple, Backward]:
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
    xp = backends.backend_of(x).xp
    is_lstm = mode == "LSTM"
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None, :]
    batch = x.shape[0]
    hidden = w_hh.shape[1]
    given_hx = hx is not None
    if given_hx:
        h0, c0 = hx if is_lstm else (hx, None)
        if unbatched:
            h0 = h0[None, :]
            c0 = c0[None, :] if c0 is not None else None
    else:
        h0 = xp.zeros((batch, hidden), dtype=x.dtype, device=x.device)
        c0 = h0 if is_lstm else None
    consts = _constants(xp, mode, hidden, x.dtype, x.device)
    consts["workspace"] = workspace
    _, h1, c1, back = _direction(mode, xp, x[None, ...], w_ih, w_hh, b_ih, b_hh, h0, c0, None, False, consts)
    if unbatched:
        h1 = h1[0, :]
        c1 = c1[0, :] if c1 is not None else None
    result = (h1, c1) if is_lstm else h1

    def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
        dh, dc = dy if is_lstm else (dy, None)
        if unbatched:
            dh = dh[None, :] if dh is not None else None
            dc = dc[None, :] if dc is not None else None
        dx, dh0, dc0, grads = back(None, dh, dc, input_grad)
        n = 4 if b_ih is not None else 2
        if dx is not None:
            dx = dx[0, 0, :] if unbatched else dx[0, ...]
        if not given_hx:
            return dx, grads[:n]
        if unbatched:
            dh0 = dh0[0, :]
            dc0 = dc0[0, :] if dc0 is not None else None
        return (dx, (dh0, dc0) if is_lstm else dh0), grads[:n]

    backward.release = back.release  # type: ignore[attr-defined]
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
