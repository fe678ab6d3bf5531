"""Issue 11 (PyTorch's op catalogue): ``MaxPool2d(return_indices=True)``, ``F.max_pool2d(...,
return_indices=True)`` (int64, flat in each H*W plane, as PyTorch), ``MaxUnpool2d`` /
``F.max_unpool2d`` (forward, backward, gradcheck), ``F.softmax``/``F.log_softmax`` ``dtype=``, and
one-element tuples for the window arguments of the functional pooling ops. PyTorch parity on every
backend, in both kernel formulations."""

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


def _distinct(shape, seed=0):
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(n).reshape(shape) / 7.0


POOLS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=2, dilation=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
]
POOL_IDS = [",".join(f"{k}={v}" for k, v in c.items()) for c in POOLS]


@pytest.mark.parametrize("cfg", POOLS, ids=POOL_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (3, 5, 5)], ids=["batched", "unbatched"])
def test_max_pool_indices_match_torch(backend, torch, formulation, cfg, shape):
    data = _distinct(shape)
    y, idx = F.max_pool2d(nnx.asarray(data, dtype="float64"), **cfg, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(data), **cfg, return_indices=True)
    assert_close(y, ty, what="output")
    assert host(idx).dtype == np.int64
    np.testing.assert_array_equal(host(idx), tidx.numpy())


def test_max_pool_indices_ties_and_plateaus(backend, torch, formulation):
    data = np.ones((1, 2, 4, 4))
    data[0, 1, 1:3, 1:3] = 5.0  # a plateau shared by overlapping windows
    for cfg in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
        y, idx = F.max_pool2d(nnx.asarray(data, dtype="float64"), **cfg, return_indices=True)
        ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(data), **cfg, return_indices=True)
        np.testing.assert_array_equal(host(idx), tidx.numpy())


@pytest.mark.parametrize("cfg", POOLS[:4], ids=POOL_IDS[:4])
def test_max_pool_layer_return_indices_backward(backend, torch, formulation, cfg):
    layer = nnx.MaxPool2d(**cfg, return_indices=True)
    tlayer = torch.nn.MaxPool2d(**cfg, return_indices=True)
    data = _distinct((2, 3, 7, 6))
    y, idx = layer(nnx.asarray(data, dtype="float64"))
    tx = torch.from_numpy(data).requires_grad_(True)
    ty, tidx = tlayer(tx)
    np.testing.assert_array_equal(host(idx), tidx.numpy())
    dy = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    assert_close(layer.backward(nnx.asarray(dy, dtype="float64")), tx.grad, what="input gradient")


UNPOOLS = [  # (pool kwargs, unpool kwargs, input shape, output_size)
    (dict(kernel_size=2), dict(kernel_size=2), (2, 3, 6, 4), None),
    (dict(kernel_size=2), dict(kernel_size=2), (2, 3, 7, 5), (7, 5)),  # pooling dropped a row/column
    (dict(kernel_size=(2, 3), stride=(2, 3)), dict(kernel_size=(2, 3)), (1, 2, 4, 6), None),
    (dict(kernel_size=2, padding=1), dict(kernel_size=2, padding=1), (2, 2, 4, 4), None),
    (dict(kernel_size=2), dict(kernel_size=2), (3, 6, 4), (6, 4)),  # unbatched
    (dict(kernel_size=2), dict(kernel_size=2), (2, 3, 6, 4), (2, 3, 6, 4)),  # full output shape
]
UNPOOL_IDS = ["k2", "k2-output_size", "k23", "k2-p1", "unbatched", "full-shape"]


@pytest.mark.parametrize("pool,unpool,shape,size", UNPOOLS, ids=UNPOOL_IDS)
def test_max_unpool_layer_matches_torch(backend, torch, formulation, pool, unpool, shape, size):
    data = _distinct(shape)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(data), **pool, return_indices=True)
    y, idx = F.max_pool2d(nnx.asarray(data, dtype="float64"), **pool, return_indices=True)
    layer = nnx.MaxUnpool2d(**unpool)
    tlayer = torch.nn.MaxUnpool2d(**unpool)
    kwargs = {} if size is None else {"output_size": size}
    tin = ty.detach().clone().requires_grad_(True)
    tout = tlayer(tin, tidx, **kwargs)
    out = layer(y, idx, **kwargs)
    assert_close(out, tout, what="output")
    dy = np.random.default_rng(2).standard_normal(tuple(tout.shape))
    tout.backward(torch.from_numpy(dy))
    assert_close(layer.backward(nnx.asarray(dy, dtype="float64")), tin.grad, what="input gradient")
    assert_close(F.max_unpool2d(y, idx, **unpool, **kwargs), tout.detach(), what="functional")


