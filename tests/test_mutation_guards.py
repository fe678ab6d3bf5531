"""Tests that kill mutations which once passed the whole suite (issue 11, "tests that could not fail"):
each checks one exact behaviour that a plausible bug changes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import nnx
import nnx_backends
from nnx import serialization
from nnx.functional.dropout import dropout_mask


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_rnn_inter_layer_dropout_is_inverted_dropout(backend, p):
    """A 2-layer RNN in training equals layer 0, times the dropout mask (0 or 1/(1-p)), then layer 1."""
    rnn = nnx.RNN(3, 5, num_layers=2, dropout=p).to(dtype="float64")
    x = nnx.asarray(np.random.default_rng(0).standard_normal((4, 2, 3)), dtype="float64")
    l0, l1 = nnx.RNN(3, 5).to(dtype="float64"), nnx.RNN(5, 5).to(dtype="float64")
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(l0, f"{name}_l0").data = getattr(rnn, f"{name}_l0").data
        getattr(l1, f"{name}_l0").data = getattr(rnn, f"{name}_l1").data
    nnx.manual_seed(7)
    y, _ = rnn(x)
    out0, _ = l0(x)
    nnx.manual_seed(7)  # layer 0 draws no random numbers: the same mask comes next
    mask = dropout_mask(out0, p)
    m = nnx.to_numpy(mask)
    assert set(np.unique(m).tolist()) == {0.0, 1.0 / (1.0 - p)}
    expected, _ = l1(out0 * mask)
    np.testing.assert_allclose(nnx.to_numpy(y), nnx.to_numpy(expected), rtol=1e-10, atol=1e-12)


def test_embedding_max_norm_inf_uses_absolute_values(backend):
    """norm_type=inf is the largest |w|: a row [-5, 1] has norm 5 and is rescaled to max_norm 2."""
    emb = nnx.Embedding(2, 2, max_norm=2.0, norm_type=float("inf")).to(dtype="float64")
    emb.weight.data = nnx.asarray([[-5.0, 1.0], [1.0, 0.5]], dtype="float64")
    y = emb(nnx.asarray([0, 1], dtype="int64"))
    scale = 2.0 / (5.0 + 1e-7)
    expected = [[-5.0 * scale, 1.0 * scale], [1.0, 0.5]]
    np.testing.assert_allclose(nnx.to_numpy(y), expected, rtol=1e-12)
    np.testing.assert_allclose(nnx.to_numpy(emb.weight.data), expected, rtol=1e-12)


POOLS = [
    (lambda: nnx.AvgPool1d(2), (2, 3, 8)), (lambda: nnx.AvgPool2d(2), (2, 3, 6, 6)),
    (lambda: nnx.AvgPool3d(2), (1, 2, 4, 4, 4)), (lambda: nnx.AdaptiveAvgPool1d(3), (2, 3, 8)),
    (lambda: nnx.AdaptiveAvgPool2d((2, 3)), (2, 3, 7, 6)), (lambda: nnx.AdaptiveMaxPool2d(2), (2, 3, 5, 5)),
    (lambda: nnx.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 7, 7)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("i", range(len(POOLS)))
def test_pooling_keeps_the_input_dtype(backend, i, dtype):
    """Average and adaptive pooling: output and input gradient keep the input's dtype (no float64 leak)."""
    make, shape = POOLS[i]
    layer = make()
    x = nnx.asarray(np.random.default_rng(0).standard_normal(shape), dtype=dtype)
    y = layer(x)
    assert nnx_backends.Backend.dtype_name(y.dtype) == dtype
    dx = layer.backward(nnx.asarray(np.ones(tuple(y.shape)), dtype=dtype))
    assert nnx_backends.Backend.dtype_name(dx.dtype) == dtype


def _checkpoint_with_adam(tmp_path):
    model = nnx.Linear(3, 2)
    opt = nnx.optim.Adam(model.parameters(), lr=0.01)
    model(nnx.asarray([[1.0, 2.0, 3.0]]))
    model.backward(nnx.asarray([[1.0, 1.0]]))
    opt.step()
    path = tmp_path / "c.nnx"
    nnx.save_checkpoint(path, model=model, optimizer=opt, epoch=0)
    return model, opt, path


def test_checkpoint_refuses_integer_optimizer_moments(tmp_path):
    """An integer exp_avg in a checkpoint is refused by load_checkpoint itself (CheckpointError naming the
    dtype), and nothing is loaded."""
    model, opt, path = _checkpoint_with_adam(tmp_path)
    tree, _ = serialization._read(path, None)
    tree = copy.deepcopy(tree)
    tree["optimizer"]["state"][0]["exp_avg"] = tree["optimizer"]["state"][0]["exp_avg"].astype(np.int32)
    bad = tmp_path / "bad.nnx"
    serialization._write(bad, "checkpoint", tree)
    fresh_model = nnx.Linear(3, 2)
    fresh = nnx.optim.Adam(fresh_model.parameters(), lr=0.5)
    w = nnx.to_numpy(fresh_model.weight.data).copy()
    with pytest.raises(serialization.CheckpointError, match="exp_avg.*expected a floating dtype"):
        nnx.load_checkpoint(bad, model=fresh_model, optimizer=fresh)
    assert fresh.state == {} and fresh.param_groups[0]["lr"] == 0.5
    np.testing.assert_array_equal(nnx.to_numpy(fresh_model.weight.data), w)
