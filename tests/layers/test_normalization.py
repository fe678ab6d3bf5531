"""nnx/layers/normalization.py: BatchNorm1d/2d, LayerNorm, GroupNorm, gradchecks and PyTorch parity
on every backend, running statistics and buffers."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand, step_parity

BN_GRID = [
    dict(),
    dict(momentum=None),
    dict(momentum=0.3, eps=1e-3),
    dict(affine=False),
    dict(track_running_stats=False),
    dict(affine=False, track_running_stats=False),
    dict(bias=False),
]


@pytest.mark.parametrize("cfg", BN_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("kind,shape", [("2d", (3, 4, 3, 2)), ("1d", (5, 4)), ("1d", (3, 4, 5)), ("2d", (1, 4, 3, 3))],
                         ids=["2d", "1d-NC", "1d-NCL", "2d-batch1"])
def test_batchnorm_parity_training_and_eval(backend, torch, cfg, kind, shape):
    cls, tcls = (nnx.BatchNorm2d, torch.nn.BatchNorm2d) if kind == "2d" else (nnx.BatchNorm1d, torch.nn.BatchNorm1d)
    layer = cls(4, dtype="float64", **cfg)
    tlayer = tcls(4, dtype=torch.float64, **cfg)
    if layer.weight is not None:  # non-trivial affine parameters
        layer.weight.data = rand(4, seed=7) * 0.5 + 1.0
    if layer.bias is not None:
        layer.bias.data = rand(4, seed=8)
    copy_params_to_torch(layer, tlayer)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    for step in range(3):  # several training steps: running statistics follow torch's
        step_parity(torch, layer, tlayer, rand(*shape, seed=10 + step, scale=2.0) + 0.5, seed=step)
    tsd = tlayer.state_dict()
    for key, value in layer.state_dict().items():
        assert_close(value, tsd[key], rtol=1e-12, atol=1e-12, what=key)
    layer.eval()
    tlayer.eval()
    step_parity(torch, layer, tlayer, rand(*shape, seed=99))
    assert layer._tape == []


def test_batchnorm_eval_backward_and_no_grad_updates(backend, torch):
    layer = nnx.BatchNorm2d(3, dtype="float64")
    layer.running_mean = rand(3, seed=1)
    layer.running_var = rand(3, seed=2) ** 2 + 0.5
    tlayer = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    copy_params_to_torch(layer, tlayer)
    # backward through eval-mode statistics (a frozen BatchNorm inside a trained model)
    x = rand(2, 3, 2, 2)
    y, back = nnx.functional.batch_norm_forward(x, layer.running_mean, layer.running_var, layer.weight.data,
                                                layer.bias.data, training=False)
    tlayer.eval()
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx)
    assert_close(y, ty, rtol=1e-12, atol=1e-12)
    ty.backward(torch.ones_like(ty))
    dx, (dw, db) = back(nnx.asarray(np.ones(tuple(ty.shape)), dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-12, atol=1e-12)
    assert_close(dw, tlayer.weight.grad, rtol=1e-12, atol=1e-12)
    # training mode under no_grad still updates the running statistics, as torch
    tlayer.train()
    with nnx.no_grad():
        layer(x)
    with torch.no_grad():
        tlayer(torch.from_numpy(host(x).copy()))
    assert_close(layer.running_mean, tlayer.running_mean, rtol=1e-12, atol=1e-12)
    assert int(host(layer.num_batches_tracked)) == 1
    assert layer._tape == []


@pytest.mark.parametrize("cfg", [dict(), dict(affine=False), dict(momentum=None)],
                         ids=["default", "no-affine", "cumulative"])
def test_batchnorm_gradcheck(backend, cfg):
    assert nnx.gradcheck(nnx.BatchNorm2d(3, dtype="float64", **cfg), rand(2, 3, 2, 3))
    assert nnx.gradcheck(nnx.BatchNorm1d(3, dtype="float64", **cfg), rand(4, 3))


def test_batchnorm_buffers_and_reset(backend, torch):
    layer = nnx.BatchNorm2d(3)
    t = torch.nn.BatchNorm2d(3)
    assert list(layer.state_dict()) == list(t.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert host(layer.num_batches_tracked).dtype == np.int64
    layer(rand(2, 3, 2, 2, dtype="float32"))
    layer.reset_parameters()
    assert float(host(layer.running_var).sum()) == 3.0 and int(host(layer.num_batches_tracked)) == 0
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    off = nnx.BatchNorm2d(3, track_running_stats=False, affine=False)
    assert list(off.state_dict()) == list(torch.nn.BatchNorm2d(3, track_running_stats=False,
                                                               affine=False).state_dict()) == []


@pytest.fixture(params=["never", "always"], ids=["cpu-path", "device-path"])
def kernel_path(request, monkeypatch):
    """Run the test once with the CPU-shaped kernels and once with the device-shaped ones (the
    adapter's fused BatchNorm kernels), whatever the backend."""
    monkeypatch.setattr(nnx.functional._device, "DEVICE_PATHS", request.param)
    return request.param


@pytest.mark.parametrize("cfg", [dict(), dict(momentum=None), dict(affine=False), dict(bias=False),
                                 dict(track_running_stats=False)],
                         ids=["default", "cumulative", "no-affine", "no-bias", "untracked"])
@pytest.mark.parametrize("kind,shape", [("2d", (3, 4, 3, 2)), ("1d", (5, 4)), ("1d", (3, 4, 5))],
                         ids=["2d", "1d-NC", "1d-NCL"])
def test_batchnorm_both_kernel_paths_match_torch(backend, torch, kernel_path, cfg, kind, shape):
    """The CPU formulation and the fused-kernel formulation give torch's outputs, gradients and
    running statistics over several steps."""
    cls, tcls = (nnx.BatchNorm2d, torch.nn.BatchNorm2d) if kind == "2d" else (nnx.BatchNorm1d, torch.nn.BatchNorm1d)
    layer = cls(4, dtype="float64", **cfg)
    tlayer = tcls(4, dtype=torch.float64, **cfg)
    if layer.weight is not None:
        layer.weight.data = rand(4, seed=7) * 0.5 + 1.0
    if layer.bias is not None:
        layer.bias.data = rand(4, seed=8)
    copy_params_to_torch(layer, tlayer)
    for step in range(3):
        step_parity(torch, layer, tlayer, rand(*shape, seed=20 + step, scale=2.0) - 0.3, seed=step)
    tsd = tlayer.state_dict()
    for key, value in layer.state_dict().items():
        assert_close(value, tsd[key], rtol=1e-12, atol=1e-12, what=key)


def test_batchnorm_gradcheck_both_kernel_paths(backend, kernel_path):
    assert nnx.gradcheck(nnx.BatchNorm2d(3, dtype="float64"), rand(2, 3, 2, 3))
    assert nnx.gradcheck(nnx.BatchNorm1d(3, dtype="float64", affine=False), rand(4, 3))


def test_functional_batch_norm_running_forward_returns_statistics_and_writes_nothing(backend, torch, kernel_path):
    x = rand(4, 3, 2, 2, seed=3) * 2.0 + 1.0
    rm, rv = rand(3, seed=4), rand(3, seed=5) ** 2 + 0.5
    rm0, rv0 = host(rm).copy(), host(rv).copy()
    y, _, new_mean, new_var = nnx.functional.batch_norm_running_forward(x, rm, rv, training=True, momentum=0.25)
    trm, trv = torch.from_numpy(rm0.copy()), torch.from_numpy(rv0.copy())
    ty = torch.nn.functional.batch_norm(torch.from_numpy(host(x).copy()), trm, trv, training=True, momentum=0.25)
    assert_close(y, ty, rtol=1e-12, atol=1e-12, what="output")
    assert_close(new_mean, trm, rtol=1e-12, atol=1e-12, what="new running_mean")
    assert_close(new_var, trv, rtol=1e-12, atol=1e-12, what="new running_var")
    np.testing.assert_array_equal(host(rm), rm0)  # the given statistics are untouched
    np.testing.assert_array_equal(host(rv), rv0)
    _, _, m_eval, v_eval = nnx.functional.batch_norm_running_forward(x, rm, rv, training=False)
    assert m_eval is None and v_eval is None


def test_functional_batch_norm_forward_updates_in_place_or_says_why_not(backend, torch):
    """torch.nn.functional.batch_norm's contract (running statistics updated in place) where the
    library can write in place; a clear error, before anything is computed, where it cannot."""
    x = rand(4, 3, seed=3)
    rm, rv = rand(3, seed=4), rand(3, seed=5) ** 2 + 0.5
    rm0 = host(rm).copy()
    if not backend.mutable:
        with pytest.raises(ValueError, match=r"batch_norm: cannot update running_mean/running_var in place "
                                             r"on backend .* batch_norm_running_forward"):
            nnx.functional.batch_norm_forward(x, rm, rv, training=True)
        np.testing.assert_array_equal(host(rm), rm0)
        y, _ = nnx.functional.batch_norm_forward(x, rm, rv, training=False)  # evaluation writes nothing
        assert tuple(y.shape) == (4, 3)
        return
    trm, trv = torch.from_numpy(rm0.copy()), torch.from_numpy(host(rv).copy())
    nnx.functional.batch_norm_forward(x, rm, rv, training=True)
    torch.nn.functional.batch_norm(torch.from_numpy(host(x).copy()), trm, trv, training=True)
    assert_close(rm, trm, rtol=1e-12, atol=1e-12, what="running_mean updated in place")
    assert_close(rv, trv, rtol=1e-12, atol=1e-12, what="running_var updated in place")


LN_GRID = [((5,), dict()), ((4, 5), dict()), ((5,), dict(elementwise_affine=False)), ((5,), dict(bias=False)),
           ((3, 4, 5), dict(eps=1e-3))]


@pytest.mark.parametrize("nshape,cfg", LN_GRID, ids=["last", "last2", "no-affine", "no-bias", "all"])
def test_layernorm_parity(backend, torch, nshape, cfg):
    layer = nnx.LayerNorm(nshape, dtype="float64", **cfg)
    if layer.weight is not None:
        layer.weight.data = rand(*nshape, seed=3) + 1.0
    if layer.bias is not None:
        layer.bias.data = rand(*nshape, seed=4)
    tlayer = torch.nn.LayerNorm(nshape, dtype=torch.float64, **cfg)
    copy_params_to_torch(layer, tlayer)
    step_parity(torch, layer, tlayer, rand(2, 3, 4, 5, scale=3.0))


def test_layernorm_gradcheck(backend):
    layer = nnx.LayerNorm((2, 3), dtype="float64")
    layer.weight.data = rand(2, 3, seed=5)
    assert nnx.gradcheck(layer, rand(2, 2, 3))


@pytest.mark.parametrize("groups,channels,cfg,shape",
                         [(2, 4, dict(), (2, 4, 3, 2)), (1, 4, dict(), (2, 4, 3)),
                          (4, 4, dict(affine=False), (1, 4, 2, 2)), (2, 6, dict(eps=1e-3), (3, 6)),
                          (2, 4, dict(bias=False), (2, 4, 3))],
                         ids=["g2", "layer-like", "instance-like", "2d-input", "no-bias"])
def test_groupnorm_parity(backend, torch, groups, channels, cfg, shape):
    layer = nnx.GroupNorm(groups, channels, dtype="float64", **cfg)
    if layer.weight is not None:
        layer.weight.data = rand(channels, seed=3) + 1.0
    if layer.bias is not None:
        layer.bias.data = rand(channels, seed=4)
    tlayer = torch.nn.GroupNorm(groups, channels, dtype=torch.float64, **cfg)
    copy_params_to_torch(layer, tlayer)
    step_parity(torch, layer, tlayer, rand(*shape, scale=2.0))


def test_groupnorm_gradcheck(backend):
    layer = nnx.GroupNorm(2, 4, dtype="float64")
    layer.weight.data = rand(4, seed=5)
    assert nnx.gradcheck(layer, rand(2, 4, 2, 2))
