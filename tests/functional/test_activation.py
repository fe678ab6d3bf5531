"""Activations: gradient checks, PyTorch parity (outputs and input gradients), dtype preservation and
numerical stability at extreme inputs, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, rand

# (id, nnx module factory, torch functional form, nnx functional form)
ACTIVATIONS = [
    ("relu", lambda: nnx.ReLU(), lambda tf, x: tf.relu(x), lambda x: F.relu(x)),
    ("leaky_relu", lambda: nnx.LeakyReLU(0.2), lambda tf, x: tf.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2)),
    ("leaky_relu_default", lambda: nnx.LeakyReLU(), lambda tf, x: tf.leaky_relu(x), lambda x: F.leaky_relu(x)),
    ("elu", lambda: nnx.ELU(), lambda tf, x: tf.elu(x), lambda x: F.elu(x)),
    ("elu_alpha", lambda: nnx.ELU(alpha=0.7), lambda tf, x: tf.elu(x, alpha=0.7), lambda x: F.elu(x, 0.7)),
    ("gelu", lambda: nnx.GELU(), lambda tf, x: tf.gelu(x), lambda x: F.gelu(x)),
    ("gelu_tanh", lambda: nnx.GELU(approximate="tanh"), lambda tf, x: tf.gelu(x, approximate="tanh"),
     lambda x: F.gelu(x, approximate="tanh")),
    ("silu", lambda: nnx.SiLU(), lambda tf, x: tf.silu(x), lambda x: F.silu(x)),
    ("mish", lambda: nnx.Mish(), lambda tf, x: tf.mish(x), lambda x: F.mish(x)),
    ("softplus", lambda: nnx.Softplus(), lambda tf, x: tf.softplus(x), lambda x: F.softplus(x)),
    ("softplus_beta_threshold", lambda: nnx.Softplus(beta=2.0, threshold=2.5),
     lambda tf, x: tf.softplus(x, beta=2.0, threshold=2.5), lambda x: F.softplus(x, beta=2.0, threshold=2.5)),
    ("hardtanh", lambda: nnx.Hardtanh(), lambda tf, x: tf.hardtanh(x), lambda x: F.hardtanh(x)),
    ("hardtanh_range", lambda: nnx.Hardtanh(-0.5, 0.8), lambda tf, x: tf.hardtanh(x, -0.5, 0.8),
     lambda x: F.hardtanh(x, -0.5, 0.8)),
    ("sigmoid", lambda: nnx.Sigmoid(), lambda tf, x: tf.sigmoid(x), lambda x: F.sigmoid(x)),
    ("tanh", lambda: nnx.Tanh(), lambda tf, x: tf.tanh(x), lambda x: F.tanh(x)),
    ("softmax_last", lambda: nnx.Softmax(dim=-1), lambda tf, x: tf.softmax(x, dim=-1), lambda x: F.softmax(x, -1)),
    ("softmax_dim0", lambda: nnx.Softmax(dim=0), lambda tf, x: tf.softmax(x, dim=0), lambda x: F.softmax(x, 0)),
    ("softmax_dim1", lambda: nnx.Softmax(dim=1), lambda tf, x: tf.softmax(x, dim=1), lambda x: F.softmax(x, 1)),
    ("log_softmax_last", lambda: nnx.LogSoftmax(dim=-1), lambda tf, x: tf.log_softmax(x, dim=-1),
     lambda x: F.log_softmax(x, -1)),
    ("log_softmax_dim1", lambda: nnx.LogSoftmax(dim=1), lambda tf, x: tf.log_softmax(x, dim=1),
     lambda x: F.log_softmax(x, 1)),
]
IDS = [a[0] for a in ACTIVATIONS]


def _data(seed: int = 1, dtype: str = "float64"):
    """(2, 3, 4) data with a spread of magnitudes (both sides of every kink and threshold)."""
    return rand(2, 3, 4, seed=seed, dtype=dtype, scale=2.0)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_gradcheck(backend, act):
    _, make, _, _ = act
    assert nnx.gradcheck(make(), _data())


@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_torch_parity_output_and_input_grad(backend, torch, act):
    _, make, torch_fn, plain = act
    x = _data(seed=2)
    dy = rand(2, 3, 4, seed=3)
    layer = make()
    y = layer(x)
    dx = layer.backward(dy)
    tx = torch.tensor(host(x), requires_grad=True)
    ty = torch_fn(torch.nn.functional, tx)
    ty.backward(torch.tensor(host(dy)))
    assert_close(y, ty, rtol=1e-12, atol=1e-14, what="output")
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-13, what="input gradient")
    # the plain functional form gives the same output
    assert_close(plain(x), ty, rtol=1e-12, atol=1e-14, what="functional output")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_output_and_grad_dtype_equal_input_dtype(backend, act, dtype):
    _, make, _, _ = act
    x = _data(dtype=dtype)
    layer = make()
    y = layer(x)
    dx = layer.backward(rand(2, 3, 4, seed=5, dtype=dtype))
    assert y.dtype == x.dtype, f"output dtype {y.dtype} != input dtype {x.dtype}"
    assert dx.dtype == x.dtype, f"input-gradient dtype {dx.dtype} != input dtype {x.dtype}"
    assert tuple(y.shape) == tuple(x.shape) == tuple(dx.shape)


EXTREME = [-1e4, -1000.0, -88.0, -50.0, -20.5, -1.0, 0.0, 1.0, 20.5, 50.0, 88.0, 1000.0, 1e4]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=IDS)
def test_stable_at_extreme_inputs(backend, torch, act, dtype):
    """No overflow, NaN or RuntimeWarning (pytest turns RuntimeWarning into an error) at huge inputs;
    values and gradients equal PyTorch's."""
    _, make, torch_fn, _ = act
    host_x = np.array([EXTREME, [v * 0.5 for v in EXTREME]])  # (2, 13): softmax rows span +-1e4
    x = nnx.asarray(host_x, dtype=dtype)
    layer = make()
    y = layer(x)
    dx = layer.backward(nnx.asarray(np.ones_like(host_x), dtype=dtype))
    hy, hdx = host(y), host(dx)
    assert np.all(np.isfinite(hy)), f"non-finite output {hy}"
    assert np.all(np.isfinite(hdx)), f"non-finite gradient {hdx}"
    tdt = getattr(torch, dtype)
    tx = torch.tensor(host_x, dtype=tdt, requires_grad=True)
    ty = torch_fn(torch.nn.functional, tx)
    ty.backward(torch.ones_like(ty))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hy, ty.detach().numpy(), **tol, err_msg="output at extreme inputs")
    np.testing.assert_allclose(hdx, tx.grad.numpy(), **tol, err_msg="gradient at extreme inputs")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_softmax_known_values_at_extremes(backend, dtype):
    x = nnx.asarray(np.array([-1000.0, 1000.0, 0.0]), dtype=dtype)
    np.testing.assert_array_equal(host(F.sigmoid(x)), np.array([0.0, 1.0, 0.5], dtype=dtype))
    logits = nnx.asarray(np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]]), dtype=dtype)
    p = host(F.softmax(logits, dim=1))
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    lp = host(F.log_softmax(logits, dim=1))
    np.testing.assert_allclose(lp, [[0.0, -1e4, -2e4], [-np.log(3.0)] * 3], rtol=1e-6)
    big = nnx.asarray(np.array([1000.0, -1000.0, 30.0]), dtype=dtype)
    np.testing.assert_allclose(host(F.softplus(big)), [1000.0, 0.0, 30.0], rtol=1e-6)
    np.testing.assert_allclose(host(F.gelu(big)), [1000.0, 0.0, 30.0], rtol=1e-6)