def test_max_unpool_gradcheck(backend):
    data = _distinct((1, 2, 4, 6))
    y, idx = F.max_pool2d(nnx.asarray(data, dtype="float64"), 2, return_indices=True)
    assert nnx.gradcheck(nnx.MaxUnpool2d(2), y, idx)
    # overlapping windows: indices repeat; the gradient is the derivative of nnx's forward
    y, idx = F.max_pool2d(nnx.asarray(data, dtype="float64"), 3, stride=1, padding=1, return_indices=True)
    assert len(np.unique(host(idx))) < host(idx).size
    assert nnx.gradcheck(nnx.MaxUnpool2d(3, stride=1, padding=1), y, idx)


def test_max_unpool_repeated_indices_forward_matches_torch(backend, torch):
    data = _distinct((2, 2, 5, 5))
    y, idx = F.max_pool2d(nnx.asarray(data, dtype="float64"), 3, stride=1, padding=1, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(data), 3, stride=1, padding=1, return_indices=True)
    want = torch.nn.functional.max_unpool2d(ty, tidx, 3, stride=1, padding=1)
    assert_close(F.max_unpool2d(y, idx, 3, stride=1, padding=1), want, rtol=1e-12, atol=1e-12)


def test_max_pool_then_unpool_in_a_model(backend, torch):
    """An encoder/decoder that routes the indices (SegNet's pattern), trained one step: gradients as torch."""
    pool, unpool = nnx.MaxPool2d(2, return_indices=True), nnx.MaxUnpool2d(2)
    conv = nnx.Conv2d(2, 2, 3, padding=1, dtype="float64")
    tconv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    tconv.load_state_dict({k: torch.from_numpy(host(v).copy()) for k, v in conv.state_dict().items()})
    data = _distinct((2, 2, 4, 4))
    y, idx = pool(nnx.asarray(data, dtype="float64"))
    out = unpool(conv(y), idx)
    tx = torch.from_numpy(data).requires_grad_(True)
    ty, tidx = torch.nn.functional.max_pool2d(tx, 2, return_indices=True)
    tout = torch.nn.functional.max_unpool2d(tconv(ty), tidx, 2)
    assert_close(out, tout.detach(), rtol=1e-10, atol=1e-12)
    tout.sum().backward()
    dx = pool.backward(conv.backward(unpool.backward(nnx.asarray(np.ones(tuple(out.shape)), dtype="float64"))))
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-12, what="input gradient")
    assert_close(conv.weight.grad, tconv.weight.grad, rtol=1e-10, atol=1e-12, what="weight gradient")


