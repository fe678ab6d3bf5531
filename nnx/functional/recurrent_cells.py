"""One time step of each recurrent cell, forward and backward side by side.

Each cell is a pair of small functions with one job: compute one time step given the input part
of its gates and the previous state, and differentiate that step given the gradients of the new
state. The time loop, directions, layers, variable lengths, projections and the input projection
of all steps live in :mod:`nnx.functional.recurrent`; a :class:`Cell` bundles one pair for it.

A step is one matrix product ``h W_hh^T`` plus one fused elementwise kernel of the backend
adapter (``lstm_cell_forward``, ``gru_cell_forward``, ``bias_act_forward``; their pure-standard
fallbacks in ``nnx_backends.fused`` hold the math); its backward is one fused kernel plus the
product with ``W_hh``.

* ``step_forward(b, gx, h, c, w_hhT, b_hh, *, out=None) -> (h_new, c_new, saved)``

  - ``b``: the backend adapter; ``gx`` ``(B, G*H)``: the input part of the gates,
    ``x_t W_ih^T + b_ih`` (plus ``b_hh`` unless the cell keeps it apart, see ``split_bias``);
  - ``h`` ``(B, H)``, ``c`` (LSTM only, else None): the previous state;
  - ``w_hhT`` ``(H, G*H)``: ``W_hh`` transposed; ``b_hh``: the recurrent bias when
    ``split_bias`` (GRU), else None;
  - ``saved``: what the backward needs of this step (the activations); written into ``out`` when
    given (then ``saved`` is ``out``). ``out`` may alias ``gx``: the step reads ``gx`` first.

* ``step_backward(b, dh, dc, saved, h, c, w_hh, *, out=None, out_gh=None) -> (dgx, dgh, dh_prev, dc_prev)``

  - ``dh``, ``dc``: the gradients of the new state (``dc`` may be None: no gradient);
  - ``dgx``, ``dgh``: the gradients of the pre-activations of the input part and of the
    recurrent part (the same array except for the GRU); written into ``out`` / ``out_gh`` when given
    (``out`` may alias ``saved``: the step reads ``saved`` first);
  - ``dh_prev``, ``dc_prev``: the gradients of the previous state (``dc_prev`` None except LSTM).

Gate orders follow PyTorch: LSTM ``i, f, g, o``; GRU ``r, z, n``.

>>> import nnx
>>> xp = nnx.get_backend().xp
>>> import nnx_backends as backends
>>> b = backends.backend_of(xp.zeros((1,), dtype=xp.float32))
>>> gx, h, c = xp.zeros((2, 4), dtype=xp.float32), xp.zeros((2, 1), dtype=xp.float32), xp.ones((2, 1), dtype=xp.float32)
>>> h1, c1, saved = LSTM.step_forward(b, gx, h, c, xp.zeros((1, 4), dtype=xp.float32), None)
>>> [round(float(v), 4) for v in c1[:, 0]]      # f * c + i * g with f = sigmoid(0), g = tanh(0)
[0.5, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Array = Any

__all__ = [
    "CELLS",
    "GRU",
    "LSTM",
    "RNN_RELU",
    "RNN_TANH",
    "Cell",
    "gru_step_backward",
    "gru_step_forward",
    "lstm_step_backward",
    "lstm_step_forward",
    "rnn_relu_step_backward",
    "rnn_relu_step_forward",
    "rnn_tanh_step_backward",
    "rnn_tanh_step_forward",
]


# ============================================================================ Elman RNN
def rnn_tanh_step_forward(b: Any, gx: Array, h: Array, c: None, w_hhT: Array,
                          b_hh: None = None, *, out: Array | None = None) -> tuple[Array, None, Array]:
    """``h' = tanh(gx + h W_hh^T)`` (one product, one fused bias + activation kernel); saves ``h'``
    (which is ``out`` when given)."""
    h_new, _ = b.bias_act_forward(b.xp.matmul(h, w_hhT), gx, "tanh", out=out)
    return h_new, None, h_new


def rnn_tanh_step_backward(b: Any, dh: Array, dc: None, saved: Array, h: Array, c: None,
                           w_hh: Array, *, out: Array | None = None,
                           out_gh: None = None) -> tuple[Array, Array, Array, None]:
    """``dz = dh' * (1 - h'^2)``, ``dh = dz W_hh``."""
    dz, _ = b.bias_act_backward(dh, saved, "tanh", has_bias=False, out=out)
    return dz, dz, b.xp.matmul(dz, w_hh), None


def rnn_relu_step_forward(b: Any, gx: Array, h: Array, c: None, w_hhT: Array,
                          b_hh: None = None, *, out: Array | None = None) -> tuple[Array, None, Array]:
    """``h' = max(gx + h W_hh^T, 0)``; saves ``h'`` (which is ``out`` when given)."""
    h_new, _ = b.bias_act_forward(b.xp.matmul(h, w_hhT), gx, "relu", out=out)
    return h_new, None, h_new


def rnn_relu_step_backward(b: Any, dh: Array, dc: None, saved: Array, h: Array, c: None,
                           w_hh: Array, *, out: Array | None = None,
                           out_gh: None = None) -> tuple[Array, Array, Array, None]:
    """``dz = dh' * [h' > 0]``, ``dh = dz W_hh``."""
    dz, _ = b.bias_act_backward(dh, saved, "relu", has_bias=False, out=out)
    return dz, dz, b.xp.matmul(dz, w_hh), None


# ============================================================================ LSTM
def lstm_step_forward(b: Any, gx: Array, h: Array, c: Array, w_hhT: Array,
                      b_hh: None = None, *, out: Array | None = None) -> tuple[Array, Array, Array]:
    """One LSTM step, gates ``i, f, g, o`` of ``z = gx + h W_hh^T``::

        i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
        c' = f * c + i * g
        h' = o * tanh(c')

    Saves the adapter's activations ``(i, f, g, o, tanh(c'))`` (``(B, 5H)``).
    """
    gates = b.xp.matmul(h, w_hhT)
    gates += gx
    return b.lstm_cell_forward(gates, c, out=out)


def lstm_step_backward(b: Any, dh: Array, dc: Array | None, saved: Array, h: Array, c: Array,
                       w_hh: Array, *, out: Array | None = None,
                       out_gh: None = None) -> tuple[Array, Array, Array, Array]:
    """Differentiate :func:`lstm_step_forward` (``c`` is the cell state before the step)::

        dc' += dh' * o * (1 - tanh(c')^2)
        dz = (dc' g i(1-i), dc' c f(1-f), dc' i (1-g^2), dh' tanh(c') o(1-o));  dc = dc' f
    """
    dz, dc_prev = b.lstm_cell_backward(saved, c, dh, dc, out=out)
    return dz, dz, b.xp.matmul(dz, w_hh), dc_prev


# ============================================================================ GRU
def gru_step_forward(b: Any, gx: Array, h: Array, c: None, w_hhT: Array,
                     b_hn: Array | None = None, *, out: Array | None = None) -> tuple[Array, None, Array]:
    """One GRU step, gates ``r, z, n``, with ``gx = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh``::

        r, z = sigmoid(gx_r + gh_r), sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)
        h' = (1 - z) * n + z * h

    The caller has added the ``r`` and ``z`` parts of ``b_hh`` to ``gx`` (one pass for all steps);
    its ``n`` part, ``b_hn``, is added inside the cell kernel (it is multiplied by ``r``), so a step
    is one matrix product and one kernel. Saves the adapter's activations ``(r, z, n, gh_n)``
    (``(B, 4H)``).
    """
    gh = b.xp.matmul(h, w_hhT)
    h_new, act = b.gru_cell_forward(gx, gh, h, b_hn, out=out)
    return h_new, None, act


def gru_step_backward(b: Any, dh: Array, dc: None, saved: Array, h: Array, c: None,
                      w_hh: Array, *, out: Array | None = None,
                      out_gh: Array | None = None) -> tuple[Array, Array, Array, None]:
    """Differentiate :func:`gru_step_forward`::

        dn_pre = dh' (1 - z)(1 - n^2);  dr_pre = dn_pre gh_n r(1 - r);  dz_pre = dh' (h - n) z(1 - z)
        dgx = (dr_pre, dz_pre, dn_pre);  dgh = (dr_pre, dz_pre, dn_pre r);  dh = dh' z + dgh W_hh
    """
    dgx, dgh, dh_direct = b.gru_cell_backward(saved, h, dh, out=out, out_gh=out_gh)
    dh_prev = b.xp.matmul(dgh, w_hh)
    dh_prev += dh_direct
    return dgx, dgh, dh_prev, None


# ============================================================================ the cells
@dataclass(frozen=True)
class Cell:
    """What the time loop needs to know about a cell.

    ``gates``: gates per hidden unit (``G``); ``step_forward`` / ``step_backward``: see the module
    docstring; ``has_cell_state``: carries ``c`` (LSTM); ``split_bias``: ``b_hh`` goes into the
    recurrent part rather than into ``gx``, and the gradients ``dgx``, ``dgh`` differ (GRU);
    ``saved``: the width of ``saved`` in units of ``H`` when it is at least ``gates`` (the time loop
    then lets the input projection, the saved activations and the gate gradients share one buffer
    on mutable host-memory libraries), else 0; ``saved_is_state``: ``saved`` is ``h_new`` itself
    (Elman RNN), so a state that lives in the shared buffer is copied out of it at the end;
    ``step_needs_h``: ``step_backward`` reads ``h`` (else the loop passes None there, and ``c`` is
    None unless ``has_cell_state``).
    """

    name: str
    gates: int
    step_forward: Callable[..., tuple]
    step_backward: Callable[..., tuple]
    has_cell_state: bool = False
    split_bias: bool = False
    saved: int = 0
    saved_is_state: bool = False
    step_needs_h: bool = False


RNN_TANH = Cell("RNN_TANH", 1, rnn_tanh_step_forward, rnn_tanh_step_backward, saved=1, saved_is_state=True)
RNN_RELU = Cell("RNN_RELU", 1, rnn_relu_step_forward, rnn_relu_step_backward, saved=1, saved_is_state=True)
LSTM = Cell("LSTM", 4, lstm_step_forward, lstm_step_backward, has_cell_state=True, saved=5)
GRU = Cell("GRU", 3, gru_step_forward, gru_step_backward, split_bias=True, saved=4, step_needs_h=True)

#: The cells by the mode name the layers use (PyTorch's ``RNNBase.mode``).
CELLS: dict[str, Cell] = {cell.name: cell for cell in (RNN_TANH, RNN_RELU, LSTM, GRU)}
