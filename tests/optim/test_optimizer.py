"""Optimizers: 20-step trajectories against torch.optim with the same gradients (float64), state_dict round
trips (nnx -> nnx and torch -> nnx), atomic steps, parameter groups, on every backend."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import nnx

from helpers import host, optim_config_id, optim_grads, optim_model, optim_model_pair, rand

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.5, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.05, alpha=0.9)),
    ("RMSprop", dict(lr=0.01, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.05)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, eps=1e-6, maximize=True)),
]


def _grads_to_torch(torch, model, tmodel):
    for p, tp in zip(model.parameters(), tmodel.parameters()):
        tp.grad = torch.tensor(host(p.grad))


def _lockstep(torch, model, tmodel, opt, topt, steps):
    """Step nnx and torch on the same gradients; parameters compared after every step."""
    for step in steps:
        optim_grads(model, step)
        _grads_to_torch(torch, model, tmodel)
        opt.step()
        topt.step()
        opt.zero_grad()
        topt.zero_grad()
        _assert_params(model, tmodel, step)


def _assert_params(model, tmodel, step, rtol=1e-10, atol=1e-12):
    for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
        np.testing.assert_allclose(host(p.data), tp.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"parameter {name} after step {step}")


@pytest.mark.parametrize("config", CONFIGS, ids=[optim_config_id(c) for c in CONFIGS])
def test_trajectory_matches_torch(backend, torch, config):
    name, kw = config
    model, tmodel = optim_model_pair(torch)
    opt = getattr(nnx.optim, name)(model.parameters(), **kw)
    topt = getattr(torch.optim, name)(tmodel.parameters(), **kw)
    _lockstep(torch, model, tmodel, opt, topt, range(20))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("config", CONFIGS, ids=[optim_config_id(c) for c in CONFIGS])
def test_state_dict_round_trip_continues_identically(backend, config):
    name, kw = config
    cls = getattr(nnx.optim, name)
    model = optim_model()
    opt = cls(model.parameters(), **kw)
    for step in range(10):
        optim_grads(model, step)
        opt.step()
        opt.zero_grad()
    saved = opt.state_dict()
    clone = optim_model()
    clone.load_state_dict(model.state_dict())
    opt2 = cls(clone.parameters(), **kw)
    opt2.load_state_dict(saved)
    for step in range(10, 20):
        for m, o in ((model, opt), (clone, opt2)):
            optim_grads(m, step)
            o.step()
            o.zero_grad()
        for (n, p), q in zip(model.named_parameters(), clone.parameters()):
            np.testing.assert_array_equal(host(p.data), host(q.data), err_msg=f"{n} after step {step}")
    # the loaded state is a copy, not shared with the source optimizer
    for p, q in zip(model.parameters(), clone.parameters()):
        for k, v in opt.state[p].items():
            if hasattr(v, "shape"):
                assert opt2.state[q][k] is not v


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, amsgrad=True)), ("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("RMSprop", dict(lr=0.01, centered=True, momentum=0.3)),
                                     ("Adagrad", dict(lr=0.1, lr_decay=0.01))])
def test_torch_optimizer_state_dict_loads(backend, torch, name, kw):
    """A torch.optim state_dict converted to arrays loads into the nnx optimizer and continues identically."""
    model, tmodel = optim_model_pair(torch)
    topt = getattr(torch.optim, name)(tmodel.parameters(), **kw)
    for step in range(10):
        optim_grads(model, step)
        _grads_to_torch(torch, model, tmodel)
        topt.step()
        topt.zero_grad()
        model.zero_grad()
    sd = topt.state_dict()
    converted = {
        "state": {i: {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in st.items()}
                  for i, st in sd["state"].items()},
        "param_groups": copy.deepcopy(sd["param_groups"]),
    }
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    opt = getattr(nnx.optim, name)(model.parameters(), **kw)
    opt.load_state_dict(converted)
    _lockstep(torch, model, tmodel, opt, topt, range(10, 20))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_failed_step_leaves_everything_unchanged(backend, name, bad):
    model = optim_model()
    kw = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
    opt = getattr(nnx.optim, name)(model.parameters(), lr=0.1, **kw)
    for step in range(3):
        optim_grads(model, step)
        opt.step()
        opt.zero_grad()
    optim_grads(model, 3)
    params_before = [host(p.data).copy() for p in model.parameters()]
    state_before = {id(p): {k: (host(v).copy() if hasattr(v, "shape") else v) for k, v in opt.state[p].items()}
                    for p in model.parameters()}
    last = list(model.parameters())[-1]  # the last parameter: every other one would be updated first
    b = nnx.get_backend()
    if bad == "shape":
        last.grad = b.xp.zeros((last.shape[0] + 1,), dtype=last.dtype, device=b.device)
    else:
        last.grad = b.xp.astype(last.grad, b.xp.float32)
    with pytest.raises(ValueError, match=rf"{name}.step: gradient is a .* but its parameter is a .*nothing was updat"):
        opt.step()
    for before, p in zip(params_before, model.parameters()):
        np.testing.assert_array_equal(host(p.data), before)
    for p in model.parameters():
        for k, v in opt.state[p].items():
            want = state_before[id(p)][k]
            if hasattr(v, "shape"):
                np.testing.assert_array_equal(host(v), want)
            else:
                assert v == want


def test_failed_step_on_gradient_from_other_backend(backend):
    if backend.name == "numpy":
        pytest.skip("needs a backend other than numpy")
    model = optim_model()
    opt = nnx.optim.SGD(model.parameters(), lr=0.1)
    optim_grads(model, 0)
    before = [host(p.data).copy() for p in model.parameters()]
    last = list(model.parameters())[-1]
    last.grad = np.zeros(last.shape)
    with pytest.raises(ValueError, match="gradient is a numpy array"):
        opt.step()
    for b_, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(host(p.data), b_)


@pytest.mark.parametrize("name,kw", [("SGD", dict(momentum=0.9)), ("Adam", {}), ("RMSprop", {}), ("Adagrad", {})])
def test_param_groups_with_different_lr_match_torch(backend, torch, name, kw):
    model, tmodel = optim_model_pair(torch)
    groups = [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters()}]
    tgroups = [{"params": tmodel[0].parameters(), "lr": 0.1}, {"params": tmodel[2].parameters()}]
    opt = getattr(nnx.optim, name)(groups, lr=0.01, **kw)
    topt = getattr(torch.optim, name)(tgroups, lr=0.01, **kw)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    _lockstep(torch, model, tmodel, opt, topt, range(10))
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sorted(sd["state"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_float32_parameters_stay_float32(backend, name):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.Tanh(), nnx.Linear(4, 2))
    opt = getattr(nnx.optim, name)(model.parameters(), lr=0.01)
    for _ in range(2):
        loss_fn = nnx.MSELoss()
        loss_fn(model(rand(6, 3, dtype="float32")), rand(6, 2, dtype="float32", seed=1))
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    for p in model.parameters():
        assert str(p.dtype).endswith("float32")
    for st in opt.state.values():
        for k, v in st.items():
            if hasattr(v, "dtype"):
                assert str(v.dtype).endswith("float32"), f"state {k} is {v.dtype}"


def test_frozen_and_gradless_parameters_are_skipped(backend):
    model = optim_model()
    first = model[0].weight
    first.requires_grad = False
    opt = nnx.optim.Adam(model.parameters(), lr=0.1)
    optim_grads(model, 0)
    model[2].bias.grad = None
    w0, b2 = host(first.data).copy(), host(model[2].bias.data).copy()
    opt.step()
    np.testing.assert_array_equal(host(first.data), w0)
    np.testing.assert_array_equal(host(model[2].bias.data), b2)
    assert first not in opt.state and model[2].bias not in opt.state
    assert not np.array_equal(host(model[2].weight.data), 0)


def test_step_closure_zero_grad_and_repr(backend):
    model = optim_model()
    opt = nnx.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert opt.step(lambda: 3.5) == 3.5
    optim_grads(model, 0)
    opt.zero_grad(set_to_none=False)
    assert all(np.all(host(p.grad) == 0) for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    text = repr(opt)
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "momentum: 0.9" in text


def test_construction_errors(backend):
    model = optim_model()
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        nnx.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"Adam: parameter 0 is a .*expected nnx.Parameter"):
        nnx.optim.Adam([rand(3)], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        nnx.optim.SGD([{"params": model.parameters()}, {"params": model[0].parameters()}], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        nnx.optim.SGD(model.parameters(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"Adam: betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)"):
        nnx.optim.Adam(model.parameters(), betas=(0.9, 1.0))


def test_load_state_dict_mismatch_leaves_optimizer_unchanged(backend):
    model = optim_model()
    opt = nnx.optim.Adam(model.parameters(), lr=0.1)
    optim_grads(model, 0)
    opt.step()
    before = {id(p): host(st["exp_avg"]).copy() for p, st in opt.state.items()}
    bad = opt.state_dict()
    bad = {"state": {i: dict(s) for i, s in bad["state"].items()}, "param_groups": bad["param_groups"]}
    bad["state"][3]["exp_avg"] = np.zeros((7,))
    with pytest.raises(ValueError, match="state 'exp_avg' of parameter 3 has shape"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="expected 1 parameter groups, got 2"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": []}, {"params": []}]})
    for p, st in opt.state.items():
        np.testing.assert_array_equal(host(st["exp_avg"]), before[id(p)])


def test_state_dict_moves_across_backends(backend):
    """An optimizer state saved on NumPy loads into an optimizer on another backend (and continues identically)."""
    with nnx.use_backend("numpy"):
        src = optim_model()
        opt = nnx.optim.Adam(src.parameters(), lr=0.01, amsgrad=True)
        for step in range(5):
            optim_grads(src, step)
            opt.step()
            opt.zero_grad()
        saved = opt.state_dict()
    dst = optim_model()
    dst.load_state_dict(src.state_dict())
    opt2 = nnx.optim.Adam(dst.parameters(), lr=0.01, amsgrad=True)
    opt2.load_state_dict(saved)
    for st in opt2.state.values():
        for k, v in st.items():
            if hasattr(v, "shape"):
                assert backend.owns(v), f"state {k} was not moved to {backend.name}"
    for step in range(5, 8):
        optim_grads(dst, step)
        opt2.step()
        opt2.zero_grad()
        with nnx.use_backend("numpy"):
            optim_grads(src, step)
            opt.step()
            opt.zero_grad()
    for p, q in zip(src.parameters(), dst.parameters()):
        np.testing.assert_allclose(host(q.data), host(p.data), rtol=1e-12, atol=1e-14)
