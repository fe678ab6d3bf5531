"""RNNCell, LSTMCell, GRUCell: PyTorch parity of an unrolled loop (T forward calls, T backward
calls newest first, gradients accumulated), gradient checks, unbatched input."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand

T, B, IN, H = 4, 3, 3, 5  # steps, batch, input size, hidden size

CELLS = {
    "rnn_tanh": (lambda h=H, **kw: nnx.RNNCell(IN, h, **kw), "RNNCell", {}),
    "rnn_relu": (lambda h=H, **kw: nnx.RNNCell(IN, h, nonlinearity="relu", **kw), "RNNCell", {"nonlinearity": "relu"}),
    "lstm": (lambda h=H, **kw: nnx.LSTMCell(IN, h, **kw), "LSTMCell", {}),
    "gru": (lambda h=H, **kw: nnx.GRUCell(IN, h, **kw), "GRUCell", {}),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", list(CELLS))
def test_unrolled_loop_parity(backend, torch, name, bias):
    """A cell called T times, then backward T times newest first, equals PyTorch's graph."""
    factory, tname, tkw = CELLS[name]
    is_lstm = name == "lstm"
    cell = factory(dtype="float64", bias=bias)
    tcell = getattr(torch.nn, tname)(IN, H, dtype=torch.float64, bias=bias, **tkw)
    copy_params_to_torch(cell, tcell)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((T, B, IN))
    h0 = rng.standard_normal((B, H))
    c0 = rng.standard_normal((B, H))
    gy = rng.standard_normal((T, B, H))  # loss = sum_t <h_t, gy_t>

    # PyTorch
    tx = torch.tensor(xs, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    tc0 = torch.tensor(c0, requires_grad=True)
    th, tc = th0, tc0
    loss = 0.0
    for t in range(T):
        if is_lstm:
            th, tc = tcell(tx[t], (th, tc))
        else:
            th = tcell(tx[t], th)
        loss = loss + (th * torch.tensor(gy[t])).sum()
    loss.backward()

    # nnx: forward loop, then backward loop newest first
    f64 = "float64"
    h = nnx.asarray(h0, dtype=f64)
    c = nnx.asarray(c0, dtype=f64)
    hs = []
    for t in range(T):
        x_t = nnx.asarray(xs[t], dtype=f64)
        if is_lstm:
            h, c = cell(x_t, (h, c))
        else:
            h = cell(x_t, h)
        hs.append(h)
    assert_close(hs[-1], th, rtol=1e-10, atol=1e-12, what="final h")
    dh = nnx.asarray(np.zeros((B, H)), dtype=f64)
    dc = None
    dxs = [None] * T
    for t in range(T - 1, -1, -1):
        g = dh + nnx.asarray(gy[t], dtype=f64)
        if is_lstm:
            dxs[t], (dh, dc) = cell.backward(g, dc)
        else:
            dxs[t], dh = cell.backward(g)
    assert len(cell._tape) == 0
    for t in range(T):
        assert_close(dxs[t], tx.grad[t], rtol=1e-8, atol=1e-10, what=f"dx[{t}]")
    assert_close(dh, th0.grad, rtol=1e-8, atol=1e-10, what="dh0")
    if is_lstm:
        assert_close(dc, tc0.grad, rtol=1e-8, atol=1e-10, what="dc0")
    tparams = dict(tcell.named_parameters())
    assert [n for n, _ in cell.named_parameters()] == list(tparams)
    for pname, p in cell.named_parameters():
        assert_close(p.grad, tparams[pname].grad, rtol=1e-8, atol=1e-10, what=f"grad of {pname}")


class FlatCell(nnx.Module):
    """forward(x, *state) -> h or (h, c); backward flattens (dx, dh[, dc]) for nnx.gradcheck."""

    def __init__(self, cell: nnx.Module) -> None:
        super().__init__()
        self.cell = cell
        self.is_lstm = isinstance(cell, nnx.LSTMCell)

    def forward(self, x, *state):
        hx = None
        if state:
            hx = (state[0], state[1]) if self.is_lstm else state[0]
        return self.cell(x, hx)

    def backward(self, dy, input_grad=True):
        grads = self.cell.backward(*dy) if self.is_lstm else self.cell.backward(dy)
        if not isinstance(grads, tuple):
            return grads
        dx, dhx = grads
        return (dx, *dhx) if self.is_lstm else (dx, dhx)


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck(backend, name, with_state):
    hidden = 2
    cell = CELLS[name][0](hidden, dtype="float64")
    if name == "rnn_relu":
        cell.bias_ih.data = cell.bias_ih.data + 1.0  # away from relu's kink
    inputs = [rand(2, IN, seed=1)]
    if with_state:
        inputs.append(rand(2, hidden, seed=2))
        if name == "lstm":
            inputs.append(rand(2, hidden, seed=3))
    assert nnx.gradcheck(FlatCell(cell), *inputs, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_unbatched(backend, torch, name):
    factory, tname, tkw = CELLS[name]
    cell = factory(dtype="float64")
    tcell = getattr(torch.nn, tname)(IN, H, dtype=torch.float64)
    copy_params_to_torch(cell, tcell)
    xs = np.random.default_rng(0).standard_normal(IN)
    out = cell(nnx.asarray(xs, dtype="float64"))
    tx = torch.tensor(xs, requires_grad=True)
    tout = tcell(tx)
    if name == "lstm":
        assert tuple(out[0].shape) == (H,) and tuple(out[1].shape) == (H,)
        assert_close(out[1], tout[1], rtol=1e-10, atol=1e-12)
        tout[0].sum().backward()
        dx = cell.backward(nnx.asarray(np.ones(H), dtype="float64"), None)
    else:
        assert_close(out, tout, rtol=1e-10, atol=1e-12)
        tout.sum().backward()
        dx = cell.backward(nnx.asarray(np.ones(H), dtype="float64"))
    assert tuple(dx.shape) == (IN,)
    assert_close(dx, tx.grad, rtol=1e-8, atol=1e-10)


def test_cell_float32_and_tuple_backward(backend):
    cell = nnx.LSTMCell(IN, H)
    x = nnx.asarray(np.random.default_rng(0).standard_normal((B, IN)))
    h, c = cell(x)
    assert nnx.backend.Backend.dtype_name(h.dtype) == "float32"
    dx = cell.backward((nnx.asarray(np.ones((B, H))), None))
    assert nnx.backend.Backend.dtype_name(dx.dtype) == "float32"
    assert cell.bias_hh.grad is not None and host(cell.bias_hh.grad).shape == (4 * H,)
    cell(x)
    with pytest.raises(ValueError, match="LSTMCell.backward: both grad_h and grad_c are None"):
        cell.backward(None, None)
