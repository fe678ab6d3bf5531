"""PReLU, Unflatten, PixelShuffle/PixelUnshuffle, Upsample/interpolate and pad: outputs, input gradients and
parameter gradients against torch, numerical gradcheck (float64), on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, copy_params_to_torch, host, rand


def _parity_module(torch, module, tmodule, x, rtol=1e-12, atol=1e-12):
    y = module(x)
    tx = torch.tensor(host(x), requires_grad=True)
    ty = tmodule(tx)
    assert_close(y, ty, rtol=rtol, atol=atol, what="output")
    g = rand(*y.shape, seed=9)
    dx = module.backward(g)
    ty.backward(torch.tensor(host(g)))
    assert_close(dx, tx.grad, rtol=rtol, atol=atol, what="input gradient")
    for (name, p), tp in zip(module.named_parameters(), tmodule.parameters()):
        assert_close(p.grad, tp.grad, rtol=rtol, atol=atol, what=f"gradient of {name}")


@pytest.mark.parametrize("num_parameters,shape", [(1, (4, 3, 5)), (3, (4, 3, 5)), (3, (2, 3, 4, 4)), (1, (7,))])
def test_prelu(backend, torch, num_parameters, shape):
    m = nnx.PReLU(num_parameters, init=0.3, dtype="float64")
    m.weight.data = nnx.asarray(np.linspace(-0.5, 0.7, num_parameters), dtype="float64")
    tm = torch.nn.PReLU(num_parameters).double()
    copy_params_to_torch(m, tm)
    assert list(m.state_dict()) == list(tm.state_dict()) == ["weight"]
    x = rand(*shape, seed=1)
    _parity_module(torch, m, tm, x)
    assert nnx.gradcheck(m, x)
    assert host(nnx.PReLU(2).weight.data).tolist() == [0.25, 0.25]


def test_prelu_channel_mismatch(backend):
    with pytest.raises(ValueError, match="prelu: 3 slopes need an input with 3 channels"):
        nnx.PReLU(3)(rand(4, 5, dtype="float32"))


def test_relu_inplace_warns():
    with pytest.warns(UserWarning, match=r"ReLU\(inplace=True\).*ignored"):
        nnx.ReLU(inplace=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.ReLU()


@pytest.mark.parametrize("dim,sizes,shape", [(1, (2, 6), (3, 12)), (-1, (2, -1), (3, 2, 8)), (0, (2, 2), (4, 3))])
def test_unflatten(backend, torch, dim, sizes, shape):
    x = rand(*shape, seed=2)
    _parity_module(torch, nnx.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes), x)
    assert nnx.gradcheck(nnx.Unflatten(dim, sizes), x)
    with pytest.raises(ValueError, match="unflatten: sizes"):
        nnx.Unflatten(dim, (5, 7))(x)


@pytest.mark.parametrize("r,shape", [(2, (2, 8, 3, 4)), (3, (9, 2, 2)), (2, (2, 2, 4, 3, 5))])
def test_pixel_shuffle_and_unshuffle(backend, torch, r, shape):
    x = rand(*shape, seed=3)
    _parity_module(torch, nnx.PixelShuffle(r), torch.nn.PixelShuffle(r), x)
    assert nnx.gradcheck(nnx.PixelShuffle(r), x)
    y = nnx.PixelShuffle(r)(x)
    _parity_module(torch, nnx.PixelUnshuffle(r), torch.nn.PixelUnshuffle(r), y)
    assert nnx.gradcheck(nnx.PixelUnshuffle(r), y)
    with pytest.raises(ValueError, match="pixel_shuffle: expected"):
        nnx.PixelShuffle(5)(x)


UPSAMPLE = [
    (dict(scale_factor=2), (2, 3, 4, 5)),
    (dict(scale_factor=1.7), (1, 2, 5, 3)),
    (dict(size=(7, 3)), (1, 2, 4, 5)),
    (dict(scale_factor=3), (2, 2, 4)),
    (dict(scale_factor=2, mode="bilinear", align_corners=False), (2, 3, 4, 5)),
    (dict(scale_factor=2, mode="bilinear", align_corners=True), (2, 3, 4, 5)),
    (dict(size=(3, 8), mode="bilinear", align_corners=False), (1, 2, 5, 4)),
    (dict(size=(6, 2), mode="bilinear", align_corners=True), (1, 2, 3, 4)),
    (dict(scale_factor=0.6, mode="bilinear"), (1, 1, 6, 5)),
    (dict(scale_factor=2.5, mode="linear", align_corners=False), (2, 3, 4)),
    (dict(size=9, mode="linear", align_corners=True), (2, 3, 4)),
]


@pytest.mark.parametrize("kw,shape", UPSAMPLE, ids=[f"{k}-{s}" for k, s in UPSAMPLE])
def test_upsample(backend, torch, kw, shape):
    x = rand(*shape, seed=4)
    _parity_module(torch, nnx.Upsample(**kw), torch.nn.Upsample(**kw), x)
    assert nnx.gradcheck(nnx.Upsample(**kw), x)


def test_interpolate_errors(backend):
    x = rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="mode 'bilinear' takes inputs with"):
        F.interpolate(rand(1, 1, 4), scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match="align_corners only applies"):
        F.interpolate(x, scale_factor=2, align_corners=True)


PADS = [((1, 2), (2, 3, 5)), ((1, 2, 3, 1), (2, 3, 5, 4)), ((2, 0, 0, 1, 1, 1), (1, 2, 3, 4, 5)), ((0, 3), (3, 4))]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad,shape", PADS, ids=[str(p) for p, _ in PADS])
def test_pad(backend, torch, mode, pad, shape):
    x = rand(*shape, seed=5)
    kw = dict(value=0.75) if mode == "constant" else {}
    if mode != "constant" and len(pad) // 2 + 1 >= len(shape) + 1:
        pytest.skip("torch pads 1-3 trailing dims with a batch dimension in front")
    y, backward = F.pad_forward(x, pad, mode, **kw)
    tx = torch.tensor(host(x), requires_grad=True)
    ty = torch.nn.functional.pad(tx, pad, mode=mode, **kw)
    assert_close(y, ty, rtol=0, atol=0, what="output")
    g = rand(*y.shape, seed=6)
    dx, _ = backward(g)
    ty.backward(torch.tensor(host(g)))
    assert_close(dx, tx.grad, rtol=1e-12, atol=1e-12, what="input gradient")
    assert nnx.gradcheck(lambda a: F.pad_forward(a, pad, mode, **kw), x)


def test_pad_errors(backend):
    x = rand(2, 3)
    with pytest.raises(ValueError, match="reflect padding"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="pad must be an even-length"):
        F.pad(x, (1,))
    with pytest.raises(ValueError, match="mode must be one of"):
        F.pad(x, (1, 1), mode="wrap")
