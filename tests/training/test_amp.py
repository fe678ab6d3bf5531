"""nnx.amp.GradScaler against torch.amp.GradScaler: the same scales, skipped steps and parameters
on a scripted pattern of finite and Inf/NaN gradients, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import host

PATTERN = ["ok", "ok", "inf", "ok", "ok", "ok", "nan", "ok", "ok", "ok", "ok", "-inf", "ok"]


def _grad(kind, base):
    g = base.copy()
    if kind != "ok":
        g[1] = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind]
    return g


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_scale_sequence_matches_torch(backend, torch, dt):
    kw = dict(init_scale=2.0 ** 4, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    tscaler = torch.amp.GradScaler("cpu", **kw)
    scaler = nnx.amp.GradScaler(**kw)
    r = np.random.default_rng(0)
    p0 = r.standard_normal(5)
    tp = torch.nn.Parameter(torch.tensor(p0, dtype=getattr(torch, dt)))
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    p = nnx.Parameter(nnx.asarray(p0, dt))
    opt = nnx.optim.SGD([p], lr=0.1, momentum=0.9)
    scales, tscales = [], []
    for kind in PATTERN:
        base = r.standard_normal(5)
        # the "loss" is sum(base * p): its gradient is base; the scaled backward feeds S * dloss
        tloss = (torch.tensor(base, dtype=tp.dtype) * tp).sum()
        topt.zero_grad()
        tscaler.scale(tloss).backward()
        if kind != "ok":
            tp.grad[1] = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}[kind]
        tscaler.step(topt)
        tscaler.update()
        tscales.append(tscaler.get_scale())
        opt.zero_grad()
        p.grad = scaler.scale(nnx.asarray(_grad(kind, base), dt))
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        np.testing.assert_allclose(nnx.to_numpy(p.data), tp.detach().numpy(), rtol=1e-5 if dt == "float32" else 1e-12)
    assert scales == tscales
    assert scales[2] == 8.0 and scales[-1] != 16.0  # the pattern exercised backoff and growth
    assert scaler.state_dict() == {k: (v if not hasattr(v, "item") else v) for k, v in tscaler.state_dict().items()}


def test_unscale_then_clip_and_errors(backend):
    p = nnx.Parameter(nnx.asarray(np.ones(3), "float32"))
    opt = nnx.optim.SGD([p], lr=1.0)
    scaler = nnx.amp.GradScaler(init_scale=8.0)
    p.grad = scaler.scale(nnx.asarray(np.full(3, 2.0), "float32"))
    scaler.unscale_(opt)
    np.testing.assert_allclose(nnx.to_numpy(p.grad), 2.0)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(opt)
    scaler.step(opt)  # does not unscale twice
    np.testing.assert_allclose(nnx.to_numpy(p.data), -1.0)
    with pytest.raises(RuntimeError, match="step: already called"):
        scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 8.0


def test_state_dict_round_trip_and_disabled():
    a = nnx.amp.GradScaler(init_scale=4.0, growth_interval=7)
    a._growth_tracker = 3
    b = nnx.amp.GradScaler()
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() == {"scale": 4.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                                "growth_interval": 7, "_growth_tracker": 3}
    off = nnx.amp.GradScaler(enabled=False)
    assert off.scale(3.0) == 3.0 and off.get_scale() == 1.0 and off.state_dict() == {}
    with pytest.raises(ValueError, match="backoff_factor"):
        nnx.amp.GradScaler(backoff_factor=1.5)
    with pytest.raises(KeyError, match="missing keys"):
        b.load_state_dict({"scale": 2.0})


# ------------------------------------------------------------------ MasterWeights (float16 compute, float32 masters)
def _mlp():
    if not hasattr(nnx.get_backend().xp, "float16"):
        pytest.skip(f"{nnx.get_backend().name} has no float16")
    nnx.manual_seed(0)
    return nnx.Sequential(nnx.Linear(6, 8), nnx.Tanh(), nnx.Linear(8, 3))


def test_master_weights_take_updates_that_float16_parameters_cannot(backend):
    """An update below float16's spacing vanishes on a float16 parameter but accumulates on the
    float32 master, and reaches the model once it is large enough."""
    model = _mlp()
    mw = nnx.amp.MasterWeights(model)
    xp = backend.xp
    assert model[0].weight.data.dtype == xp.float16 and mw.parameters()[0].data.dtype == xp.float32
    start = np.asarray(host(mw.parameters()[0].data), dtype=np.float64)
    opt = nnx.optim.SGD(mw.parameters(), lr=1e-5)
    for _ in range(50):
        for p in model.parameters():
            p.grad = xp.astype(nnx.asarray(np.ones(tuple(p.shape))), xp.float16)
        assert mw.step(opt)
    moved = start - host(mw.parameters()[0].data)
    np.testing.assert_allclose(moved, 50 * 1e-5, atol=2e-6)   # every small step counted on the master
    # plain float16 SGD would not have moved most weights at all with steps of 1e-5
    w16 = xp.astype(nnx.asarray(start), xp.float16)
    assert np.mean(host(w16 - 1e-5 * xp.ones_like(w16)) == host(w16)) > 0.5
    np.testing.assert_allclose(host(model[0].weight.data), host(mw.parameters()[0].data), atol=1e-3)
    assert all(p.grad is None for p in model.parameters()) and all(p.grad is None for p in mw.parameters())


def test_master_weights_training_matches_float32(backend):
    """Ten AdamW steps with float16 compute track float32 training to float16 precision."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 6)), rng.integers(0, 3, 32)
    ref, half = _mlp(), _mlp()
    ref_opt = nnx.optim.AdamW(ref.parameters(), lr=1e-2)
    mw = nnx.amp.MasterWeights(half)
    opt = nnx.optim.AdamW(mw.parameters(), lr=1e-2)
    scaler = nnx.amp.GradScaler(init_scale=1024.0)
    loss_fn = nnx.CrossEntropyLoss()
    xb, yb = nnx.asarray(x, dtype="float32"), nnx.asarray(y)
    for _ in range(10):
        loss_fn(ref(xb), yb)
        ref.backward(loss_fn.backward(), input_grad=False)
        ref_opt.step()
        ref_opt.zero_grad()
        loss = loss_fn(mw.to_master(half(mw.cast(xb))), yb)
        assert host(loss).dtype == np.float32
        half.backward(mw.cast(scaler.scale(loss_fn.backward())), input_grad=False)
        assert mw.step(opt, scaler)
    for a, b in zip(ref.parameters(), mw.parameters()):
        np.testing.assert_allclose(host(b.data), host(a.data), atol=2e-2)
    state = mw.master_state_dict()
    assert all(host(v).dtype == np.float32 for v in state.values())


def test_master_weights_skip_an_overflowed_step(backend):
    model = _mlp()
    mw = nnx.amp.MasterWeights(model)
    opt = nnx.optim.SGD(mw.parameters(), lr=0.1)
    before = [host(p.data).copy() for p in mw.parameters()]
    scaler = nnx.amp.GradScaler(init_scale=8.0)
    xp = backend.xp
    for p in model.parameters():
        p.grad = xp.astype(nnx.asarray(np.full(tuple(p.shape), np.inf)), xp.float16)
    assert not mw.step(opt, scaler)
    assert scaler.get_scale() == 4.0
    for a, p in zip(before, mw.parameters()):
        np.testing.assert_array_equal(host(p.data), a)


def test_master_weights_refuse_a_model_without_parameters():
    with pytest.raises(ValueError, match="MasterWeights: the model has no parameters"):
        nnx.amp.MasterWeights(nnx.ReLU())
