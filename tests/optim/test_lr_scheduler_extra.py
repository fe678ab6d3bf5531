"""OneCycleLR, CyclicLR, CosineAnnealingWarmRestarts, ConstantLR, PolynomialLR, ChainedScheduler: the lr
(and momentum) sequences against torch.optim.lr_scheduler, state_dict round trips, and PyTorch's warning
when scheduler.step() comes before optimizer.step()."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnx
from nnx.optim import lr_scheduler as nls

STEPS = 40

SCHEDULES = [
    ("constant", "SGD", lambda S, o: S.ConstantLR(o, factor=0.25, total_iters=6)),
    ("polynomial", "SGD", lambda S, o: S.PolynomialLR(o, total_iters=25, power=2.0)),
    ("polynomial_linear", "SGD", lambda S, o: S.PolynomialLR(o, total_iters=10)),
    ("warm_restarts", "SGD", lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=7, eta_min=0.001)),
    ("warm_restarts_mult", "SGD", lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2)),
    ("cyclic", "SGD", lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5)),
    ("cyclic_tri2", "SGD", lambda S, o: S.CyclicLR(o, base_lr=[0.01, 0.001], max_lr=0.1, step_size_up=4,
                                                   step_size_down=6, mode="triangular2")),
    ("cyclic_exp_adam", "Adam", lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3,
                                                        mode="exp_range", gamma=0.97)),
    ("cyclic_custom", "SGD", lambda S, o: S.CyclicLR(o, 0.01, 0.1, step_size_up=3, scale_fn=lambda x: 0.9 ** x,
                                                     scale_mode="iterations", cycle_momentum=False)),
    ("onecycle", "SGD", lambda S, o: S.OneCycleLR(o, max_lr=0.5, total_steps=STEPS)),
    ("onecycle_linear_adam", "Adam", lambda S, o: S.OneCycleLR(o, max_lr=[0.5, 0.1], epochs=4, steps_per_epoch=10,
                                                               anneal_strategy="linear", pct_start=0.25)),
    ("onecycle_three_phase", "SGD", lambda S, o: S.OneCycleLR(o, max_lr=0.3, total_steps=STEPS, three_phase=True,
                                                              div_factor=10.0, final_div_factor=100.0)),
    ("chained", "SGD", lambda S, o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4),
                                                        S.ExponentialLR(o, gamma=0.9)])),
    ("chained_poly_step", "SGD", lambda S, o: S.ChainedScheduler([S.PolynomialLR(o, total_iters=30, power=0.5),
                                                                  S.StepLR(o, step_size=5, gamma=0.7)])),
]


def _opts(torch, kind):
    params = [nnx.Parameter(nnx.asarray(np.zeros(2), backend="numpy")) for _ in range(2)]
    tparams = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    kw = dict(momentum=0.9) if kind == "SGD" else {}
    groups = [{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.02}]
    tgroups = [{"params": [tparams[0]], "lr": 0.1}, {"params": [tparams[1]], "lr": 0.02}]
    return getattr(nnx.optim, kind)(groups, lr=0.1, **kw), getattr(torch.optim, kind)(tgroups, lr=0.1, **kw)


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


@pytest.mark.parametrize("case", SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_lr_sequence_matches_torch(torch, case):
    _, kind, make = case
    opt, topt = _opts(torch, kind)
    sched, tsched = make(nls, opt), make(torch.optim.lr_scheduler, topt)
    for step in range(STEPS):
        ours = [g["lr"] for g in opt.param_groups]
        theirs = [g["lr"] for g in topt.param_groups]
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15, err_msg=f"lr at step {step}")
        np.testing.assert_allclose(_momenta(opt), _momenta(topt), rtol=1e-12, err_msg=f"momentum at step {step}")
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=1e-15)
        opt.step()
        topt.step()
        if step < STEPS - 1 or "onecycle" not in case[0]:
            sched.step()
            tsched.step()


@pytest.mark.parametrize("case", SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_state_dict_round_trip(torch, case):
    _, kind, make = case
    opt, _ = _opts(torch, kind)
    sched = make(nls, opt)
    for _ in range(13):
        opt.step()
        sched.step()
    saved = sched.state_dict()
    opt2, _ = _opts(torch, kind)
    sched2 = make(nls, opt2)
    sched2.load_state_dict(saved)
    for _ in range(10):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


def test_warm_restarts_fractional_epoch(torch):
    opt, topt = _opts(torch, "SGD")
    s = nls.CosineAnnealingWarmRestarts(opt, T_0=5, T_mult=2)
    ts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, T_0=5, T_mult=2)
    for e in (0.5, 3.25, 7.0, 16.9, 2.0):
        opt.step()
        topt.step()
        s.step(e)
        ts.step(e)
        np.testing.assert_allclose(s.get_last_lr(), ts.get_last_lr(), rtol=1e-12)


def test_onecycle_past_total_steps_raises_and_changes_nothing(torch):
    opt, _ = _opts(torch, "SGD")
    s = nls.OneCycleLR(opt, max_lr=0.5, total_steps=3)
    for _ in range(3):
        opt.step()
        s.step()
    before = [g["lr"] for g in opt.param_groups], s.last_epoch
    with pytest.raises(ValueError, match="OneCycleLR: tried to step 4 times"):
        s.step()
    assert ([g["lr"] for g in opt.param_groups], s.last_epoch) == before


def test_cycle_momentum_needs_momentum():
    p = nnx.Parameter(nnx.asarray(np.zeros(2), backend="numpy"))
    with pytest.raises(ValueError, match="CyclicLR: optimizer must support momentum"):
        nls.CyclicLR(nnx.optim.Adagrad([p]), 0.01, 0.1)


def test_warning_when_scheduler_steps_before_optimizer():
    p = nnx.Parameter(nnx.asarray(np.zeros(2), backend="numpy"))
    opt = nnx.optim.SGD([p], lr=0.1)
    s = nls.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        s.step()
    opt2 = nnx.optim.SGD([p], lr=0.1)
    s2 = nls.OneCycleLR(opt2, max_lr=0.1, total_steps=10)
    opt2.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s2.step()
        s2.step()
