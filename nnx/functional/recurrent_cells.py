"""One time step of each recurrent cell, forward and backward side by side.

Each cell is a pair of small functions with one job: compute one time step given the gate
pre-activations and the previous state, and differentiate that step given the gradients of the new
state. The time loop, directions, layers, variable lengths and every matrix product live in
:mod:`nnx.functional.recurrent`; a :class:`Cell` bundles one pair for it.

The step boundary (what a fused GPU kernel will implement):

* forward ``step_forward(gx, gh, h, c, k) -> (h_new, c_new, a, saved)``

  - ``gx`` ``(B, G*H)``: the input part of the gates, ``x_t W_ih^T + b`` (the loop computes it
    for all steps at once; read only).
  - ``gh`` ``(B, G*H)``: the recurrent part, ``h W_hh^T`` (plus ``b_hh`` for the GRU, whose
    candidate gate needs it apart). The step may overwrite it.
  - ``a`` ``(B, G*H)``: the gate *activations*, which the backward reads back.
  - ``h``, ``c``: the previous state (``c`` is None except for the LSTM).
  - ``saved``: a tuple of ``Cell.saved`` arrays ``(B, H)`` that the backward needs.

  The gates of a sigmoid come *halved* (``Cell.gate_scale`` is folded into the weights once per
  call) so that one ``tanh`` evaluates every gate: ``sigmoid(z) = (1 + tanh(z / 2)) / 2``.

* backward ``step_backward(dh, dc, a, h, saved, k) -> (dgx, dgh, dh_direct, dc_prev)``

  - ``dh``, ``dc``: the gradients of the new state (``dc`` None except for the LSTM);
  - ``a``: the activations the forward returned; ``h``: the previous hidden state;
  - ``dgx``, ``dgh``: the gradients of the (unhalved) pre-activations of the input part and of
    the recurrent part (the same array except for the GRU);
  - ``dh_direct``: a gradient of the previous ``h`` that does not go through ``W_hh`` (GRU), or
    None; the loop adds ``dgh @ W_hh``. ``dc_prev``: the gradient of the previous ``c``, or None.

Gate orders follow PyTorch: LSTM ``i, f, g, o``; GRU ``r, z, n``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Array = Any

__all__ = [
    "CELLS",
    "Cell",
    "GRU",
    "LSTM",
    "RNN_RELU",
    "RNN_TANH",
    "StepConstants",
    "gru_step_backward",
    "gru_step_forward",
    "lstm_step_backward",
    "lstm_step_forward",
    "rnn_relu_step_backward",
    "rnn_relu_step_forward",
    "rnn_tanh_step_backward",
    "rnn_tanh_step_forward",
]


@dataclass(frozen=True)
class StepConstants:
    """What every step of one call shares: the array namespace, the hidden size ``H`` and, for the
    LSTM, the ``(4H,)`` vectors that turn one ``tanh`` into the four gates and back."""

    xp: Any
    hidden: int
    act_scale: Array = None   # a = tanh(z') * act_scale + act_shift: sigmoid or tanh per gate
    act_shift: Array = None
    d_mask: Array = None      # da/dz = a * (d_mask - a) + d_shift: a(1-a) or 1 - a^2 per gate
    d_shift: Array = None


def _gate_vector(xp: Any, parts: tuple[float, ...], hidden: int, dtype: Any, device: Any) -> Array:
    """``(len(parts) * hidden,)``: each value of ``parts`` repeated over one gate."""
    return xp.concat([xp.full((hidden,), p, dtype=dtype, device=device) for p in parts])


def plain_constants(xp: Any, hidden: int, dtype: Any, device: Any) -> StepConstants:
    """The :class:`StepConstants` of the RNN and GRU cells: the namespace and ``H``."""
    return StepConstants(xp, hidden)


def lstm_constants(xp: Any, hidden: int, dtype: Any, device: Any) -> StepConstants:
    """The :class:`StepConstants` of the LSTM: sigmoid, sigmoid, tanh, sigmoid from one ``tanh``."""
    return StepConstants(xp, hidden,
                         act_scale=_gate_vector(xp, (0.5, 0.5, 1.0, 0.5), hidden, dtype, device),
                         act_shift=_gate_vector(xp, (0.5, 0.5, 0.0, 0.5), hidden, dtype, device),
                         d_mask=_gate_vector(xp, (1.0, 1.0, 0.0, 1.0), hidden, dtype, device),
                         d_shift=_gate_vector(xp, (0.0, 0.0, 1.0, 0.0), hidden, dtype, device))


# ============================================================================ Elman RNN, tanh
def rnn_tanh_step_forward(gx: Array, gh: Array, h: Array, c: None,
                          k: StepConstants) -> tuple[Array, None, Array, tuple]:
    """``h' = tanh(z)`` with ``z = x W_ih^T + b_ih + h W_hh^T + b_hh``; the activation is ``h'``."""
    gh += gx
    h_new = k.xp.tanh(gh)
    return h_new, None, h_new, ()


def rnn_tanh_step_backward(dh: Array, dc: None, a: Array, h: Array, saved: tuple,
                           k: StepConstants) -> tuple[Array, Array, None, None]:
    """``dz = dh' * (1 - h'^2)``."""
    dz = dh * (1.0 - a * a)
    return dz, dz, None, None


# ============================================================================ Elman RNN, relu
def rnn_relu_step_forward(gx: Array, gh: Array, h: Array, c: None,
                          k: StepConstants) -> tuple[Array, None, Array, tuple]:
    """``h' = max(z, 0)`` with ``z = x W_ih^T + b_ih + h W_hh^T + b_hh``; the activation is ``h'``."""
    gh += gx
    h_new = k.xp.maximum(gh, 0.0)
    return h_new, None, h_new, ()


def rnn_relu_step_backward(dh: Array, dc: None, a: Array, h: Array, saved: tuple,
                           k: StepConstants) -> tuple[Array, Array, None, None]:
    """``dz = dh' * [h' > 0]``."""
    dz = dh * k.xp.astype(a > 0.0, a.dtype)
    return dz, dz, None, None


# ============================================================================ LSTM
def lstm_step_forward(gx: Array, gh: Array, h: Array, c: Array,
                      k: StepConstants) -> tuple[Array, Array, Array, tuple]:
    """One LSTM step, gates ``i, f, g, o`` of ``z = x W_ih^T + b + h W_hh^T``::

        i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
        c' = f * c + i * g
        h' = o * tanh(c')

    Activations ``a = (i, f, g, o)``; saves ``(c, tanh(c'))``. (With ``proj_size`` the loop
    projects ``h'`` afterwards.)
    """
    xp, hid = k.xp, k.hidden
    gh += gx
    a = xp.tanh(gh)       # the sigmoid rows of gx and gh hold z / 2
    a *= k.act_scale
    a += k.act_shift
    i, f, g, o = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
    c_new = f * c
    c_new += i * g
    tc = xp.tanh(c_new)
    return o * tc, c_new, a, (c, tc)


def lstm_step_backward(dh: Array, dc: Array, a: Array, h: Array, saved: tuple,
                       k: StepConstants) -> tuple[Array, Array, None, Array]:
    """Differentiate :func:`lstm_step_forward`::

        dc' += dh' * o * (1 - tanh(c')^2)
        di, df, dg, do = dc' * g, dc' * c, dc' * i, dh' * tanh(c')
        dz = (di, df, dg, do) * (a (1 - a) for i, f, o;  1 - a^2 for g)
        dc = dc' * f
    """
    xp, hid = k.xp, k.hidden
    c, tc = saved
    i, f, g, o = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
    dcn = dh * o
    dcn *= 1.0 - tc * tc
    dcn += dc
    dz = xp.concat([dcn * g, dcn * c, dcn * i, dh * tc], axis=1)
    deriv = k.d_mask - a
    deriv *= a
    deriv += k.d_shift
    dz *= deriv
    return dz, dz, None, dcn * f


# ============================================================================ GRU
def gru_step_forward(gx: Array, gh: Array, h: Array, c: None,
                     k: StepConstants) -> tuple[Array, None, Array, tuple]:
    """One GRU step, gates ``r, z, n``, with ``gx = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh``::

        r, z = sigmoid(gx_r + gh_r), sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)
        h' = (1 - z) * n + z * h

    Activations ``(r, z, n)``; saves ``gh_n``.
    """
    xp, hid = k.xp, k.hidden
    rz = xp.tanh(gx[:, :2 * hid] + gh[:, :2 * hid])   # the r, z rows hold half their pre-activation
    rz *= 0.5
    rz += 0.5
    ghn = gh[:, 2 * hid:]
    n = ghn * rz[:, :hid]
    n += gx[:, 2 * hid:]
    n = xp.tanh(n)
    h_new = h - n
    h_new *= rz[:, hid:]
    h_new += n
    return h_new, None, xp.concat([rz, n], axis=1), (ghn,)


def gru_step_backward(dh: Array, dc: None, a: Array, h: Array, saved: tuple,
                      k: StepConstants) -> tuple[Array, Array, Array, None]:
    """Differentiate :func:`gru_step_forward`::

        dn_pre = dh' * (1 - z) * (1 - n^2)
        dr_pre = dn_pre * gh_n * r (1 - r);   dz_pre = dh' * (h - n) * z (1 - z)
        dgx = (dr_pre, dz_pre, dn_pre);  dgh = (dr_pre, dz_pre, dn_pre * r);  dh_direct = dh' * z
    """
    xp, hid = k.xp, k.hidden
    (ghn,) = saved
    rz, n = a[:, :2 * hid], a[:, 2 * hid:]
    r, z = rz[:, :hid], rz[:, hid:]
    dn = dh - dh * z
    dpre_n = dn * (1.0 - n * n)
    d_rz = xp.concat([dpre_n * ghn, dh * (h - n)], axis=1)
    d_rz *= rz * (1.0 - rz)
    dgx = xp.concat([d_rz, dpre_n], axis=1)
    dgh = xp.concat([d_rz, dpre_n * r], axis=1)
    return dgx, dgh, dh * z, None


# ============================================================================ the cells
@dataclass(frozen=True)
class Cell:
    """What the time loop needs to know about a cell.

    ``gates``: gates per hidden unit (``G``); ``gate_scale``: factor per gate folded into the
    weights (0.5 for a sigmoid gate, see the module docstring); ``saved``: how many ``(B, H)``
    arrays ``step_forward`` saves per step; ``has_cell_state``: carries ``c`` (LSTM);
    ``split_bias``: ``b_hh`` goes into the recurrent part ``gh`` rather than into ``gx`` (GRU);
    ``split_grads``: ``dgx`` and ``dgh`` differ, so the loop keeps both (GRU).
    """

    name: str
    gates: int
    gate_scale: tuple[float, ...] | None
    saved: int
    step_forward: Callable[..., tuple]
    step_backward: Callable[..., tuple]
    has_cell_state: bool = False
    split_bias: bool = False
    split_grads: bool = False
    constants: Callable[..., StepConstants] = plain_constants


RNN_TANH = Cell("RNN_TANH", 1, None, 0, rnn_tanh_step_forward, rnn_tanh_step_backward)
RNN_RELU = Cell("RNN_RELU", 1, None, 0, rnn_relu_step_forward, rnn_relu_step_backward)
LSTM = Cell("LSTM", 4, (0.5, 0.5, 1.0, 0.5), 2, lstm_step_forward, lstm_step_backward, has_cell_state=True,
            constants=lstm_constants)
GRU = Cell("GRU", 3, (0.5, 0.5, 1.0), 1, gru_step_forward, gru_step_backward, split_bias=True, split_grads=True)

#: The cells by the mode name the layers use (PyTorch's ``RNNBase.mode``).
CELLS: dict[str, Cell] = {cell.name: cell for cell in (RNN_TANH, RNN_RELU, LSTM, GRU)}
