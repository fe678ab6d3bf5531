"""Linear, Identity, Flatten, Dropout: gradient checks, PyTorch parity, initialisation, dropout statistics,
weight tying and ``input_grad=False``, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, copy_params_to_torch, host, rand


def _torch_linear(torch, layer: nnx.Linear):
    t = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=torch.float64)
    copy_params_to_torch(layer, t)
    return t


# ----------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 2, 3)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(backend, shape, bias):
    layer = nnx.Linear(3, 2, bias=bias, dtype="float64")
    assert nnx.gradcheck(layer, rand(*shape, seed=1))


@pytest.mark.parametrize("shape", [(5,), (6, 5), (2, 3, 5), (2, 1, 3, 5)], ids=["1d", "2d", "3d", "4d"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_torch_parity(backend, torch, shape, bias):
    layer = nnx.Linear(5, 4, bias=bias, dtype="float64")
    tl = _torch_linear(torch, layer)
    x = rand(*shape, seed=2)
    dy = rand(*shape[:-1], 4, seed=3)
    y = layer(x)
    dx = layer.backward(dy)
    tx = torch.tensor(host(x), requires_grad=True)
    ty = tl(tx)
    ty.backward(torch.tensor(host(dy)))
    assert_close(y, ty, rtol=1e-12, atol=1e-13, what="output")
    assert_close(dx, tx.grad, rtol=1e-12, atol=1e-13, what="input gradient")
    assert_close(layer.weight.grad, tl.weight.grad, rtol=1e-12, atol=1e-13, what="weight gradient")
    if bias:
        assert_close(layer.bias.grad, tl.bias.grad, rtol=1e-12, atol=1e-13, what="bias gradient")
    else:
        assert layer.bias is None and list(layer.state_dict()) == ["weight"]


def test_linear_parameter_shapes_dtype_and_backend(backend):
    layer = nnx.Linear(7, 3)
    assert layer.weight.shape == (3, 7) and layer.bias.shape == (3,)
    assert layer.weight.backend is backend and layer.bias.backend is backend
    assert str(layer.weight.dtype).endswith("float32"), "default parameter dtype is float32"
    l64 = nnx.Linear(7, 3, dtype="float64")
    assert str(l64.weight.dtype).endswith("float64") and str(l64.bias.dtype).endswith("float64")
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert repr(layer) == "Linear(in_features=7, out_features=3, bias=True)"


def test_linear_backend_argument_overrides_current(backend):
    layer = nnx.Linear(2, 2, backend="numpy")
    assert layer.weight.backend.name == "numpy"
    y = layer(nnx.asarray(np.ones((1, 2)), backend="numpy"))
    assert isinstance(y, np.ndarray)


def test_linear_default_init_matches_pytorch_bounds(backend, torch):
    """PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias (kaiming_uniform a=sqrt(5))."""
    nnx.manual_seed(3)
    fan_in = 64
    layer = nnx.Linear(fan_in, 200)
    bound = 1.0 / math.sqrt(fan_in)
    w, b = host(layer.weight.data), host(layer.bias.data)
    for arr, what in ((w, "weight"), (b, "bias")):
        assert np.all(np.abs(arr) <= bound + 1e-7), f"{what} outside the PyTorch bound"
        assert np.abs(arr).max() > 0.95 * bound, f"{what} does not fill the PyTorch range"
    # a uniform on [-bound, bound]: mean 0, std bound / sqrt(3)
    assert abs(w.mean()) < 0.02 * bound * 3
    assert abs(w.std() - bound / math.sqrt(3)) < 0.03 * bound
    # torch draws from the same distribution (statistical comparison, not the same stream)
    tw = torch.nn.Linear(fan_in, 200).weight.detach().numpy()
    assert abs(tw.std() - w.std()) < 0.05 * bound
    # reseeding reproduces the initialisation on the same backend
    nnx.manual_seed(3)
    np.testing.assert_array_equal(host(nnx.Linear(fan_in, 200).weight.data), w)


def test_linear_weight_tying_accumulates_like_torch(backend, torch):
    """A module called twice before two backward calls accumulates both passes' gradients."""
    layer = nnx.Linear(3, 3, dtype="float64")
    tl = _torch_linear(torch, layer)
    x1, x2 = rand(4, 3, seed=1), rand(2, 3, seed=2)
    dy1, dy2 = rand(4, 3, seed=3), rand(2, 3, seed=4)
    y1, y2 = layer(x1), layer(x2)
    dx2 = layer.backward(dy2)  # newest pass first
    dx1 = layer.backward(dy1)
    tx1 = torch.tensor(host(x1), requires_grad=True)
    tx2 = torch.tensor(host(x2), requires_grad=True)
    ty1, ty2 = tl(tx1), tl(tx2)
    ((ty1 * torch.tensor(host(dy1))).sum() + (ty2 * torch.tensor(host(dy2))).sum()).backward()
    assert_close(y1, ty1, what="y1")
    assert_close(y2, ty2, what="y2")
    assert_close(dx1, tx1.grad, rtol=1e-12, atol=1e-13, what="dx1")
    assert_close(dx2, tx2.grad, rtol=1e-12, atol=1e-13, what="dx2")
    assert_close(layer.weight.grad, tl.weight.grad, rtol=1e-12, atol=1e-13, what="tied weight gradient")
    assert_close(layer.bias.grad, tl.bias.grad, rtol=1e-12, atol=1e-13, what="tied bias gradient")
    with pytest.raises(nnx.NotRecordedError):
        layer.backward(dy1)  # both passes consumed