def test_softplus_threshold_switches_to_identity(backend):
    # beta * x > threshold -> exactly x (PyTorch's rule); below it, the log formula
    x = nnx.asarray(np.array([1.0, 1.6, 3.0]), dtype="float64")
    y = host(F.softplus(x, beta=2.0, threshold=3.0))
    np.testing.assert_allclose(y, [np.log1p(np.exp(2.0)) / 2.0, 1.6, 3.0], rtol=1e-14)


def test_gelu_rejects_unknown_approximation(backend):
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'fast'"):
        nnx.GELU(approximate="fast")
    with pytest.raises(ValueError, match="gelu"):
        F.gelu(_data(), approximate="fast")


def test_activation_records_nothing_in_eval_and_no_grad(backend):
    layer = nnx.Tanh()
    with nnx.no_grad():
        layer(_data())
    with pytest.raises(nnx.NotRecordedError):
        layer.backward(_data())
    layer.eval()
    layer(_data())
    with pytest.raises(nnx.NotRecordedError):
        layer.backward(_data())


def test_activation_repr_matches_torch(torch):
    assert repr(nnx.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nnx.ReLU()) == repr(torch.nn.ReLU()) == "ReLU()"
    assert repr(nnx.Softmax(dim=1)) == repr(torch.nn.Softmax(dim=1))
