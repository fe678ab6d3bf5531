"""Optimizer hyper-parameters refused as PyTorch refuses them, in the constructors and in
``load_state_dict`` (all checked before anything is applied)."""

from __future__ import annotations

import copy
import math

import pytest

import nnx
from nnx import optim

NAN = math.nan

# (class, bad keyword arguments): each must be refused by the constructor.
BAD_CTOR = [
    (cls, kw) for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.NAdam, optim.RAdam, optim.Adamax,
                          optim.Adagrad, optim.Adadelta, optim.RMSprop)
    for kw in ({"lr": NAN}, {"lr": -1.0}, {"weight_decay": NAN}, {"weight_decay": -1.0})
] + [
    (cls, kw) for cls in (optim.Adam, optim.AdamW, optim.NAdam, optim.RAdam, optim.Adamax, optim.Adagrad,
                          optim.Adadelta, optim.RMSprop)
    for kw in ({"eps": NAN}, {"eps": -1.0})
] + [
    (cls, kw) for cls in (optim.Adam, optim.AdamW, optim.NAdam, optim.RAdam, optim.Adamax)
    for kw in ({"betas": (0.9,)}, {"betas": (0.9, 0.99, 0.999)}, {"betas": (5.0, 5.0)}, {"betas": (-0.1, 0.9)},
               {"betas": (0.9, 1.0)}, {"betas": (NAN, 0.9)}, {"betas": 0.9})
] + [
    (optim.RMSprop, {"momentum": -1.0}), (optim.RMSprop, {"alpha": -0.1}), (optim.RMSprop, {"alpha": NAN}),
    (optim.Adagrad, {"lr_decay": -1.0}), (optim.Adagrad, {"initial_accumulator_value": -1.0}),
    (optim.SGD, {"momentum": -0.5}), (optim.SGD, {"dampening": -0.5}), (optim.SGD, {"nesterov": True}),
    (optim.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}), (optim.Adadelta, {"rho": 1.5}),
    (optim.NAdam, {"momentum_decay": -1.0}), (optim.LBFGS, {"lr": NAN}), (optim.LBFGS, {"history_size": 0}),
]


def _params():
    return nnx.Linear(3, 2).parameters()


@pytest.mark.parametrize(("cls", "kw"), BAD_CTOR, ids=[f"{c.__name__}-{kw}" for c, kw in BAD_CTOR])
def test_constructor_refuses(cls, kw):
    key = next(iter(kw)) if "nesterov" not in kw else "Nesterov"
    with pytest.raises(ValueError, match=rf"{cls.__name__}: .*{key}"):
        cls(_params(), **kw)


def test_param_group_values_checked():
    m = nnx.Linear(3, 2)
    with pytest.raises(ValueError, match="Adam: lr must be a non-negative number, got nan"):
        optim.Adam([{"params": [m.weight]}, {"params": [m.bias], "lr": NAN}])
    opt = optim.SGD([m.weight], lr=0.1)
    with pytest.raises(ValueError, match="SGD: momentum"):
        opt.add_param_group({"params": [m.bias], "momentum": -1.0})
    assert len(opt.param_groups) == 1


def _trained(cls=optim.Adam, **kw):
    m = nnx.Linear(3, 2)
    opt = cls(m.parameters(), lr=0.01, **kw)
    x = nnx.asarray([[1.0, 2.0, 3.0]])
    for _ in range(2):
        m(x)
        m.backward(nnx.asarray([[1.0, 1.0]]))
        opt.step()
    return m, opt


def _snapshot(opt):
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    state = {id(p): {k: (nnx.to_numpy(v).copy() if hasattr(v, "shape") else v) for k, v in s.items()}
             for p, s in opt.state.items()}
    return groups, state, opt.state, opt.param_groups


def _assert_same(opt, snap):
    groups, state, state_obj, groups_obj = snap
    assert opt.state is state_obj and opt.param_groups is groups_obj
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert set(state) == {id(p) for p in opt.state}
    for p, s in opt.state.items():
        assert set(s) == set(state[id(p)])
        for k, v in s.items():
            if hasattr(v, "shape"):
                assert (nnx.to_numpy(v) == state[id(p)][k]).all()
            else:
                assert v == state[id(p)][k]


