"""Scheduler arguments and ``load_state_dict`` values refused (nothing changed on refusal)."""

from __future__ import annotations

import math

import pytest

import nnx
from nnx.optim import lr_scheduler as S

NAN = math.nan


def _opt():
    return nnx.optim.SGD(nnx.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)


BAD_CTOR = [
    (S.StepLR, {"step_size": 0}), (S.StepLR, {"step_size": 2, "gamma": 0.0}),
    (S.StepLR, {"step_size": 2, "gamma": -3.0}), (S.StepLR, {"step_size": 2, "gamma": NAN}),
    (S.StepLR, {"step_size": 2.5}), (S.ExponentialLR, {"gamma": NAN}), (S.ExponentialLR, {"gamma": -1.0}),
    (S.MultiStepLR, {"milestones": [2, 4], "gamma": NAN}), (S.StepLR, {"step_size": 2, "last_epoch": -7}),
    (S.CosineAnnealingLR, {"T_max": 10, "eta_min": NAN}), (S.PolynomialLR, {"power": NAN}),
    (S.ReduceLROnPlateau, {"factor": NAN}), (S.ReduceLROnPlateau, {"patience": -1}),
]


@pytest.mark.parametrize(("cls", "kw"), BAD_CTOR, ids=[f"{c.__name__}-{kw}" for c, kw in BAD_CTOR])
def test_constructor_refuses(cls, kw):
    opt = _opt()
    with pytest.raises((ValueError, TypeError), match=rf"{cls.__name__}: "):
        cls(opt, **kw)
    assert opt.param_groups[0]["lr"] == 0.1


BAD_LOAD = [
    {"last_epoch": NAN}, {"last_epoch": -5}, {"last_epoch": 2.5}, {"gamma": -3.0}, {"gamma": NAN},
    {"gamma": 0.0}, {"step_size": 0}, {"base_lrs": [NAN]}, {"base_lrs": [-1.0]}, {"base_lrs": "x"},
]


@pytest.mark.parametrize("bad", BAD_LOAD, ids=[str(b) for b in BAD_LOAD])
def test_load_state_dict_refuses(bad):
    opt = _opt()
    sched = S.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    before, lr = dict(sched.state_dict()), opt.param_groups[0]["lr"]
    state = {**sched.state_dict(), **bad}
    with pytest.raises((ValueError, TypeError), match=r"StepLR\.load_state_dict: "):
        sched.load_state_dict(state)
    assert sched.state_dict() == before and opt.param_groups[0]["lr"] == lr


def test_reduce_on_plateau_load_refuses():
    opt = _opt()
    sched = S.ReduceLROnPlateau(opt, patience=1)
    sched.step(1.0)
    before = dict(sched.state_dict())
    for bad in ({"factor": 3.0}, {"patience": -2}, {"num_bad_epochs": NAN}, {"min_lrs": [NAN]}):
        with pytest.raises((ValueError, TypeError), match=r"ReduceLROnPlateau\.load_state_dict: "):
            sched.load_state_dict({**before, **bad})
        assert sched.state_dict() == before


def test_sequential_load_refuses_a_bad_child_and_changes_nothing():
    opt = _opt()
    a, b = S.StepLR(opt, step_size=1, gamma=0.5), S.ExponentialLR(opt, gamma=0.9)
    seq = S.SequentialLR(opt, [a, b], milestones=[2])
    opt.step()
    seq.step()
    before_a, before_b = dict(a.__dict__), dict(b.__dict__)
    state = seq.state_dict()
    state["schedulers"] = [dict(state["schedulers"][0]), {**state["schedulers"][1], "gamma": -3.0}]
    with pytest.raises(ValueError, match="SequentialLR.load_state_dict"):
        seq.load_state_dict(state)
    assert a.__dict__ == before_a and b.__dict__ == before_b


def test_valid_state_still_loads():
    opt = _opt()
    sched = S.StepLR(opt, step_size=2, gamma=0.5)
    state = {**sched.state_dict(), "last_epoch": 4}
    sched.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
