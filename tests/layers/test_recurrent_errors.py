"""Clear errors at the boundary of the recurrent layers: each names the layer, what it expected and
what it got, and leaves the layer unchanged (nothing recorded)."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import rand


def _x(*shape):
    return nnx.asarray(np.zeros(shape))


def test_input_rank_and_feature_size(backend):
    lstm = nnx.LSTM(4, 3)
    with pytest.raises(ValueError, match=r"LSTM\(input_size=4, hidden_size=3.*expected a 3-D input "
                                         r"\(L, N, input_size\) or a 2-D unbatched input.*got shape \(2, 2, 2, 4\)"):
        lstm(_x(2, 2, 2, 4))
    with pytest.raises(ValueError, match=r"GRU\(input_size=4.*expected a 3-D input \(N, L, input_size\)"):
        nnx.GRU(4, 3, batch_first=True)(_x(4))
    with pytest.raises(ValueError,
                       match=r"RNN\(input_size=4.*input_size = 4 in its last dimension, got shape \(5, 2, 3\)"):
        nnx.RNN(4, 3)(_x(5, 2, 3))
    with pytest.raises(ValueError, match=r"LSTMCell\(input_size=4, hidden_size=3\): expected a 2-D input"):
        nnx.LSTMCell(4, 3)(_x(1, 2, 4))
    with pytest.raises(ValueError, match=r"GRUCell\(input_size=4, hidden_size=3\): expected input with input_size = 4"):
        nnx.GRUCell(4, 3)(_x(2, 5))
    assert len(lstm._tape) == 0


def test_dtype_and_backend(backend):
    lstm = nnx.LSTM(4, 3)
    with pytest.raises(TypeError, match=r"LSTM\(.*expected a floating-point input, got dtype int64"):
        lstm(nnx.asarray(np.zeros((2, 2, 4), dtype=np.int64)))
    with pytest.raises(TypeError, match=r"LSTM\(.*input has dtype float64 but the parameters are float32"):
        lstm(nnx.asarray(np.zeros((2, 2, 4)), dtype="float64"))
    other = "torch" if nnx.get_backend().name != "torch" else "numpy"
    if nnx.available_backends().get(other) is True:
        with pytest.raises(nnx.BackendMismatchError, match=r"LSTM\("):
            lstm(nnx.asarray(np.zeros((2, 2, 4)), backend=other))


def test_state_shapes(backend):
    lstm = nnx.LSTM(4, 3, num_layers=2)
    x = _x(5, 2, 4)
    with pytest.raises(ValueError, match=r"LSTM\(.*expected h0 of shape \(2, 2, 3\) "
                                         r"\(num_layers \* num_directions, batch, hidden_size\), got \(1, 2, 3\)"):
        lstm(x, (_x(1, 2, 3), _x(2, 2, 3)))
    with pytest.raises(ValueError, match=r"expected c0 of shape \(2, 2, 3\)"):
        lstm(x, (_x(2, 2, 3), _x(2, 3, 3)))
    with pytest.raises(TypeError, match=r"LSTM\(.*hx must be a pair \(h0, c0\)"):
        lstm(x, _x(2, 2, 3))
    with pytest.raises(ValueError, match=r"GRU\(.*bidirectional=True\): expected hx of shape \(2, 2, 3\)"):
        nnx.GRU(4, 3, bidirectional=True)(x, _x(1, 2, 3))
    with pytest.raises(ValueError, match=r"RNN\(.*expected hx of shape \(1, 3\).*for unbatched input"):
        nnx.RNN(4, 3)(_x(5, 4), _x(1, 2, 3))
    with pytest.raises(ValueError, match=r"RNNCell\(input_size=4, hidden_size=3\): expected hx of shape \(2, 3\)"):
        nnx.RNNCell(4, 3)(_x(2, 4), _x(3, 3))
    with pytest.raises(TypeError, match=r"LSTMCell\(.*hx must be a pair \(h, c\)"):
        nnx.LSTMCell(4, 3)(_x(2, 4), _x(2, 3))


def test_lengths(backend):
    gru = nnx.GRU(4, 3)
    x = _x(5, 2, 4)
    with pytest.raises(ValueError, match=r"GRU\(.*lengths must have shape \(2,\).*got shape \(3,\)"):
        gru(x, lengths=[1, 2, 3])
    with pytest.raises(TypeError, match=r"GRU\(.*lengths must be integers, got dtype float"):
        gru(x, lengths=nnx.asarray(np.array([1.0, 2.0])))
    with pytest.raises(TypeError, match=r"GRU\(.*lengths must be integers"):
        gru(x, lengths=[1.5, 2])
    with pytest.raises(ValueError, match=r"GRU\(.*lengths needs a batched 3-D input"):
        gru(_x(5, 4), lengths=[5])
    # value checks: always for host lists; for backend arrays where reading values is free
    with pytest.raises(ValueError, match=r"GRU\(.*every length must be in \[1, 5\].*got min 0, max 3"):
        gru(x, lengths=[0, 3])
    with pytest.raises(ValueError, match=r"every length must be in \[1, 5\].*max 6"):
        gru(x, lengths=[6, 3])
    if nnx.get_backend().host_memory:
        with pytest.raises(ValueError, match=r"every length must be in \[1, 5\]"):
            gru(x, lengths=nnx.asarray(np.array([2, 9])))
    assert len(gru._tape) == 0


def test_constructor_arguments():
    with pytest.raises(ValueError, match="RNN: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        nnx.RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="LSTM: hidden_size must be a positive integer, got 0"):
        nnx.LSTM(2, 0)
    with pytest.raises(ValueError, match="GRU: dropout must be in"):
        nnx.GRU(2, 3, dropout=1.5)
    with pytest.raises(ValueError, match=r"LSTM: proj_size has to be smaller than hidden_size \(3\), got 3"):
        nnx.LSTM(2, 3, proj_size=3)
    with pytest.raises(ValueError, match="RNNBase: proj_size is only supported by LSTM, got 1"):
        nnx.layers.recurrent.RNNBase("GRU", 2, 3, proj_size=1)
    with pytest.raises(ValueError, match="RNNCell: nonlinearity must be"):
        nnx.RNNCell(2, 3, nonlinearity="gelu")


def test_backward_errors(backend):
    lstm = nnx.LSTM(2, 3, dtype="float64")
    with pytest.raises(nnx.NotRecordedError, match="LSTM.backward"):
        lstm.backward(rand(4, 1, 3))
    lstm(rand(4, 1, 2))
    with pytest.raises(ValueError, match=r"LSTM.backward: a tuple gradient must be shaped like the output"):
        lstm.backward((rand(4, 1, 3),))
    with pytest.raises(TypeError, match="LSTM.backward: pass either one tuple"):
        lstm.backward((rand(4, 1, 3), None), rand(1, 1, 3))


def test_projected_lstm_state_shapes(backend):
    lstm = nnx.LSTM(4, 3, proj_size=2)
    x = _x(5, 2, 4)
    with pytest.raises(ValueError, match=r"expected h0 of shape \(1, 2, 2\) \(num_layers \* num_directions, batch, "
                                         r"proj_size\), got \(1, 2, 3\)"):
        lstm(x, (_x(1, 2, 3), _x(1, 2, 3)))
    with pytest.raises(ValueError, match=r"expected c0 of shape \(1, 2, 3\)"):
        lstm(x, (_x(1, 2, 2), _x(1, 2, 2)))