def _bad_group(key, value):
    def edit(sd):
        sd["param_groups"][0][key] = value
    return edit


def _bad_state(key, value, index=1):
    def edit(sd):
        sd["state"][index][key] = value(sd["state"][index]) if callable(value) else value
    return edit


BAD_LOAD = {
    "lr-nan": _bad_group("lr", NAN), "lr-neg": _bad_group("lr", -1.0), "eps-neg": _bad_group("eps", -1.0),
    "betas-5-5": _bad_group("betas", (5.0, 5.0)), "betas-3": _bad_group("betas", (0.9, 0.99, 0.999)),
    "wd-nan": _bad_group("weight_decay", NAN), "amsgrad-str": _bad_group("amsgrad", "yes"),
    "step-nan": _bad_state("step", NAN), "step-neg": _bad_state("step", -5.0), "step-str": _bad_state("step", "1"),
    "exp_avg-str": _bad_state("exp_avg", "abc"),
    "exp_avg-shape": _bad_state("exp_avg", lambda st: nnx.asarray([0.0] * 7)),
    "exp_avg-int": _bad_state("exp_avg", lambda st: nnx.asarray(nnx.to_numpy(st["exp_avg"]).astype("int64"))),
    "unknown-entry": _bad_state("exp_inf", lambda st: st["exp_avg"]),
}


@pytest.mark.parametrize("case", sorted(BAD_LOAD))
def test_load_state_dict_refuses_bad_values_atomically(case):
    _, opt = _trained()
    _, other = _trained()
    sd = copy.deepcopy(other.state_dict())
    BAD_LOAD[case](sd)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"Adam\.load_state_dict: "):
        opt.load_state_dict(sd)
    _assert_same(opt, snap)


def test_load_state_dict_refuses_another_optimizers_state():
    _, adam = _trained()
    _, sgd = _trained(optim.SGD, momentum=0.9)
    _, adamax = _trained(optim.Adamax)
    for target, source in ((adam, sgd), (sgd, adam), (adamax, adam)):
        snap = _snapshot(target)
        with pytest.raises(ValueError, match=rf"{type(target).__name__}\.load_state_dict: .*another optimizer"):
            target.load_state_dict(copy.deepcopy(source.state_dict()))
        _assert_same(target, snap)


def test_load_state_dict_fills_nothing_before_everything_is_checked():
    """The first parameter's state is valid, the second's is not: the first must not be installed."""
    m, opt = _trained()
    fresh = optim.Adam(m.parameters(), lr=0.01)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][1]["step"] = -1.0
    with pytest.raises(ValueError, match="Adam.load_state_dict: state 'step' of parameter 1"):
        fresh.load_state_dict(sd)
    assert fresh.state == {}
    sd["state"][1]["step"] = 2.0
    sd["param_groups"][0]["eps"] = -1.0
    with pytest.raises(ValueError, match="Adam.load_state_dict: eps"):
        fresh.load_state_dict(sd)
    assert fresh.state == {} and fresh.param_groups[0]["eps"] == 1e-8


def test_load_state_dict_accepts_valid_state():
    m, opt = _trained()
    fresh = optim.Adam(m.parameters(), lr=0.5)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert fresh.param_groups[0]["lr"] == 0.01
    assert fresh.state[m.weight]["step"] == 2.0


def test_load_state_dict_refuses_another_class_groups_without_state():
    """An SGD that never stepped has no per-parameter state: its groups alone must be refused by Adam."""
    m = nnx.Linear(3, 2)
    adam = optim.Adam(m.parameters(), lr=0.01)
    sgd = optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
    snap = _snapshot(adam)
    with pytest.raises(ValueError, match=r"Adam\.load_state_dict: parameter group 0 lacks \['amsgrad', 'betas'"):
        adam.load_state_dict(copy.deepcopy(sgd.state_dict()))
    _assert_same(adam, snap)
