"""Clear errors at the boundary (rule 5 of the design; docs/ARCHITECTURE.md): each message names the layer or
function, what it
expected and what it got, and nothing is half-updated."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import host, rand, require_backend

LINEAR = r"Linear\(in_features=4, out_features=3\)"


# ----------------------------------------------------------------------------- Linear inputs
def test_linear_wrong_feature_size(backend):
    layer = nnx.Linear(4, 3)
    with pytest.raises(ValueError, match=LINEAR + r": expected input with in_features = 4 \(dimension 1\), "
                                               r"got shape \(2, 5\)"):
        layer(rand(2, 5, dtype="float32"))
    with pytest.raises(ValueError, match=LINEAR + r": expected input with in_features = 4 \(dimension 2\), "
                                               r"got shape \(2, 4, 3\)"):
        layer(rand(2, 4, 3, dtype="float32"))


def test_linear_wrong_rank(backend):
    layer = nnx.Linear(4, 3)
    scalar = nnx.asarray(np.asarray(1.0))
    with pytest.raises(ValueError, match=LINEAR + r": expected .*input of shape \(\*, in_features\), got shape \(\)"):
        layer(scalar)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_linear_integer_input(backend, dtype):
    layer = nnx.Linear(4, 3)
    x = nnx.asarray(np.ones((2, 4)), dtype=dtype)
    with pytest.raises(TypeError, match=LINEAR + f": expected a floating-point input, got dtype {dtype}; "
                                              r"convert with nnx.asarray\(x\)"):
        layer(x)


def test_linear_dtype_mismatch(backend):
    layer = nnx.Linear(4, 3)
    with pytest.raises(TypeError, match=LINEAR + r": input has dtype float64 but the parameters are float32; "
                                              r"convert the input or call model.to\(dtype=...\)"):
        layer(rand(2, 4, dtype="float64"))


def test_error_is_raised_before_anything_is_recorded(backend):
    layer = nnx.Linear(4, 3)
    with pytest.raises(ValueError):
        layer(rand(2, 5, dtype="float32"))
    assert len(layer._tape) == 0


# ----------------------------------------------------------------------------- mixed backends and devices
def test_numpy_array_into_torch_model():
    require_backend("torch")
    with nnx.use_backend("torch"):
        layer = nnx.Linear(4, 3)
        model = nnx.Sequential(layer, nnx.ReLU())
    x = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(nnx.BackendMismatchError) as info:
        model(x)
    msg = str(info.value)
    assert msg.startswith("Linear(in_features=4, out_features=3): input is a numpy array of shape (2, 4) "
                          "and dtype float32")
    assert "parameters live on backend 'torch'" in msg
    assert "nnx.asarray(x, backend='torch')" in msg and "model.to('numpy')" in msg
    assert isinstance(info.value, TypeError), "BackendMismatchError is a TypeError"


def test_torch_tensor_into_numpy_model():
    require_backend("torch")
    layer = nnx.Linear(4, 3, backend="numpy")
    x = nnx.asarray(np.ones((2, 4)), backend="torch")
    with pytest.raises(nnx.BackendMismatchError, match=LINEAR + r": input is a torch on cpu array of shape \(2, 4\) "
                                                               r"and dtype float32, .*backend 'numpy'"):
        layer(x)


def test_strict_arrays_on_two_devices():
    with nnx.use_backend("array_api_strict"):
        layer = nnx.Linear(4, 3)
    x = nnx.asarray(np.ones((2, 4)), backend="array_api_strict", device="device1")
    with pytest.raises(nnx.BackendMismatchError) as info:
        layer(x)
    msg = str(info.value)
    assert msg.startswith("Linear(in_features=4, out_features=3): input is on device")
    assert "device1" in msg and "CPU_DEVICE" in msg and "model.to(device=...)" in msg
    # the same for a loss: input and target on two devices
    a = nnx.asarray(np.ones((2, 1)), backend="array_api_strict")
    b = nnx.asarray(np.ones((2, 1)), backend="array_api_strict", device="device1")
    with pytest.raises(nnx.BackendMismatchError, match=r"MSELoss: target is on device .*device1.* but the input is "
                                                       r"on .*CPU_DEVICE"):
        nnx.MSELoss()(a, b)


def test_loss_target_from_another_backend():
    require_backend("torch")
    logits = nnx.asarray(np.ones((2, 3)), backend="torch")
    with pytest.raises(nnx.BackendMismatchError, match=r"CrossEntropyLoss: target is a numpy array of shape \(2,\) "
                                                       r"and dtype int64, but the input lives on backend 'torch'"):
        nnx.CrossEntropyLoss()(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="MSELoss: expected an array as target, got list"):
        nnx.MSELoss()(logits, [1.0, 2.0])


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss_cls", [nnx.MSELoss, nnx.L1Loss, nnx.HuberLoss, nnx.SmoothL1Loss, nnx.BCELoss,
                                      nnx.BCEWithLogitsLoss])
def test_loss_shape_mismatch_n1_vs_n(backend, loss_cls):
    pred = nnx.asarray(np.full((4, 1), 0.5))
    target = nnx.asarray(np.full((4,), 0.5))
    name = loss_cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: input has shape \(4, 1\) but target has shape \(4,\); they must "
                                         r"match .*\(N, 1\) versus \(N,\) mismatch would broadcast to \(N, N\)"):
        loss_cls()(pred, target)


def test_loss_integer_input(backend):
    with pytest.raises(TypeError, match="MSELoss: expected a floating-point input, got dtype int64"):
        nnx.MSELoss()(nnx.asarray(np.ones(3, dtype=np.int64)), nnx.asarray(np.ones(3, dtype=np.int64)))


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_cross_entropy_out_of_range_class(backend, bad):
    logits = rand(4, 3, dtype="float32")
    target = nnx.asarray(np.array([0, 1, bad, 2]))
    lo, hi = min(0, bad), max(2, bad)
    with pytest.raises(ValueError, match=rf"cross_entropy: target class indices must be in \[0, 3\) "
                                         rf"\(or ignore_index=-100\); got values in \[{lo}, {hi}\]"):
        nnx.CrossEntropyLoss()(logits, target)
    with pytest.raises(ValueError, match=r"nll_loss: target class indices must be in \[0, 3\)"):
        nnx.NLLLoss()(logits, target)
    # the ignored index is allowed
    assert np.isfinite(float(nnx.CrossEntropyLoss(ignore_index=bad)(logits, target)))


def test_cross_entropy_target_shape_and_kind(backend):
    logits = rand(4, 3, dtype="float32")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: class-index target must have shape \(4,\) for input of "
                                         r"shape \(4, 3\), got \(4, 1\)"):
        nnx.CrossEntropyLoss()(logits, nnx.asarray(np.zeros((4, 1), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"cross_entropy: probability targets must have the input's shape \(4, 3\), "
                                         r"got \(4, 2\)"):
        nnx.CrossEntropyLoss()(logits, rand(4, 2, dtype="float32"))
    with pytest.raises(ValueError, match=r"nll_loss: target has 3 elements but input has 4 rows"):
        nnx.NLLLoss()(logits, nnx.asarray(np.zeros(3, dtype=np.int64)))


def test_bad_loss_hyper_parameters(backend):
    x = rand(3, dtype="float32")
    with pytest.raises(ValueError, match="huber_loss: delta must be positive, got -1.0"):
        nnx.HuberLoss(delta=-1.0)(x, x)
    with pytest.raises(ValueError, match="smooth_l1_loss: beta must be non-negative, got -0.5"):
        nnx.SmoothL1Loss(beta=-0.5)(x, x)
    with pytest.raises(ValueError, match="CrossEntropyLoss: reduction must be one of .*got 'avg'"):
        nnx.CrossEntropyLoss(reduction="avg")


# ----------------------------------------------------------------------------- hyper-parameters
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_negative_learning_rate(backend, name):
    params = nnx.Linear(2, 2).parameters()
    with pytest.raises(ValueError, match=rf"{name}: lr must be a non-negative number, got -0.1"):
        getattr(nnx.optim, name)(params, lr=-0.1)


def test_other_bad_hyper_parameters(backend):
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\], got 1.2"):
        nnx.Dropout(1.2)
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\], got -0.5"):
        nnx.Dropout(-0.5)
    with pytest.raises(ValueError, match="Linear: in_features must be a positive integer, got 0"):
        nnx.Linear(0, 3)
    with pytest.raises(ValueError, match="Linear: out_features must be a positive integer, got 2.5"):
        nnx.Linear(3, 2.5)
    with pytest.raises(ValueError, match="SGD: momentum must be a non-negative number, got -0.9"):
        nnx.optim.SGD(nnx.Linear(2, 2).parameters(), lr=0.1, momentum=-0.9)
    with pytest.raises(ValueError, match=r"RMSprop: alpha must be in \[0, 1\], got 1.5"):
        nnx.optim.RMSprop(nnx.Linear(2, 2).parameters(), alpha=1.5)
    with pytest.raises(ValueError, match=r"Adam: weight_decay must be a non-negative number, got -0.1"):
        nnx.optim.Adam(nnx.Linear(2, 2).parameters(), weight_decay=-0.1)


def test_failed_forward_leaves_parameters_alone(backend):
    layer = nnx.Linear(4, 3)
    w = host(layer.weight.data).copy()
    for bad in (rand(2, 5, dtype="float32"), nnx.asarray(np.ones((2, 4), dtype=np.int64))):
        with pytest.raises((ValueError, TypeError)):
            layer(bad)
    np.testing.assert_array_equal(host(layer.weight.data), w)
    assert layer.weight.grad is None


def test_optimizer_state_left_behind_by_model_to(backend):
    """Moving a model after its optimizer has state: the next step says what happened and updates nothing."""
    other = {"numpy": "torch", "torch": "array_api_strict"}.get(backend.name, "numpy")  # any other: to NumPy
    require_backend(other)
    model = nnx.Sequential(nnx.Linear(3, 2))
    opt = nnx.optim.Adam(model.parameters(), lr=0.1)
    loss_fn = nnx.MSELoss()
    loss_fn(model(rand(4, 3, dtype="float32")), rand(4, 2, dtype="float32", seed=1))
    model.backward(loss_fn.backward())
    opt.step()
    model.to(other)
    before = [host(p.data).copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad = p.data * 0.5
    with pytest.raises(ValueError, match=r"Adam.step: optimizer state 'exp_avg' lives on another backend or device "
                                         r"than its parameter .*create the optimizer after model.to\(...\)"):
        opt.step()
    for b_, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(host(p.data), b_)


def test_optimizer_state_or_gradient_on_another_device():
    """Same library, another device (array_api_strict's device1): caught before anything changes."""
    with nnx.use_backend("array_api_strict"):
        model = nnx.Sequential(nnx.Linear(3, 2))
        opt = nnx.optim.Adam(model.parameters(), lr=0.1)
        for p in model.parameters():
            p.grad = p.data * 0.5
        opt.step()
        state = [host(st["exp_avg"]).copy() for st in opt.state.values()]
        model.to(device="device1")
        for p in model.parameters():
            p.grad = p.data * 0.5
        before = [host(p.data).copy() for p in model.parameters()]
        with pytest.raises(ValueError, match=r"Adam.step: optimizer state 'exp_avg' lives on another backend or "
                                             r"device than its parameter \(.*CPU_DEVICE.* vs .*device1"):
            opt.step()
        for b_, p in zip(before, model.parameters()):
            np.testing.assert_array_equal(host(p.data), b_)
        for s_, st in zip(state, opt.state.values()):
            np.testing.assert_array_equal(host(st["exp_avg"]), s_)

        fresh = nnx.Linear(3, 2)
        sgd = nnx.optim.SGD(fresh.parameters(), lr=0.1)
        fresh.weight.grad = fresh.weight.data * 0.5
        fresh.bias.grad = nnx.asarray(np.ones(2), device="device1")  # the last one: the weight would go first
        w = host(fresh.weight.data).copy()
        with pytest.raises(ValueError, match=r"SGD.step: gradient is a .*device1.* but its parameter is a "
                                             r".*CPU_DEVICE.*nothing was updated"):
            sgd.step()
        np.testing.assert_array_equal(host(fresh.weight.data), w)
