"""Learning-rate schedulers against torch.optim.lr_scheduler (lr sequences, state_dict round trips) and
gradient clipping against torch.nn.utils."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
from nnx.optim import lr_scheduler as nls

from helpers import host, rand

STEPS = 30

# (id, factory(lr_scheduler_module, optimizer) -> scheduler); the same code builds the nnx and the torch one
SCHEDULES = [
    ("step", lambda S, o: S.StepLR(o, step_size=7, gamma=0.5)),
    ("multistep", lambda S, o: S.MultiStepLR(o, milestones=[12, 5, 20], gamma=0.3)),
    ("exponential", lambda S, o: S.ExponentialLR(o, gamma=0.9)),
    ("cosine_past_tmax", lambda S, o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
    ("cosine", lambda S, o: S.CosineAnnealingLR(o, T_max=STEPS)),
    ("linear_warmup", lambda S, o: S.LinearLR(o, start_factor=0.1, total_iters=8)),
    ("linear_decay", lambda S, o: S.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=10)),
    ("lambda", lambda S, o: S.LambdaLR(o, lambda e: 1.0 / (1.0 + 0.5 * e))),
    ("warmup_then_cosine", lambda S, o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(o, T_max=20)], milestones=[5])),
    ("warmup_step_exp", lambda S, o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.25, total_iters=4), S.StepLR(o, step_size=3, gamma=0.5),
            S.ExponentialLR(o, gamma=0.8)], milestones=[4, 15])),
]


def _nnx_opt(lrs=(0.1, 0.02)):
    params = [nnx.Parameter(nnx.asarray(np.zeros(2), backend="numpy")) for _ in lrs]
    return nnx.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def _torch_opt(torch, lrs=(0.1, 0.02)):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def _run(sched, opt, n):
    out = [_lrs(opt)]
    for _ in range(n):
        opt.step()
        sched.step()
        out.append(_lrs(opt))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's SequentialLR warns about step(epoch)
@pytest.mark.parametrize("case", SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_lr_sequence_matches_torch(torch, case):
    _, make = case
    opt, topt = _nnx_opt(), _torch_opt(torch)
    sched, tsched = make(nls, opt), make(torch.optim.lr_scheduler, topt)
    ours, theirs = _run(sched, opt, STEPS), _run(tsched, topt, STEPS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)


@pytest.mark.parametrize("case", SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_scheduler_state_dict_round_trip(case):
    _, make = case
    opt = _nnx_opt()
    sched = make(nls, opt)
    _run(sched, opt, 10)
    saved = sched.state_dict()
    rest = _run(sched, opt, 15)
    opt2 = _nnx_opt()
    sched2 = make(nls, opt2)
    sched2.load_state_dict(saved)
    assert _lrs(opt2) == rest[0], "loading restores the optimizer's lr"
    assert _run(sched2, opt2, 15) == rest


def test_cosine_closed_form_and_errors():
    opt = _nnx_opt((1.0,))
    sched = nls.CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    lrs = [x[0] for x in _run(sched, opt, 4)]
    np.testing.assert_allclose(lrs, [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)], atol=1e-15)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be >= 1, got 0"):
        nls.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="StepLR: step_size must be >= 1"):
        nls.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="SequentialLR: expected 1 milestones, got 2"):
        nls.SequentialLR(opt, [nls.StepLR(opt, 2), nls.StepLR(opt, 2)], milestones=[1, 2])
    with pytest.raises(TypeError, match="StepLR: expected an nnx optimizer"):
        nls.StepLR(object(), 2)


METRICS = [1.0, 0.9, 0.9, 0.91, 0.92, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.69999, 0.7, 0.7,
           0.71, 0.72, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
PLATEAU = [
    ("min", dict(patience=2)),
    ("min_abs_cooldown", dict(patience=1, threshold=0.05, threshold_mode="abs", cooldown=2)),
    ("max", dict(mode="max", patience=1, factor=0.5)),
    ("min_lr", dict(patience=0, factor=0.5, min_lr=[0.02, 0.015])),
]


@pytest.mark.parametrize("case", PLATEAU, ids=[c[0] for c in PLATEAU])
def test_reduce_lr_on_plateau_matches_torch(backend, torch, case):
    _, kw = case
    opt, topt = _nnx_opt(), _torch_opt(torch)
    sched = nls.ReduceLROnPlateau(opt, **kw)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    for i, m in enumerate(METRICS):
        metric = nnx.asarray(np.asarray(m), dtype="float64") if i % 2 else m  # 0-d arrays are accepted
        sched.step(metric)
        tsched.step(m)
        assert _lrs(opt) == pytest.approx(_lrs(topt), rel=1e-12), f"step {i}"
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
    # state_dict round trip
    opt2 = _nnx_opt()
    sched2 = nls.ReduceLROnPlateau(opt2, **kw)
    sched2.load_state_dict(sched.state_dict())
    for g2, g in zip(opt2.param_groups, opt.param_groups):
        g2["lr"] = g["lr"]
    for m in (0.5, 0.5, 0.5, 0.5):
        sched.step(m)
        sched2.step(m)
        assert _lrs(opt2) == _lrs(opt)


def test_reduce_lr_on_plateau_bad_arguments():
    opt = _nnx_opt()
    with pytest.raises(ValueError, match="ReduceLROnPlateau: factor must be < 1, got 1.5"):
        nls.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="mode must be 'min'/'max'"):
        nls.ReduceLROnPlateau(opt, mode="up")


# ----------------------------------------------------------------------------- gradient clipping
def _grad_params(torch, seed=0, scale=1.0):
    params, tparams = [], []
    for i, shape in enumerate([(3, 4), (4,), (2, 2)]):
        p = nnx.Parameter(rand(*shape, seed=10 + i))
        p.grad = rand(*shape, seed=seed + i, scale=scale)
        tp = torch.nn.Parameter(torch.tensor(host(p.data)))
        tp.grad = torch.tensor(host(p.grad))
        params.append(p)
        tparams.append(tp)
    return params, tparams


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")], ids=["l2", "l1", "l3", "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no_clip"])
def test_clip_grad_norm_matches_torch(backend, torch, norm_type, max_norm):
    params, tparams = _grad_params(torch)
    total = nnx.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert getattr(total, "ndim", None) == 0, "the norm is a 0-d array on the device"
    np.testing.assert_allclose(float(total), float(ttotal), rtol=1e-12)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(host(p.grad), tp.grad.numpy(), rtol=1e-12, atol=1e-15)
    if max_norm < 1:
        flat = np.concatenate([host(p.grad).ravel() for p in params])
        got = np.max(np.abs(flat)) if math.isinf(norm_type) else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
        assert got == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_single_parameter_float32_and_nonfinite(backend):
    p = nnx.Parameter(rand(3, dtype="float32"))
    p.grad = nnx.asarray(np.array([3.0, 4.0, 0.0]))
    total = nnx.clip_grad_norm_(p, 1.0)
    assert float(total) == pytest.approx(5.0)
    assert p.grad.dtype == p.data.dtype
    np.testing.assert_allclose(host(p.grad), [0.6, 0.8, 0.0], rtol=1e-5)
    p.grad = nnx.asarray(np.array([np.inf, 1.0, 0.0]))
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total gradient norm is inf"):
        nnx.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("clip", [0.1, 0.7, 10.0])
def test_clip_grad_value_matches_torch(backend, torch, clip):
    params, tparams = _grad_params(torch, scale=2.0)
    nnx.clip_grad_value_(params, clip)
    torch.nn.utils.clip_grad_value_(tparams, clip)
    for p, tp in zip(params, tparams):
        np.testing.assert_array_equal(host(p.grad), tp.grad.numpy())
        assert p.grad.dtype == p.data.dtype


def test_lambda_lr_one_function_per_group(torch):
    fns = [lambda e: 0.9 ** e, lambda e: 1.0 / (1 + e)]
    opt, topt = _nnx_opt(), _torch_opt(torch)
    sched = nls.LambdaLR(opt, fns)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, fns)
    np.testing.assert_allclose(_run(sched, opt, 10), _run(tsched, topt, 10), rtol=1e-12)
    saved = sched.state_dict()
    assert not any(callable(v) or (isinstance(v, list) and any(map(callable, v))) for v in saved.values())
    opt2 = _nnx_opt()
    sched2 = nls.LambdaLR(opt2, fns)
    sched2.load_state_dict(saved)
    assert _run(sched2, opt2, 3) == _run(sched, opt, 3)
    with pytest.raises(ValueError, match="LambdaLR: expected 2 lr_lambdas, got 3"):
        nls.LambdaLR(_nnx_opt(), fns + fns[:1])


def test_reduce_lr_on_plateau_min_lr_length_checked():
    with pytest.raises(ValueError, match="ReduceLROnPlateau: expected 2 min_lrs, got 1"):
        nls.ReduceLROnPlateau(_nnx_opt(), min_lr=[0.01])
