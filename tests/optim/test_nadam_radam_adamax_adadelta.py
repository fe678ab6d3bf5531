"""NAdam, RAdam, Adamax, Adadelta: 20-step trajectories against torch.optim in float64 (1e-12
relative), the exact first-step update written out by hand, state_dict round trips, argument errors
(LBFGS's too; its steps are in test_lbfgs.py), on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnx

from helpers import host, optim_config_id, optim_grads, optim_model, optim_model_pair

CONFIGS = [
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), momentum_decay=0.01, eps=1e-6)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.6))),  # rho_t > 5 from step 4 on: both branches run
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.6), weight_decay=0.1)),
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.6), weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.05, eps=1e-3)),
    ("Adamax", dict(lr=0.01, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05)),
    ("Adadelta", dict(lr=0.5, maximize=True)),
]


@pytest.fixture
def torch64(torch):
    """torch with float64 as default dtype (NAdam's mu_product is kept in that dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


@pytest.mark.parametrize("config", CONFIGS, ids=[optim_config_id(c) for c in CONFIGS])
def test_trajectory_matches_torch(backend, torch64, config):
    torch = torch64
    name, kw = config
    model, tmodel = optim_model_pair(torch)
    opt = getattr(nnx.optim, name)(model.parameters(), **kw)
    topt = getattr(torch.optim, name)(tmodel.parameters(), **kw)
    for step in range(20):
        optim_grads(model, step)
        for p, tp in zip(model.parameters(), tmodel.parameters()):
            tp.grad = torch.tensor(host(p.grad))
        opt.step()
        topt.step()
        opt.zero_grad()
        topt.zero_grad()
        for (n, p), tp in zip(model.named_parameters(), tmodel.parameters()):
            np.testing.assert_allclose(host(p.data), tp.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name}: {n} after step {step}")


def _one_step(name, kw, p0, g):
    """Apply one step of optimizer ``name`` to a single parameter with value p0 and gradient g."""
    p = nnx.Parameter(nnx.asarray(p0.copy(), dtype="float64"))
    p.grad = nnx.asarray(g, dtype="float64")
    opt = getattr(nnx.optim, name)([p], **kw)
    opt.step()
    return host(p.data)


def test_first_step_is_exactly_the_formula(backend):
    """The first update of each optimizer written out by hand (so a broken update rule fails here too)."""
    p0 = np.array([0.5, -1.0, 2.0])
    g = np.array([0.3, -0.2, 0.0])
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    # Adamax: m = 0.1 g, u = max(0, |g| + eps), p -= lr / (1 - b1) * m / u
    expect = p0 - lr / (1 - b1) * ((1 - b1) * g) / (np.abs(g) + eps)
    np.testing.assert_allclose(_one_step("Adamax", dict(lr=lr), p0, g), expect, rtol=1e-15)
    # Adadelta: v = 0.1 g^2, delta = sqrt(eps)/sqrt(v + eps) g, p -= lr delta
    rho, e = 0.9, 1e-6
    expect = p0 - 1.0 * math.sqrt(e) / np.sqrt((1 - rho) * g * g + e) * g
    np.testing.assert_allclose(_one_step("Adadelta", dict(), p0, g), expect, rtol=1e-15)
    # RAdam step 1: rho_1 = 1 <= 5, p -= lr * m / (1 - b1) = lr * g
    np.testing.assert_allclose(_one_step("RAdam", dict(lr=lr), p0, g), p0 - lr * g, rtol=1e-15)
    # NAdam step 1
    md = 4e-3
    mu1 = b1 * (1 - 0.5 * 0.96 ** md)
    mu2 = b1 * (1 - 0.5 * 0.96 ** (2 * md))
    denom = np.sqrt((1 - b2) * g * g / (1 - b2)) + eps
    expect = p0 - lr * (1 - mu1) / (1 - mu1) * g / denom - lr * mu2 / (1 - mu1 * mu2) * (1 - b1) * g / denom
    np.testing.assert_allclose(_one_step("NAdam", dict(lr=lr), p0, g), expect, rtol=1e-14)


@pytest.mark.parametrize("config", CONFIGS[::3], ids=[optim_config_id(c) for c in CONFIGS[::3]])
def test_state_dict_round_trip(backend, config):
    name, kw = config
    cls = getattr(nnx.optim, name)
    model = optim_model()
    opt = cls(model.parameters(), **kw)
    for step in range(5):
        optim_grads(model, step)
        opt.step()
        opt.zero_grad()
    clone = optim_model()
    clone.load_state_dict(model.state_dict())
    opt2 = cls(clone.parameters(), **kw)
    opt2.load_state_dict(opt.state_dict())
    for step in range(5, 10):
        for m, o in ((model, opt), (clone, opt2)):
            optim_grads(m, step)
            o.step()
            o.zero_grad()
    for p, q in zip(model.parameters(), clone.parameters()):
        np.testing.assert_array_equal(host(p.data), host(q.data))


@pytest.mark.parametrize("name,kw,match", [
    ("NAdam", dict(lr=-1.0), "NAdam: lr"), ("RAdam", dict(betas=(0.9, 1.0)), "RAdam: betas"),
    ("Adamax", dict(eps=-1.0), "Adamax: eps"), ("Adadelta", dict(rho=1.5), "Adadelta: rho"),
    ("LBFGS", dict(line_search_fn="armijo"), "LBFGS: line_search_fn"),
])
def test_bad_arguments(name, kw, match):
    with pytest.raises(ValueError, match=match):
        getattr(nnx.optim, name)(optim_model().parameters(), **kw)
