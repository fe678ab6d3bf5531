"""Convolution and pooling layers: gradchecks (float64) and PyTorch parity on every backend.

Shapes are tiny on purpose: the grid of configurations (stride, padding, dilation, groups,
odd sizes, batch of 1) is what matters, not the size.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, copy_params_to_torch, host, rand


def parity(torch, layer: nnx.Module, tlayer, x, *, forward_kwargs=None, tol=1e-10):
    """Compare output, input gradient and parameter gradients of ``layer`` with torch's."""
    forward_kwargs = forward_kwargs or {}
    copy_params_to_torch(layer, tlayer)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx, **forward_kwargs)
    y = layer(x, **forward_kwargs)
    assert_close(y, ty, rtol=tol, atol=tol, what="output")
    dy_host = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy_host))
    dx = layer.backward(nnx.asarray(dy_host, dtype="float64"))
    assert_close(dx, tx.grad, rtol=tol, atol=tol, what="input gradient")
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=tol, atol=tol, what=f"gradient of {name}")
    assert host(y).dtype == np.float64
    return y


CONV2D_GRID = [
    dict(),
    dict(stride=2),
    dict(stride=(2, 1), padding=(1, 2)),
    dict(padding=1, dilation=2),
    dict(padding="same"),
    dict(padding="same", dilation=(1, 2)),
    dict(padding="valid", bias=False),
    dict(groups=2, padding=1),
    dict(groups=4, stride=2, padding=1),          # depthwise
    dict(kernel_size=(2, 3), stride=3, padding=1),
    dict(kernel_size=1, stride=2),
]


def _conv_args(cfg, out=6):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    out = 8 if cfg.get("groups") == 4 else out
    return (4, out, k), cfg


@pytest.mark.parametrize("cfg", CONV2D_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("batch", [1, 2])
def test_conv2d_parity(backend, torch, cfg, batch):
    args, kw = _conv_args(cfg)
    layer = nnx.Conv2d(*args, dtype="float64", **kw)
    tlayer = torch.nn.Conv2d(*args, dtype=torch.float64, **kw)
    parity(torch, layer, tlayer, rand(batch, 4, 7, 6, seed=batch))


@pytest.mark.parametrize("cfg", [dict(), dict(stride=2, padding=1), dict(groups=2, dilation=2, padding=2),
                                 dict(padding="same", kernel_size=(2, 2))],
                         ids=["default", "s2p1", "g2d2", "same-even"])
def test_conv2d_gradcheck(backend, cfg):
    args, kw = _conv_args(cfg, out=4)
    layer = nnx.Conv2d(*args, dtype="float64", **kw)
    assert nnx.gradcheck(layer, rand(1, 4, 5, 4))


CONV1D_GRID = [dict(), dict(stride=2, padding=2), dict(dilation=2, padding="same"), dict(groups=2, bias=False),
               dict(kernel_size=4, padding="same")]


@pytest.mark.parametrize("cfg", CONV1D_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_conv1d_parity(backend, torch, cfg):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    layer = nnx.Conv1d(4, 6, k, dtype="float64", **cfg)
    tlayer = torch.nn.Conv1d(4, 6, k, dtype=torch.float64, **cfg)
    parity(torch, layer, tlayer, rand(2, 4, 9))


def test_conv1d_gradcheck(backend):
    assert nnx.gradcheck(nnx.Conv1d(2, 3, 3, stride=2, padding=1, dtype="float64"), rand(2, 2, 7))


CONVT_GRID = [
    dict(),
    dict(stride=2),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    dict(groups=2, stride=2, bias=False),
    dict(dilation=2, padding=1),
    dict(dilation=2, stride=1, output_padding=1),  # output_padding < dilation
    dict(kernel_size=(4, 2), stride=2, padding=1),
]


@pytest.mark.parametrize("cfg", CONVT_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("batch", [1, 2])
def test_conv_transpose2d_parity(backend, torch, cfg, batch):
    cfg = dict(cfg)
    k = cfg.pop("kernel_size", 3)
    layer = nnx.ConvTranspose2d(4, 6, k, dtype="float64", **cfg)
    tlayer = torch.nn.ConvTranspose2d(4, 6, k, dtype=torch.float64, **cfg)
    parity(torch, layer, tlayer, rand(batch, 4, 4, 5, seed=batch))


def test_conv_transpose2d_gradcheck(backend):
    layer = nnx.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dtype="float64")
    assert nnx.gradcheck(layer, rand(1, 2, 3, 2))


def test_conv_transpose2d_output_size(backend, torch):
    layer = nnx.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype="float64")
    tlayer = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dtype=torch.float64)
    y = parity(torch, layer, tlayer, rand(1, 2, 4, 4), forward_kwargs=dict(output_size=(8, 7)))
    assert tuple(y.shape) == (1, 3, 8, 7)
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(.*requested output size \(9, 7\)"):
        layer(rand(1, 2, 4, 4), output_size=(9, 7))


# ------------------------------------------------------------------------------ pooling
MAXPOOL_GRID = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=2, dilation=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
]


@pytest.mark.parametrize("cfg", MAXPOOL_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("batch", [1, 2])
def test_maxpool2d_parity(backend, torch, cfg, batch):
    parity(torch, nnx.MaxPool2d(**cfg), torch.nn.MaxPool2d(**cfg), rand(batch, 3, 7, 6, seed=batch))


def test_maxpool2d_ties_go_to_first_max(backend, torch):
    x = nnx.asarray(np.ones((1, 1, 4, 4)), dtype="float64")
    parity(torch, nnx.MaxPool2d(2), torch.nn.MaxPool2d(2), x)
    parity(torch, nnx.MaxPool2d(3, stride=1, padding=1), torch.nn.MaxPool2d(3, stride=1, padding=1), x)


def test_maxpool2d_gradcheck(backend):
    # distinct values so the max is unique and the function is differentiable at the probe point
    x = nnx.asarray(np.random.default_rng(0).permutation(60).reshape(1, 3, 5, 4) / 7.0, dtype="float64")
    assert nnx.gradcheck(nnx.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), x)
    assert nnx.gradcheck(nnx.MaxPool2d(2), x)


AVGPOOL_GRID = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, divisor_override=3),
]


@pytest.mark.parametrize("cfg", AVGPOOL_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_avgpool2d_parity(backend, torch, cfg):
    parity(torch, nnx.AvgPool2d(**cfg), torch.nn.AvgPool2d(**cfg), rand(2, 3, 7, 6))


def test_avgpool2d_gradcheck(backend):
    assert nnx.gradcheck(nnx.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                         rand(1, 2, 5, 4))


@pytest.mark.parametrize("size", [1, (2, 3), 3, (None, 2), (4, 1)])
def test_adaptive_avgpool2d_parity(backend, torch, size):
    parity(torch, nnx.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), rand(2, 3, 7, 6))


def test_adaptive_avgpool2d_gradcheck(backend):
    assert nnx.gradcheck(nnx.AdaptiveAvgPool2d((2, 3)), rand(1, 2, 5, 4))
    assert nnx.gradcheck(nnx.AdaptiveAvgPool2d(1), rand(2, 2, 3, 3))


# ------------------------------------------------------------------------------ float32, init, state
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
