"""Recurrent layers (RNN, LSTM, GRU), their single-step cells and Embedding (``torch.nn`` names).

The layers follow PyTorch exactly in names, arguments, defaults, parameter names and shapes
(``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse``), gate order
(LSTM ``i, f, g, o``; GRU ``r, z, n``), initialisation U(-1/sqrt(hidden), 1/sqrt(hidden)) and return
values. What nnx adds:

* ``lengths=`` on the forward call of RNN, LSTM and GRU: nnx's equivalent of
  ``pack_padded_sequence`` (see :class:`RNNBase`);
* an explicit ``backward`` that takes one gradient per output, any of which may be None:
  ``rnn.backward(grad_output, grad_h_n=None)``, ``lstm.backward(grad_output, grad_h_n=None,
  grad_c_n=None)``. It returns ``dx``, or ``(dx, dhx)`` when the forward was given an initial
  state (``dhx`` shaped like ``hx``: ``dh0`` or ``(dh0, dc0)`` for the LSTM).
"""

from __future__ import annotations

import math
from typing import Any

import nnx_backends as backends

from .. import functional as F
from .. import init
from ..errors import check_floating, check_positive_int, check_probability, check_same_backend, describe
from ..module import Module
from .embedding import Embedding
from .linear import new_parameter

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase", "Embedding"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _split_grads(name: str, grad_output: Any, grad_h_n: Any, grad_c_n: Any, is_lstm: bool) -> tuple:
    """Accept ``backward(d_out, d_h_n[, d_c_n])`` or one tuple shaped like the forward's output."""
    if isinstance(grad_output, tuple):
        if grad_h_n is not None or grad_c_n is not None:
            raise TypeError(f"{name}.backward: pass either one tuple shaped like the output or separate "
                            "gradients, not both")
        if len(grad_output) != 2:
            raise ValueError(f"{name}.backward: a tuple gradient must be shaped like the output "
                             f"({'(d_output, (d_h_n, d_c_n))' if is_lstm else '(d_output, d_h_n)'}), "
                             f"got a tuple of {len(grad_output)}")
        grad_output, state = grad_output
        if is_lstm:
            grad_h_n, grad_c_n = state if state is not None else (None, None)
        else:
            grad_h_n = state
    return grad_output, grad_h_n, grad_c_n


def _is_integral(a: Any, b: Any) -> bool:
    """Whether array ``a`` (of backend ``b``, or a host array) has an integer dtype (``xp.isdtype``)."""
    xp = b.xp if b.owns(a) else backends.backend_of(a).xp
    return bool(xp.isdtype(a.dtype, "integral"))


def _check_lengths(where: str, lengths: Any, batch: int, steps: int, ref: Any) -> Any:
    """Validate ``lengths`` (values only where reading them is cheap); returns it, or None when the
    values are known and no sequence is padded."""
    b = backends.backend_of(ref)
    if isinstance(lengths, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in lengths):
            raise TypeError(f"{where}: lengths must be integers, got {list(lengths)!r}")
        values, shape = list(lengths), (len(lengths),)
        host = True
    else:
        if not hasattr(lengths, "shape") or not hasattr(lengths, "dtype"):
            raise TypeError(f"{where}: lengths must be a sequence of ints or an integer array, "
                            f"got {type(lengths).__name__}")
        if not _is_integral(lengths, b):
            kind = backends.Backend.dtype_name(lengths.dtype)
            raise TypeError(f"{where}: lengths must be integers, got dtype {kind}")
        shape = tuple(lengths.shape)
        host = not b.owns(lengths) or b.host_memory
        values = None
    if len(shape) != 1 or shape[0] != batch:
        raise ValueError(f"{where}: lengths must have shape ({batch},) (one length per sequence of the batch), "
                         f"got shape {shape}")
    if host:  # reading the values is free in host memory; GPUs skip this check
        if values is None:
            if b.owns(lengths):
                xp = b.xp
                lo, hi = int(xp.min(lengths)), int(xp.max(lengths))
            else:
                host_vals = [int(v) for v in lengths]
                lo, hi = min(host_vals), max(host_vals)
        else:
            lo, hi = min(values), max(values)
        if lo < 1 or hi > steps:
            raise ValueError(f"{where}: every length must be in [1, {steps}] (the padded sequence length); "
                             f"got min {lo}, max {hi}")
        if lo == steps:  # nothing is padded: skip the masking work
            return None
    return lengths


class RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU` (``torch.nn.RNNBase``).

    Forward: ``layer(input, hx=None, lengths=None)``.

    * ``input``: ``(L, N, H_in)``, or ``(N, L, H_in)`` with ``batch_first=True``, or unbatched
      ``(L, H_in)``.
    * ``hx``: initial state ``(D * num_layers, N, H_out)`` (``(D * num_layers, H_out)`` unbatched),
      a pair ``(h0, c0)`` for the LSTM; zeros when None.
    * ``lengths``: nnx's equivalent of ``torch.nn.utils.rnn.pack_padded_sequence`` (with
      ``enforce_sorted=False``): one valid length per sequence, shape ``(N,)`` (a list of ints, a host
      array or a backend integer array), each in ``[1, L]``. Steps past a sequence's length do not
      change its state, its output there is zero (as ``pad_packed_sequence(..., total_length=L)``),
      the final state is the one at its last valid step (for the reverse direction: the state
      after reading the sequence back from its last valid step), and padded steps get no gradient.
      The values are checked where arrays live in host memory; GPUs skip the check (it would need a
      device-to-host copy).

    Backward: see the subclass; gradients of the outputs may be None (an unused output), and a
    forward called twice before backward (weights shared over calls) accumulates gradients.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: Any = None, *, backend: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self._workspace = F.Workspace()  # scratch buffers reused across calls (see functional.recurrent)
        self.input_size = check_positive_int(name, "input_size", input_size)
        self.hidden_size = check_positive_int(name, "hidden_size", hidden_size)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = check_probability(name, "dropout", dropout, inclusive_high=True)
        self.bidirectional = bool(bidirectional)
        self.proj_size = check_positive_int(name, "proj_size", proj_size, allow_zero=True)
        if proj_size and mode != "LSTM":
            raise ValueError(f"{name}: proj_size is only supported by LSTM, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size has to be smaller than hidden_size ({hidden_size}), got {proj_size}")
        gate = _GATES[mode] * hidden_size
        directions = 2 if bidirectional else 1
        real_hidden = proj_size or hidden_size  # size of h and of each direction's output
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else real_hidden * directions
            for d in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
                shapes = [("weight_ih", (gate, layer_in)), ("weight_hh", (gate, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate,)), ("bias_hh", (gate,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for pname, shape in shapes:
                    setattr(self, pname + suffix, new_parameter(shape, dtype, backend, device))
                    self._flat_weights_names.append(pname + suffix)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op, for PyTorch compatibility (nnx keeps no fused weight buffer)."""

    @property
    def _flat_weights(self) -> list[Any]:
        return [getattr(self, n).data for n in self._flat_weights_names]

    @property
    def _where(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional})")

    def _check(self, x: Any, hx: Any, lengths: Any) -> tuple[Any, Any]:
        """Validate the forward's arguments; returns ``(hx, lengths)`` normalised."""
        where = self._where
        w = self.weight_ih_l0.data
        check_same_backend(where, x, w)
        check_floating(where, x, w.dtype)
        if x.ndim not in (2, 3):
            layout = "(N, L, input_size)" if self.batch_first else "(L, N, input_size)"
            raise ValueError(f"{where}: expected a 3-D input {layout} or a 2-D unbatched input (L, input_size), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{where}: expected input with input_size = {self.input_size} in its last dimension, "
                             f"got shape {tuple(x.shape)}")
        batched = x.ndim == 3
        steps = x.shape[1 if batched and self.batch_first else 0]
        batch = x.shape[0 if self.batch_first else 1] if batched else None
        if steps < 1:
            raise ValueError(f"{where}: the input has no time steps (shape {tuple(x.shape)})")
        directions = 2 if self.bidirectional else 1

        def want(size: int) -> tuple:
            return (self.num_layers * directions, batch, size) if batched else (self.num_layers * directions, size)

        if hx is not None:
            if self.mode == "LSTM":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{where}: hx must be a pair (h0, c0) of arrays of shape "
                                    f"{want(self.proj_size or self.hidden_size)}, got {type(hx).__name__}")
                states = [("h0", hx[0], self.proj_size or self.hidden_size, "proj_size" if self.proj_size
                           else "hidden_size"), ("c0", hx[1], self.hidden_size, "hidden_size")]
                hx = (hx[0], hx[1])
            else:
                states = [("hx", hx, self.hidden_size, "hidden_size")]
            for sname, s, size, size_name in states:
                check_same_backend(where, s, w, what=sname)
                check_floating(where, s, w.dtype, what=sname)
                if tuple(s.shape) != want(size):
                    raise ValueError(f"{where}: expected {sname} of shape {want(size)} "
                                     f"(num_layers * num_directions, batch, {size_name})"
                                     f"{'' if batched else ' for unbatched input'}, got {tuple(s.shape)}")
        if lengths is not None:
            if not batched:
                raise ValueError(f"{where}: lengths needs a batched 3-D input, got shape {tuple(x.shape)}")
            lengths = _check_lengths(where, lengths, batch, steps, w)
        return hx, lengths

    def forward(self, input: Any, hx: Any = None, lengths: Any = None) -> tuple:
        hx, lengths = self._check(input, hx, lengths)
        mode = self.mode
        kwargs = dict(num_layers=self.num_layers, bidirectional=self.bidirectional, batch_first=self.batch_first,
                      dropout=self.dropout, training=self.training, lengths=lengths, has_biases=self.bias,
                      workspace=self._workspace if self.recording else None)
        if mode == "LSTM":
            result, backward = F.lstm_forward(input, hx, self._flat_weights, has_projections=self.proj_size > 0,
                                              **kwargs)
        elif mode == "GRU":
            result, backward = F.gru_forward(input, hx, self._flat_weights, **kwargs)
        else:
            result, backward = F.rnn_forward(input, hx, self._flat_weights,
                                             nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kwargs)
        if self.recording:
            self.record(result, backward)
        return result

    def _backward(self, grad_output: Any, grad_h_n: Any, grad_c_n: Any, input_grad: Any) -> Any:
        is_lstm = self.mode == "LSTM"
        grad_output, grad_h_n, grad_c_n = _split_grads(type(self).__name__, grad_output, grad_h_n, grad_c_n,
                                                       is_lstm)
        if grad_output is None and grad_h_n is None and grad_c_n is None:
            raise ValueError(f"{type(self).__name__}.backward: all output gradients are None; "
                             "give at least one of grad_output, grad_h_n" + (", grad_c_n" if is_lstm else ""))
        fn = self._pop()
        state = (grad_h_n, grad_c_n) if is_lstm else grad_h_n
        dx, grads = fn((grad_output, state), input_grad)
        for p, g in zip(self._parameters.values(), grads, strict=True):
            if p is not None:
                p.accumulate_grad(g)
        return dx

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (``torch.nn.RNN``).

    Args: ``input_size, hidden_size, num_layers=1, nonlinearity='tanh'`` (or ``'relu'``),
    ``bias=True, batch_first=False, dropout=0.0, bidirectional=False``, and ``device``, ``dtype``,
    ``backend`` for where the parameters live.

    Returns ``(output, h_n)``: ``output`` ``(L, N, D * hidden_size)`` (batch first if asked),
    ``h_n`` ``(D * num_layers, N, hidden_size)``. See :class:`RNNBase` for ``hx`` and ``lengths``.

    ``backward(grad_output, grad_h_n=None, input_grad=True)``: either gradient may be None (e.g.
    a classifier that reads only ``h_n``); returns ``dx``, or ``(dx, dh0)`` when ``hx`` was given.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> rnn = nnx.RNN(10, 20, num_layers=2)
    >>> out, h_n = rnn(xp.ones((5, 3, 10), dtype=xp.float32))
    >>> out.shape, h_n.shape
    ((5, 3, 20), (2, 3, 20))
    >>> rnn.backward(xp.ones((5, 3, 20), dtype=xp.float32), xp.ones((2, 3, 20), dtype=xp.float32)).shape
    (5, 3, 10)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None, *, backend: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype, backend=backend)
        self.nonlinearity = nonlinearity

    def backward(self, grad_output: Any = None, grad_h_n: Any = None, *, input_grad: bool = True) -> Any:
        """Backpropagate ``grad_output`` (dL/d output) and ``grad_h_n`` (dL/d h_n); either may be None."""
        return self._backward(grad_output, grad_h_n, None, input_grad)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(RNNBase):
    """Long short-term memory (``torch.nn.LSTM``), gate order ``i, f, g, o``.

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)`` with ``i, f, o`` sigmoid gates and ``g``
    a tanh gate, all four from one fused product ``x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh``.

    Args: ``input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device, dtype``, and ``backend``. With ``proj_size > 0``
    the hidden state is projected, ``h_t = W_hr (o * tanh(c_t))`` (parameters ``weight_hr_l{k}``
    of shape ``(proj_size, hidden_size)``), so ``output`` and ``h_n`` have ``proj_size`` features
    per direction while ``c_n`` keeps ``hidden_size``.

    Returns ``(output, (h_n, c_n))``. See :class:`RNNBase` for ``hx = (h0, c0)`` and ``lengths``.

    ``backward(grad_output, grad_h_n=None, grad_c_n=None, input_grad=True)``: any gradient may be
    None; returns ``dx``, or ``(dx, (dh0, dc0))`` when ``hx`` was given. A single tuple shaped like
    the output, ``backward((d_out, (d_h_n, d_c_n)))``, is accepted too.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> lstm = nnx.LSTM(8, 32, batch_first=True)
    >>> out, (h_n, c_n) = lstm(xp.ones((2, 5, 8), dtype=xp.float32), lengths=[5, 3])
    >>> out.shape, h_n.shape, c_n.shape
    ((2, 5, 32), (1, 2, 32), (1, 2, 32))
    >>> lstm.backward(None, xp.ones((1, 2, 32), dtype=xp.float32)).shape        # loss on h_n only
    (2, 5, 8)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device: Any = None, dtype: Any = None, *, backend: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype, backend=backend)

    def backward(self, grad_output: Any = None, grad_h_n: Any = None, grad_c_n: Any = None,
                 *, input_grad: bool = True) -> Any:
        """Backpropagate dL/d output, dL/d h_n and dL/d c_n (any may be None)."""
        return self._backward(grad_output, grad_h_n, grad_c_n, input_grad)


class GRU(RNNBase):
    """Gated recurrent unit (``torch.nn.GRU``), gate order ``r, z, n``.

    ``r, z = sigmoid(...)``, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``.

    Same arguments, return values (``(output, h_n)``), ``lengths`` and ``backward(grad_output,
    grad_h_n=None, input_grad=True)`` as :class:`RNN` (without ``nonlinearity``).

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> gru = nnx.GRU(8, 16, bidirectional=True)
    >>> out, h_n = gru(xp.ones((4, 2, 8), dtype=xp.float32))
    >>> out.shape, h_n.shape
    ((4, 2, 32), (2, 2, 16))
    >>> gru.backward(xp.ones((4, 2, 32), dtype=xp.float32)).shape
    (4, 2, 8)
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: Any = None, *, backend: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype, backend=backend)

    def backward(self, grad_output: Any = None, grad_h_n: Any = None, *, input_grad: bool = True) -> Any:
        """Backpropagate ``grad_output`` (dL/d output) and ``grad_h_n`` (dL/d h_n); either may be None."""
        return self._backward(grad_output, grad_h_n, None, input_grad)


# ============================================================================ cells
class RNNCellBase(Module):
    """Shared machinery of the single-step cells (``weight_ih, weight_hh, bias_ih, bias_hh``).

    A cell called T times in a loop records T passes; T ``backward`` calls, newest first, replay
    them and the parameter gradients add up (backpropagation through time by hand).
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, backend: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self._workspace = F.Workspace()  # scratch buffers reused across calls (see functional.recurrent)
        self.input_size = check_positive_int(name, "input_size", input_size)
        self.hidden_size = check_positive_int(name, "hidden_size", hidden_size)
        self.bias = bool(bias)
        gate = _GATES[mode] * hidden_size
        self.weight_ih = new_parameter((gate, input_size), dtype, backend, device)
        self.weight_hh = new_parameter((gate, hidden_size), dtype, backend, device)
        if bias:
            self.bias_ih = new_parameter((gate,), dtype, backend, device)
            self.bias_hh = new_parameter((gate,), dtype, backend, device)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    @property
    def _where(self) -> str:
        return f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size})"

    def _check(self, x: Any, hx: Any) -> Any:
        where = self._where
        w = self.weight_ih.data
        check_same_backend(where, x, w)
        check_floating(where, x, w.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"{where}: expected a 2-D input (batch, input_size) or a 1-D unbatched input "
                             f"(input_size,), got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{where}: expected input with input_size = {self.input_size} in its last dimension, "
                             f"got shape {tuple(x.shape)}")
        want = (x.shape[0], self.hidden_size) if x.ndim == 2 else (self.hidden_size,)
        if hx is not None:
            if self.mode == "LSTM":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{where}: hx must be a pair (h, c) of arrays of shape {want}, "
                                    f"got {type(hx).__name__}")
                states = [("h", hx[0]), ("c", hx[1])]
                hx = (hx[0], hx[1])
            else:
                states = [("hx", hx)]
            for sname, s in states:
                check_same_backend(where, s, w, what=sname)
                check_floating(where, s, w.dtype, what=sname)
                if tuple(s.shape) != want:
                    raise ValueError(f"{where}: expected {sname} of shape {want}, got {describe(s)}")
        return hx

    def forward(self, input: Any, hx: Any = None) -> Any:
        hx = self._check(input, hx)
        b_ih = self.bias_ih.data if self.bias else None
        b_hh = self.bias_hh.data if self.bias else None
        w_ih, w_hh = self.weight_ih.data, self.weight_hh.data
        ws = self._workspace if self.recording else None
        if self.mode == "LSTM":
            result, backward = F.lstm_cell_forward(input, hx, w_ih, w_hh, b_ih, b_hh, ws)
        elif self.mode == "GRU":
            result, backward = F.gru_cell_forward(input, hx, w_ih, w_hh, b_ih, b_hh, ws)
        else:
            result, backward = F.rnn_cell_forward(input, hx, w_ih, w_hh, b_ih, b_hh,
                                                  "tanh" if self.mode == "RNN_TANH" else "relu", ws)
        if self.recording:
            self.record(result, backward)
        return result

    def _backward(self, dy: Any, input_grad: bool) -> Any:
        fn = self._pop()
        dx, grads = fn(dy, input_grad)
        # without biases the cell registers bias_ih/bias_hh as None and gets two gradients
        for p, g in zip(self._parameters.values(), grads, strict=False):
            if p is not None:
                p.accumulate_grad(g)
        return dx

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(RNNCellBase):
    """One Elman RNN step ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (``torch.nn.RNNCell``).

    Args: ``input_size, hidden_size, bias=True, nonlinearity='tanh'`` (or ``'relu'``), ``device,
    dtype``, ``backend``. Input ``(N, input_size)`` or ``(input_size,)``; ``hx`` like the output
    ``(N, hidden_size)``, zeros when None.

    ``backward(grad_h, input_grad=True)`` returns ``dx``, or ``(dx, dh)`` when ``hx`` was given.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> cell = nnx.RNNCell(4, 8)
    >>> x, h = xp.ones((3, 2, 4), dtype=xp.float32), xp.zeros((2, 8), dtype=xp.float32)
    >>> for t in range(3):
    ...     h = cell(x[t], h)
    >>> dh = xp.ones((2, 8), dtype=xp.float32)
    >>> for t in reversed(range(3)):
    ...     dx_t, dh = cell.backward(dh)
    >>> dx_t.shape, dh.shape
    ((2, 4), (2, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: Any = None, dtype: Any = None, *, backend: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias,
                         device, dtype, backend=backend)
        self.nonlinearity = nonlinearity

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate dL/d h' through the newest step; returns ``dx`` or ``(dx, dh)``."""
        return self._backward(grad_output, input_grad)


class LSTMCell(RNNCellBase):
    """One LSTM step (``torch.nn.LSTMCell``); ``cell(x, (h, c))`` returns ``(h', c')``.

    ``backward(grad_h, grad_c=None, input_grad=True)`` (either may be None; a tuple
    ``(grad_h, grad_c)`` as first argument works too) returns ``dx``, or ``(dx, (dh, dc))`` when
    ``hx`` was given.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> cell = nnx.LSTMCell(4, 8)
    >>> h0 = xp.zeros((2, 8), dtype=xp.float32)
    >>> h, c = cell(xp.ones((2, 4), dtype=xp.float32), (h0, h0))
    >>> dx_t, (dh, dc) = cell.backward(xp.ones((2, 8), dtype=xp.float32), None)
    >>> dx_t.shape, dc.shape
    ((2, 4), (2, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, backend: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype, backend=backend)

    def backward(self, grad_h: Any = None, grad_c: Any = None, *, input_grad: bool = True) -> Any:
        """Backpropagate dL/d h' and dL/d c' through the newest step."""
        if isinstance(grad_h, tuple):
            grad_h, grad_c = grad_h
        if grad_h is None and grad_c is None:
            raise ValueError("LSTMCell.backward: both grad_h and grad_c are None")
        return self._backward((grad_h, grad_c), input_grad)


class GRUCell(RNNCellBase):
    """One GRU step (``torch.nn.GRUCell``), gate order ``r, z, n``.

    ``backward(grad_h, input_grad=True)`` returns ``dx``, or ``(dx, dh)`` when ``hx`` was given.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> cell = nnx.GRUCell(4, 8)
    >>> h = cell(xp.ones((2, 4), dtype=xp.float32), xp.zeros((2, 8), dtype=xp.float32))
    >>> dx_t, dh = cell.backward(xp.ones((2, 8), dtype=xp.float32))
    >>> dh.shape
    (2, 8)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, backend: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype, backend=backend)

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate dL/d h' through the newest step; returns ``dx`` or ``(dx, dh)``."""
        return self._backward(grad_output, input_grad)