def test_shared_layer_in_sequential_matches_torch(backend, torch):
    shared = nnx.Linear(3, 3, dtype="float64")
    model = nnx.Sequential(shared, nnx.Tanh(), shared)
    tl = _torch_linear(torch, shared)
    tmodel = torch.nn.Sequential(tl, torch.nn.Tanh(), tl)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    x, dy = rand(5, 3, seed=1), rand(5, 3, seed=2)
    y = model(x)
    dx = model.backward(dy)
    tx = torch.tensor(host(x), requires_grad=True)
    ty = tmodel(tx)
    ty.backward(torch.tensor(host(dy)))
    assert_close(y, ty, what="output")
    assert_close(dx, tx.grad, rtol=1e-12, atol=1e-13, what="input gradient")
    assert_close(shared.weight.grad, tl.weight.grad, rtol=1e-12, atol=1e-13, what="shared weight gradient")
    assert nnx.gradcheck(model, rand(2, 3, seed=5))


def test_linear_input_grad_false_returns_none_but_fills_param_grads(backend, torch):
    layer = nnx.Linear(3, 2, dtype="float64")
    tl = _torch_linear(torch, layer)
    x, dy = rand(4, 3, seed=1), rand(4, 2, seed=2)
    layer(x)
    assert layer.backward(dy, input_grad=False) is None
    ty = tl(torch.tensor(host(x)))
    ty.backward(torch.tensor(host(dy)))
    assert_close(layer.weight.grad, tl.weight.grad, rtol=1e-12, atol=1e-13, what="weight gradient")
    # the functional op skips dx too
    _, back = F.linear_forward(x, layer.weight.data, layer.bias.data)
    dx, (dw, db) = back(dy, input_grad=False)
    assert dx is None and dw is not None and db is not None
    # a Sequential passes input_grad=False to its first layer only
    model = nnx.Sequential(nnx.Linear(3, 3, dtype="float64"), nnx.Tanh(), nnx.Linear(3, 2, dtype="float64"))
    model(x)
    assert model.backward(dy, input_grad=False) is None
    assert all(p.grad is not None for p in model.parameters())


