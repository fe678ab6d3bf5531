"""Issue 11 (PyTorch's module catalogue): empty tensors. A batch of size 0 (or a zero-size axis)
through the normalisation layers, Softmax/LogSoftmax, Linear, the convolutions and the pooling
layers gives what PyTorch gives: an empty output, an empty input gradient, zero parameter
gradients, running statistics unchanged (``num_batches_tracked`` still counts the batch), in both
kernel formulations; ``F.batch_norm`` on a 1-D input is refused clearly (PyTorch refuses it too)."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host
from helpers import layer_parity as parity


@pytest.fixture(params=["auto", "always"], ids=["host-shaped", "device-shaped"])
def formulation(request, monkeypatch):
    monkeypatch.setattr(F._device, "DEVICE_PATHS", request.param)
    return request.param


def _empty(*shape):
    return nnx.asarray(np.zeros(shape), dtype="float64")


CASES = [
    ("GroupNorm", dict(num_groups=2, num_channels=4), (0, 4, 3)),
    ("GroupNorm", dict(num_groups=1, num_channels=4, affine=False), (0, 4, 2, 2)),
    ("BatchNorm2d", dict(num_features=4), (0, 4, 3, 3)),
    ("BatchNorm2d", dict(num_features=4, momentum=None), (2, 4, 0, 3)),
    ("BatchNorm2d", dict(num_features=4, track_running_stats=False), (0, 4, 2, 2)),
    ("BatchNorm1d", dict(num_features=4), (0, 4)),
    ("BatchNorm1d", dict(num_features=4, affine=False), (0, 4, 5)),
    ("LayerNorm", dict(normalized_shape=3), (0, 3)),
    ("Softmax", dict(dim=1), (3, 0)),
    ("Softmax", dict(dim=0), (0, 3)),
    ("LogSoftmax", dict(dim=1), (3, 0)),
    ("LogSoftmax", dict(dim=-1), (2, 0, 4)),
    ("Linear", dict(in_features=3, out_features=2), (0, 3)),
    ("Conv2d", dict(in_channels=2, out_channels=3, kernel_size=3), (0, 2, 5, 5)),
    ("Conv2d", dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, dilation=2, groups=2), (0, 2, 7, 7)),
    ("Conv2d", dict(in_channels=2, out_channels=3, kernel_size=1, stride=2), (0, 2, 5, 5)),
    ("Conv1d", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2), (0, 2, 7)),
    ("ConvTranspose2d", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2), (0, 2, 4, 4)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1), (0, 2, 5, 5)),
    ("AvgPool2d", dict(kernel_size=2), (0, 2, 4, 4)),
    ("AdaptiveAvgPool2d", dict(output_size=(2, 3)), (0, 2, 5, 5)),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]
_PARAMETERISED = ("GroupNorm", "BatchNorm", "LayerNorm", "Linear", "Conv")


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=IDS)
def test_empty_input_parity_with_torch(backend, torch, formulation, name, kwargs, shape):
    extra = {"dtype": "float64"} if name.startswith(_PARAMETERISED) else {}
    layer = getattr(nnx, name)(**kwargs, **extra)
    tlayer = getattr(torch.nn, name)(**kwargs).double()
    y = parity(torch, layer, tlayer, _empty(*shape))
    assert 0 in tuple(y.shape)
    for p in layer.parameters():  # zero gradients (not None, not NaN), as PyTorch
        np.testing.assert_array_equal(host(p.grad), np.zeros(p.shape))
    for key, value in tlayer.state_dict().items():  # running statistics untouched, the batch counted
        assert_close(layer.state_dict()[key], value, what=key)


def test_empty_batch_then_real_batch_statistics(backend, torch):
    """An empty batch between two real ones changes nothing but the counter (as PyTorch)."""
    bn, tbn = nnx.BatchNorm2d(3, momentum=None, dtype="float64"), torch.nn.BatchNorm2d(3, momentum=None).double()
    for shape in [(2, 3, 2, 2), (0, 3, 2, 2), (4, 3, 1, 2)]:
        data = np.random.default_rng(sum(shape)).standard_normal(shape)
        bn(nnx.asarray(data, dtype="float64"))
        tbn(torch.from_numpy(data))
    for key, value in tbn.state_dict().items():
        assert_close(bn.state_dict()[key], value, rtol=1e-12, atol=1e-12, what=key)


def test_functional_batch_norm_empty_and_eval(backend, torch):
    rm, rv = nnx.asarray(np.zeros(4), dtype="float64"), nnx.asarray(np.ones(4), dtype="float64")
    y, back, new_mean, new_var = F.batch_norm_running_forward(_empty(0, 4, 2), rm, rv, training=True)
    assert tuple(y.shape) == (0, 4, 2)
    np.testing.assert_array_equal(host(new_mean), np.zeros(4))
    np.testing.assert_array_equal(host(new_var), np.ones(4))
    dx, (dw, db) = back(_empty(0, 4, 2))
    assert tuple(dx.shape) == (0, 4, 2) and dw is None and db is None


@pytest.mark.parametrize("shape", [(3,), ()])
def test_functional_batch_norm_refuses_1d_input(backend, shape):
    x = nnx.asarray(np.ones(shape), dtype="float64")
    with pytest.raises(ValueError, match=r"batch_norm: expected input of shape \(N, C\) or \(N, C, \*\) "
                                         r"\(at least 2-D\), got shape"):
        F.batch_norm(x, None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: expected input of shape \(N, C\)"):
        F.batch_norm(x, nnx.asarray(np.zeros(3)), nnx.asarray(np.ones(3)))


def test_functional_batch_norm_refuses_wrong_statistics_length(backend):
    x = nnx.asarray(np.ones((2, 3)), dtype="float64")
    with pytest.raises(ValueError, match=r"batch_norm: expected running_mean of shape \(3,\) for input of shape "
                                         r"\(2, 3\) \(C = dimension 1\), got shape \(4,\)"):
        F.batch_norm(x, nnx.asarray(np.zeros(4), dtype="float64"), nnx.asarray(np.ones(3), dtype="float64"))
    with pytest.raises(ValueError, match=r"batch_norm: expected weight of shape \(3,\).*got shape \(2,\)"):
        F.batch_norm(x, None, None, nnx.asarray(np.ones(2), dtype="float64"), training=True)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_functional_softmax_zero_size_dim(backend, torch, fn):
    y, back = getattr(F, f"{fn}_forward")(_empty(2, 0, 3), 1)
    ty = getattr(torch.nn.functional, fn)(torch.zeros(2, 0, 3, dtype=torch.float64), 1)
    assert_close(y, ty)
    assert tuple(back(_empty(2, 0, 3))[0].shape) == (2, 0, 3)
