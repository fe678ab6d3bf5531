"""What every convolutional-network layer shares: float32 stays float32, PyTorch init and state_dict,
functional forms equal the layers, eval mode records nothing, signatures match torch."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, rand


def test_float32_stays_float32(backend):
    x = rand(2, 3, 8, 8, dtype="float32")
    model = nnx.Sequential(nnx.Conv2d(3, 4, 3, padding=1), nnx.BatchNorm2d(4), nnx.ReLU(), nnx.MaxPool2d(2),
                           nnx.Dropout2d(0.2), nnx.AvgPool2d(2), nnx.ConvTranspose2d(4, 2, 2, stride=2),
                           nnx.GroupNorm(2, 2), nnx.AdaptiveAvgPool2d(1), nnx.Flatten(), nnx.LayerNorm(2))
    y = model(x)
    assert host(y).dtype == np.float32
    dx = model.backward(nnx.asarray(np.ones(tuple(y.shape)), dtype="float32"))
    assert host(dx).dtype == np.float32 and tuple(dx.shape) == (2, 3, 8, 8)
    for name, p in model.named_parameters():
        assert host(p.grad).dtype == np.float32, name


def test_conv_init_and_state_dict_match_torch(backend, torch):
    nnx.manual_seed(0)
    layer = nnx.Conv2d(6, 12, (3, 5), groups=3)
    tlayer = torch.nn.Conv2d(6, 12, (3, 5), groups=3)
    assert list(layer.state_dict()) == list(tlayer.state_dict()) == ["weight", "bias"]
    assert layer.weight.shape == tuple(tlayer.weight.shape) == (12, 2, 3, 5)
    bound = 1.0 / np.sqrt(2 * 3 * 5)  # kaiming_uniform(a=sqrt(5)) gives 1/sqrt(fan_in)
    w, b = host(layer.weight.data), host(layer.bias.data)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert np.abs(b).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.2 * bound
    # a torch state_dict loads directly
    layer.load_state_dict({k: v.numpy() for k, v in tlayer.state_dict().items()})
    assert_close(layer.weight.data, tlayer.weight)
    tl = torch.nn.ConvTranspose2d(4, 6, 3, groups=2)
    lt = nnx.ConvTranspose2d(4, 6, 3, groups=2)
    assert lt.weight.shape == tuple(tl.weight.shape) == (4, 3, 3, 3)
    bound_t = 1.0 / np.sqrt(3 * 9)
    assert np.abs(host(lt.weight.data)).max() <= bound_t and np.abs(host(lt.bias.data)).max() <= bound_t
    assert nnx.Conv1d(2, 3, 4).weight.shape == (3, 2, 4)


def test_functional_forms_match_layers(backend):
    x = rand(2, 4, 6, 6)
    conv = nnx.Conv2d(4, 2, 3, stride=2, padding=1, dtype="float64")
    np.testing.assert_allclose(host(F.conv2d(x, conv.weight.data, conv.bias.data, stride=2, padding=1)),
                               host(conv(x)))
    np.testing.assert_allclose(host(F.max_pool2d(x, 2)), host(nnx.MaxPool2d(2)(x)))
    np.testing.assert_allclose(host(F.avg_pool2d(x, 3, 1, 1)), host(nnx.AvgPool2d(3, 1, 1)(x)))
    np.testing.assert_allclose(host(F.adaptive_avg_pool2d(x, 2)), host(nnx.AdaptiveAvgPool2d(2)(x)))
    ct = nnx.ConvTranspose2d(4, 2, 3, stride=2, dtype="float64")
    np.testing.assert_allclose(host(F.conv_transpose2d(x, ct.weight.data, ct.bias.data, stride=2)), host(ct(x)))
    # conv_transpose2d is the adjoint of conv2d: <conv(x), y> == <x, conv_T(y)>
    w = rand(3, 4, 3, 3, seed=3)
    y = rand(2, 3, 3, 3, seed=4)
    lhs = float(np.sum(host(F.conv2d(x, w, stride=2, padding=1)) * host(y)))
    rhs = float(np.sum(host(x) * host(F.conv_transpose2d(y, w, stride=2, padding=1, output_padding=1))))
    assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


def test_eval_mode_records_nothing(backend):
    conv = nnx.Conv2d(2, 2, 3)
    conv.eval()
    conv(rand(1, 2, 5, 5, dtype="float32"))
    assert conv._tape == []
    conv.train()
    with nnx.no_grad():
        conv(rand(1, 2, 5, 5, dtype="float32"))
    assert conv._tape == []


CNN_LAYERS = ["Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d",
              "BatchNorm2d", "LayerNorm", "GroupNorm", "Dropout2d"]


@pytest.mark.parametrize("name", CNN_LAYERS)
def test_signature_matches_torch(torch, name):
    """Argument names, order of the positional ones, and defaults as torch.nn (plus nnx's ``backend``)."""
    ours = inspect.signature(getattr(nnx, name)).parameters
    theirs = inspect.signature(getattr(torch.nn, name)).parameters
    assert {k: p.default for k, p in ours.items() if k != "backend"} == {k: p.default for k, p in theirs.items()}
    positional = [k for k, p in ours.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [k for k in theirs if k in positional][:len(positional)]
    assert inspect.getdoc(getattr(nnx, name)) and len(inspect.getdoc(getattr(nnx, name))) > 100