def test_linear_frozen_parameters_get_no_grad(backend):
    layer = nnx.Linear(3, 2, dtype="float64")
    layer.weight.requires_grad = False
    layer(rand(4, 3))
    layer.backward(rand(4, 2))
    assert layer.weight.grad is None and layer.bias.grad is not None


def test_linear_float32_stays_float32(backend):
    layer = nnx.Linear(3, 2)
    x = rand(4, 3, dtype="float32")
    y = layer(x)
    dx = layer.backward(rand(4, 2, dtype="float32"))
    assert y.dtype == x.dtype == dx.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype


# ----------------------------------------------------------------------------- Identity, Flatten
def test_identity(backend):
    layer = nnx.Identity(54, unused="ignored")  # accepts and ignores arguments, as torch
    x = rand(2, 3)
    assert layer(x) is x
    assert layer.backward(x) is x
    assert layer.backward(x, input_grad=False) is None
    assert list(layer.parameters()) == []
    assert nnx.gradcheck(nnx.Sequential(nnx.Identity(), nnx.Linear(3, 2, dtype="float64")), x)


@pytest.mark.parametrize("start,end", [(1, -1), (0, -1), (1, 2), (2, 3), (0, 1), (-2, -1)])
def test_flatten_torch_parity_and_gradcheck(backend, torch, start, end):
    x = rand(2, 3, 2, 2, seed=1)
    layer = nnx.Flatten(start, end)
    y = layer(x)
    ty = torch.nn.Flatten(start, end)(torch.tensor(host(x)))
    assert tuple(y.shape) == tuple(ty.shape)
    assert_close(y, ty, what="flatten output")
    dy = nnx.asarray(np.arange(np.prod(ty.shape), dtype=np.float64).reshape(tuple(ty.shape)), dtype="float64")
    dx = layer.backward(dy)
    assert tuple(dx.shape) == tuple(x.shape)
    np.testing.assert_array_equal(host(dx), host(dy).reshape(host(x).shape))
    assert nnx.gradcheck(nnx.Flatten(start, end), x)
    assert repr(layer) == repr(torch.nn.Flatten(start, end))


def test_flatten_bad_dims_raise(backend):
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=1, end_dim=5\).*out of range.*\(2, 3\)"):
        nnx.Flatten(1, 5)(rand(2, 3))


# ----------------------------------------------------------------------------- Dropout












# ----------------------------------------------------------------------------- nnx.init against torch.nn.init
@pytest.mark.parametrize("nonlinearity,param", [("linear", None), ("relu", None), ("tanh", None), ("sigmoid", None),
                                                ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None),
                                                ("conv2d", None)])
def test_calculate_gain_matches_torch(torch, nonlinearity, param):
    assert nnx.init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12)


def test_init_distributions(backend):
    nnx.manual_seed(1)
    p = nnx.Parameter(nnx.asarray(np.zeros((60, 80))))
    fan_in, fan_out = 80, 60
    nnx.init.xavier_uniform_(p, gain=2.0)
    a = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    w = host(p.data)
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.95 * a and w.dtype == np.float32
    nnx.init.kaiming_normal_(p, nonlinearity="relu")
    assert host(p.data).std() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05)
    nnx.init.kaiming_uniform_(p, mode="fan_out", nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_out)
    assert np.abs(host(p.data)).max() <= bound and np.abs(host(p.data)).max() > 0.95 * bound
    nnx.init.xavier_normal_(p)
    assert host(p.data).std() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.05)
    nnx.init.constant_(p, 0.25)
    assert np.all(host(p.data) == 0.25)
    nnx.init.orthogonal_(p, gain=1.5)
    q = host(p.data).astype(np.float64)
    np.testing.assert_allclose(q @ q.T, 2.25 * np.eye(60), atol=1e-4)  # rows orthogonal (60 < 80)
    with pytest.raises(ValueError, match="fan in and fan out need at least 2 dimensions"):
        nnx.init.xavier_uniform_(nnx.Parameter(nnx.asarray(np.zeros(3))))
