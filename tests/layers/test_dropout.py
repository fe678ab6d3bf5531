"""nnx/layers/dropout.py and nnx/functional/dropout.py: Dropout and Dropout2d statistics, scaling,
eval mode, reproducibility, gradients with a fixed mask, argument errors."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import host, rand


def test_dropout2d_drops_whole_channels(backend):
    nnx.manual_seed(3)
    layer = nnx.Dropout2d(0.5)
    x = nnx.asarray(np.ones((8, 16, 3, 3)), dtype="float32")
    y = host(layer(x))
    per_channel = y.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2.0).all(axis=2))
    dropped = (per_channel == 0).all(axis=2).mean()
    assert 0.3 < dropped < 0.7
    dx = host(layer.backward(nnx.asarray(np.ones((8, 16, 3, 3)), dtype="float32")))
    np.testing.assert_array_equal(dx, y)  # same mask, same scale
    assert y.dtype == np.float32
    layer.eval()
    np.testing.assert_array_equal(host(layer(x)), host(x))
    assert host(nnx.Dropout2d(1.0)(x)).sum() == 0


def test_dropout2d_gradcheck_with_fixed_mask(backend):
    nnx.manual_seed(0)
    y, back = nnx.functional.dropout2d_forward(rand(2, 3, 2, 2), 0.4)
    # the mask is fixed inside the closure; the op is linear, so dx == dropout applied to dy
    x = rand(2, 3, 2, 2, seed=5)
    ones = nnx.asarray(np.ones((2, 3, 2, 2)), dtype="float64")
    dx, _ = back(ones)
    mask = host(dx)
    np.testing.assert_allclose(host(back(x)[0]), host(x) * mask)
    assert set(np.unique(mask)) <= {0.0, 1.0 / 0.6}


def test_dropout_statistics_and_scaling(backend):
    p = 0.3
    layer = nnx.Dropout(p)
    x = nnx.asarray(np.ones((200, 150)), dtype="float32")
    y = host(layer(x))
    dropped = np.mean(y == 0.0)
    assert abs(dropped - p) < 0.02, f"dropped fraction {dropped}, expected {p}"
    kept = y[y != 0.0]
    np.testing.assert_allclose(kept, 1.0 / (1.0 - p), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.03  # inverted dropout keeps the expectation
    assert y.dtype == np.float32
    # backward: the same mask and scaling
    dy = nnx.asarray(np.full((200, 150), 2.0), dtype="float32")
    dx = host(layer.backward(dy))
    np.testing.assert_array_equal(dx == 0.0, y == 0.0)
    np.testing.assert_allclose(dx[y != 0.0], 2.0 / (1.0 - p), rtol=1e-6)


def test_dropout_eval_p0_p1(backend):
    x = rand(20, 10, dtype="float32")
    layer = nnx.Dropout(0.5).eval()
    assert layer(x) is x
    with pytest.raises(nnx.NotRecordedError):
        layer.backward(x)
    layer.train()
    y1 = host(layer(x))
    assert np.any(y1 == 0) and not np.array_equal(y1, host(x))
    assert host(nnx.Dropout(0.0)(x)).tolist() == host(x).tolist()
    zeros = nnx.Dropout(1.0)
    np.testing.assert_array_equal(host(zeros(x)), 0.0)
    np.testing.assert_array_equal(host(zeros.backward(x)), 0.0)
    assert host(F.dropout(x, 0.5, training=False)).tolist() == host(x).tolist()


def test_dropout_reproducible_with_manual_seed(backend):
    x = nnx.asarray(np.ones((30, 30)))
    nnx.manual_seed(11)
    a = host(F.dropout(x, 0.5))
    nnx.manual_seed(11)
    b = host(F.dropout(x, 0.5))
    nnx.manual_seed(12)
    c = host(F.dropout(x, 0.5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_gradcheck_with_fixed_mask(backend):
    def forward(x):
        nnx.manual_seed(5)  # the same mask on every evaluation
        return F.dropout_forward(x, 0.4)

    assert nnx.gradcheck(forward, rand(4, 5, seed=1))


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", True])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\], got"):
        nnx.Dropout(p)


def test_dropout_repr():
    assert repr(nnx.Dropout(0.25)) == "Dropout(p=0.25)"