def test_max_unpool_errors(backend):
    y, idx = F.max_pool2d(nnx.asarray(_distinct((1, 1, 4, 4)), dtype="float64"), 2, return_indices=True)
    unpool = nnx.MaxUnpool2d(2)
    with pytest.raises(TypeError, match=r"MaxUnpool2d\(kernel_size=\(2, 2\).*indices must be an integer array"):
        unpool(y, y)
    with pytest.raises(ValueError, match=r"MaxUnpool2d\(.*expected indices of the input's shape \(1, 1, 2, 2\), "
                                         r"got shape \(1, 1, 2, 1\)"):
        unpool(y, idx[..., :1])
    with pytest.raises(IndexError, match=r"MaxUnpool2d\(.*invalid max index 11\d .*16 elements"):
        unpool(y, idx + 100)
    with pytest.raises(ValueError, match=r"MaxUnpool2d\(.*invalid output_size \(9, 4\): along spatial axis 0 it must "
                                         r"be between 2 and 6"):
        unpool(y, idx, output_size=(9, 4))
    with pytest.raises(ValueError, match=r"max_unpool2d: expected 3-D \(unbatched\) or 4-D \(batched\) input"):
        F.max_unpool2d(y[0, 0, ...], idx[0, 0, ...], 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: kernel_size must be a positive integer"):
        F.max_unpool2d(y, idx, 0)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_dtype_argument(backend, torch, fn):
    data = np.random.default_rng(0).standard_normal((3, 5)) * 10
    x = nnx.asarray(data, dtype="float32")
    y, back = getattr(F, f"{fn}_forward")(x, 1, dtype="float64")
    want = getattr(torch.nn.functional, fn)(torch.from_numpy(data).float(), dim=1, dtype=torch.float64)
    assert host(y).dtype == np.float64
    assert_close(y, want, rtol=1e-12, atol=1e-12)
    tx = torch.from_numpy(data).float().requires_grad_(True)
    dy = np.random.default_rng(1).standard_normal((3, 5))
    getattr(torch.nn.functional, fn)(tx, dim=1, dtype=torch.float64).backward(torch.from_numpy(dy))
    dx, _ = back(nnx.asarray(dy, dtype="float64"))
    assert host(dx).dtype == np.float32  # the gradient of the input comes back in its own dtype
    assert_close(dx, tx.grad, rtol=1e-5, atol=1e-6)
    # a dtype object of the backend works like its name; the functional form takes dtype= too
    assert host(getattr(F, fn)(x, dim=1, dtype=backend.dtype("float64"))).dtype == np.float64
    assert host(getattr(F, fn)(x, dim=1, dtype=torch.float64)).dtype == np.float64  # PyTorch's dtype objects too
    with pytest.raises(TypeError, match=rf"{fn}: dtype must be a real floating dtype.*got 'int64'"):
        getattr(F, fn)(x, dim=1, dtype="int64")


def test_softmax_dtype_gradcheck(backend):
    x = nnx.asarray(np.random.default_rng(0).standard_normal((2, 4)), dtype="float64")
    assert nnx.gradcheck(lambda t: F.softmax_forward(t, 1, dtype="float64"), x)
    assert nnx.gradcheck(lambda t: F.log_softmax_forward(t, 0, dtype="float64"), x)


@pytest.mark.parametrize("fn,kwargs", [
    ("avg_pool2d", dict(kernel_size=3, padding=(1,))),
    ("avg_pool2d", dict(kernel_size=(3,), stride=(2,), padding=[1])),
    ("max_pool2d", dict(kernel_size=(3,), stride=(1,), padding=(1,), dilation=(1,))),
])
def test_one_element_tuples_as_torch(backend, torch, fn, kwargs):
    data = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    assert_close(getattr(F, fn)(nnx.asarray(data, dtype="float64"), **kwargs),
                 getattr(torch.nn.functional, fn)(torch.from_numpy(data), **kwargs), rtol=1e-12, atol=1e-12)


def test_max_pool_layer_one_element_kernel(backend, torch):
    parity(torch, nnx.MaxPool2d((2,)), torch.nn.MaxPool2d((2,)),
           nnx.asarray(_distinct((1, 2, 4, 4)), dtype="float64"))


def test_one_element_tuples_in_convolutions(backend, torch):
    data, w = (np.random.default_rng(0).standard_normal((1, 2, 5, 6)),
                           np.random.default_rng(1).standard_normal((2, 1, 3, 3)))
    x, tx = nnx.asarray(data, dtype="float64"), torch.from_numpy(data)
    kw = dict(padding=(1,), stride=(2,), dilation=(1,))
    assert_close(F.conv2d(x, nnx.asarray(w, dtype="float64"), None, **kw, groups=2),
                 torch.nn.functional.conv2d(tx, torch.from_numpy(w), None, **kw, groups=2), rtol=1e-12, atol=1e-12)
    assert_close(F.conv_transpose2d(x, nnx.asarray(w, dtype="float64"), padding=(1,), stride=(2,)),
                 torch.nn.functional.conv_transpose2d(tx, torch.from_numpy(w), padding=(1,), stride=(2,)),
                 rtol=1e-12, atol=1e-12)
    parity(torch, nnx.Conv2d(2, 1, 3, padding=(1,), dtype="float64"), torch.nn.Conv2d(2, 1, 3, padding=(1,)).double(),
           x)
