"""The recurrent kernels of nnx.functional: each cell's step functions on their own (one forward
step against PyTorch's LSTMCell / GRUCell / RNNCell in float64, one backward step against a
numerical gradient) and the functional forms (layers' own tests: tests/layers/test_recurrent*.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnx
import nnx_backends as backends
from nnx.functional import recurrent_cells as cells

from helpers import assert_close, host, rand

B, IN, H = 3, 4, 5
T = 6
TORCH_CELLS = {"RNN_TANH": ("RNNCell", {"nonlinearity": "tanh"}), "RNN_RELU": ("RNNCell", {"nonlinearity": "relu"}),
               "LSTM": ("LSTMCell", {}), "GRU": ("GRUCell", {})}


def _weights(cell: cells.Cell, seed: int = 1) -> tuple[Any, Any, Any, Any]:
    g = cell.gates * H
    return rand(g, IN, seed=seed), rand(g, H, seed=seed + 1), rand(g, seed=seed + 2), rand(g, seed=seed + 3)


def _gx(cell: cells.Cell, x: Any, w_ih: Any, b_ih: Any, b_hh: Any) -> Any:
    xp = backends.backend_of(x).xp
    gx = xp.matmul(x, xp.matrix_transpose(w_ih)) + b_ih
    return _rz_bias(cell, gx, b_hh) if cell.split_bias else gx + b_hh


def _rz_bias(cell: cells.Cell, gx: Any, b_hh: Any) -> Any:
    """GRU: the caller adds the r and z parts of b_hh to gx; the n part goes to the step (``_n_bias``)."""
    xp = backends.backend_of(gx).xp
    return gx + xp.concat([b_hh[:2 * H], xp.zeros_like(b_hh[2 * H:])])


def _n_bias(cell: cells.Cell, b_hh: Any) -> Any:
    return b_hh[2 * H:] if cell.split_bias else None


@pytest.mark.parametrize("mode", sorted(cells.CELLS))
def test_step_forward_matches_torch_cell(backend, torch, mode):
    cell = cells.CELLS[mode]
    b = backends.backend_of(rand(1))
    w_ih, w_hh, b_ih, b_hh = _weights(cell)
    x, h, c = rand(B, IN, seed=7), rand(B, H, seed=8, scale=0.5), rand(B, H, seed=9, scale=0.5)
    xp = b.xp
    h1, c1, _ = cell.step_forward(b, _gx(cell, x, w_ih, b_ih, b_hh), h, c if cell.has_cell_state else None,
                                  xp.matrix_transpose(w_hh), _n_bias(cell, b_hh))
    name, kw = TORCH_CELLS[mode]
    tcell = getattr(torch.nn, name)(IN, H, dtype=torch.float64, **kw)
    with torch.no_grad():
        for tname, a in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), (w_ih, w_hh, b_ih, b_hh), strict=True):
            getattr(tcell, tname).copy_(torch.from_numpy(host(a)))
        th = torch.from_numpy(host(h))
        out = tcell(torch.from_numpy(host(x)), (th, torch.from_numpy(host(c))) if cell.has_cell_state else th)
    if cell.has_cell_state:
        assert_close(h1, out[0].numpy(), what="h'")
        assert_close(c1, out[1].numpy(), what="c'")
    else:
        assert c1 is None
        assert_close(h1, out.numpy(), what="h'")


@pytest.mark.parametrize("mode", sorted(cells.CELLS))
def test_step_backward_gradcheck(backend, mode):
    """The step backward of every cell, as an op of (gx, h, c, w_hh, b_hh), against finite differences."""
    cell = cells.CELLS[mode]
    b = backends.backend_of(rand(1))
    xp = b.xp
    _, w_hh, _, b_hh = _weights(cell)
    gx = rand(B, cell.gates * H, seed=11)
    h, c = rand(B, H, seed=12, scale=0.5), rand(B, H, seed=13, scale=0.5)
    if mode == "RNN_RELU":  # keep the pre-activations away from the kink at 0
        gx = gx + xp.sign(gx) * 0.5

    def step(gx: Any, h: Any, c: Any, w_hh: Any, b_hh: Any) -> tuple[Any, Any]:
        gx_b = _rz_bias(cell, gx, b_hh) if cell.split_bias else gx
        h1, c1, saved = cell.step_forward(b, gx_b, h, c if cell.has_cell_state else None, xp.matrix_transpose(w_hh),
                                          _n_bias(cell, b_hh))
        y = xp.concat([h1, c1], axis=1) if cell.has_cell_state else h1

        def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
            dh, dc = (dy[:, :H], dy[:, H:]) if cell.has_cell_state else (dy, None)
            dgx, dgh, dh_prev, dc_prev = cell.step_backward(b, dh, dc, saved, h, c if cell.has_cell_state else None,
                                                            w_hh)
            dw_hh = xp.matmul(xp.matrix_transpose(dgh), h)
            db_hh = xp.sum(dgh, axis=0) if cell.split_bias else xp.zeros_like(b_hh)
            return dgx, (dh_prev, dc_prev if cell.has_cell_state else xp.zeros_like(c), dw_hh, db_hh)

        return y, backward

    assert nnx.gradcheck(step, gx, h, c, w_hh, b_hh)


def test_step_backward_fails_when_broken(backend, monkeypatch):
    """The gradcheck above can fail: a wrong dc_prev from the LSTM step is caught."""
    b = backends.backend_of(rand(1))
    real = cells.lstm_step_backward

    def broken(*args: Any) -> tuple:
        dgx, dgh, dh, dc = real(*args)
        return dgx, dgh, dh, dc * 1.01

    monkeypatch.setattr(cells, "LSTM", cells.Cell("LSTM", 4, cells.lstm_step_forward, broken, has_cell_state=True))
    monkeypatch.setitem(cells.CELLS, "LSTM", cells.LSTM)
    with pytest.raises(nnx.GradcheckError):
        test_step_backward_gradcheck(b, "LSTM")


def test_cells_table():
    assert {c.name for c in cells.CELLS.values()} == {"RNN_TANH", "RNN_RELU", "LSTM", "GRU"}
    assert [cells.CELLS[m].gates for m in ("RNN_TANH", "LSTM", "GRU")] == [1, 4, 3]


def test_functional_lstm_matches_layer(backend):
    m = nnx.LSTM(IN, H, dtype="float64")
    x = rand(T, B, IN)
    out, (hn, cn) = nnx.functional.lstm(x, None, m._flat_weights)
    out2, (hn2, _) = m(x)
    # the same operations; to rounding only, as PyTorch's CPU GEMM (MKL) need not round a product
    # alike at two addresses (seen on an AMD EPYC: 21 of 90 outputs 6e-15 apart)
    np.testing.assert_allclose(host(out), host(out2), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(host(hn), host(hn2), rtol=1e-13, atol=1e-15)


def test_functional_backward_runs_once(backend):
    (out, _), backward = nnx.functional.gru_forward(rand(T, B, IN), None, nnx.GRU(IN, H, dtype="float64")._flat_weights)
    backward((nnx.asarray(np.ones((T, B, H)), dtype="float64"), None))
    with pytest.raises(RuntimeError, match="already differentiated or released"):
        backward((nnx.asarray(np.ones((T, B, H)), dtype="float64"), None))
