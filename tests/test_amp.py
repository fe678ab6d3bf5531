"""nnx.amp.GradScaler against torch.amp.GradScaler: the same scales, skipped steps and parameters
on a scripted pattern of finite and Inf/NaN gradients, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

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
