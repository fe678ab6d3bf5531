"""A failed resume (``fit(resume_from=...)``, ``nnx.load_checkpoint``) changes nothing: model,
optimizer, scheduler, random generators, loaders and callbacks compare equal to a snapshot taken
before the call, and the error says what was wrong (no AttributeError / KeyError from deep inside)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import nnx
import nnx_backends as backends
from nnx import serialization


def _build(seed=0):
    nnx.manual_seed(seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 4))
    y = (X[:, 0] > 0).astype(np.int64)
    train = nnx.data.DataLoader((X[:32], y[:32]), batch_size=8, shuffle=True, seed=seed)
    val = nnx.data.DataLoader((X[32:], y[32:]), batch_size=8, seed=seed)
    model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Dropout(0.2), nnx.Linear(8, 2))
    opt = nnx.optim.Adam(model.parameters(), lr=0.02)
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8)
    return model, opt, sched, train, val


def _fit(parts, epochs, cbs, resume_from=None):
    model, opt, sched, train, val = parts
    return nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=epochs, val_loader=val, scheduler=sched,
                   callbacks=cbs, quiet=True, resume_from=resume_from)


def _host(v):
    return nnx.to_numpy(v).copy() if hasattr(v, "shape") else copy.deepcopy(v)


def _snapshot(parts, cbs):
    model, opt, sched, train, val = parts
    osd = opt.state_dict()
    return {
        "model": {k: _host(v) for k, v in model.state_dict().items()},
        "opt_groups": copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in osd["param_groups"]]),
        "opt_state": {i: {k: _host(v) for k, v in s.items()} for i, s in osd["state"].items()},
        "sched": copy.deepcopy(sched.state_dict()), "lr": [g["lr"] for g in opt.param_groups],
        "rng": {b.name: repr(b.get_rng_state()) for b in backends.instances()},
        "loaders": [train.state_dict(), val.state_dict()],
        "callbacks": [{k: _host(v) for k, v in cb.state_dict().items() if k != "best_weights"} for cb in cbs],
    }


def _assert_equal(a, b, path=""):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            _assert_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path


def _callbacks(tmp_path):
    return [nnx.callbacks.EarlyStopping(monitor="val_loss", patience=10),
            nnx.callbacks.ModelCheckpoint(tmp_path / "ck", monitor="val_loss")]


@pytest.fixture(scope="module")
def good_tree(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    parts = _build(0)
    _fit(parts, 2, _callbacks(d))
    tree, _ = serialization._read(d / "ck" / "last.nnx", None)
    return tree


def _edit_rng_value(t):
    key = next(iter(t["rng"]))
    t["rng"][key] = "garbage"


def _edit_rng_inner(t):
    key = next(iter(t["rng"]))
    t["rng"][key] = {"kind": t["rng"][key]["kind"], "state": {"nonsense": 1}}


def _edit_callback(i, key, value):
    def edit(t):
        t["extra"]["callbacks"][i]["state"][key] = value
    return edit


def _edit_loader(name, value):
    def edit(t):
        t["extra"]["loaders"][name] = value
    return edit


def _edit_group(key, value):
    def edit(t):
        t["optimizer"]["param_groups"][0][key] = value
    return edit


def _edit_sched(key, value):
    def edit(t):
        t["scheduler"][key] = value
    return edit


EDITS = {
    "epoch-negative": (lambda t: t.__setitem__("epoch", -5), "epoch"),
    "rng-not-a-dict": (_edit_rng_value, "random generator state"),
    "rng-inner-malformed": (_edit_rng_inner, "random generator state"),
    "rng-kind": (lambda t: t["rng"][next(iter(t["rng"]))].__setitem__("kind", "other"), "random generator state"),
    "val-loader-bad": (_edit_loader("val", {"seed": "x", "epoch": 1}), "DataLoader.load_state_dict"),
    "early-stopping-missing-best": (lambda t: t["extra"]["callbacks"][0]["state"].pop("best"),
                                    "EarlyStopping.load_state_dict"),
    "early-stopping-wait-str": (_edit_callback(0, "wait", "many"), "EarlyStopping.load_state_dict"),
    "model-checkpoint-best-str": (_edit_callback(1, "best", "low"), "ModelCheckpoint.load_state_dict"),
    "lr-nan": (_edit_group("lr", float("nan")), "lr"),
    "betas-3": (_edit_group("betas", [0.9, 0.99, 0.999]), "betas"),
    "sched-gamma": (_edit_sched("gamma", -3.0), "gamma"),
    "sched-last-epoch": (_edit_sched("last_epoch", float("nan")), "last_epoch"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_failed_fit_resume_changes_nothing(case, good_tree, tmp_path):
    edit, msg = EDITS[case]
    tree = copy.deepcopy(good_tree)
    edit(tree)
    bad = tmp_path / "bad.nnx"
    serialization._write(bad, "checkpoint", tree)
    parts = _build(1)
    cbs = _callbacks(tmp_path)
    _fit(parts, 1, cbs)  # some state of its own: one epoch trained
    parts[3].epoch = 7   # a train-loader state that the bad file's train entry would overwrite
    before = _snapshot(parts, cbs)
    with pytest.raises((ValueError, TypeError), match=msg):
        _fit(parts, 4, cbs, resume_from=bad)
    _assert_equal(before, _snapshot(parts, cbs))


def test_good_tree_resumes(good_tree, tmp_path):
    path = tmp_path / "good.nnx"
    serialization._write(path, "checkpoint", copy.deepcopy(good_tree))
    parts = _build(1)
    cbs = _callbacks(tmp_path)
    hist = _fit(parts, 3, cbs, resume_from=path)
    assert hist.epoch == [0, 1, 2]  # two epochs from the file, one trained here


def test_load_checkpoint_malformed_rng_is_clear_and_atomic(good_tree, tmp_path):
    tree = copy.deepcopy(good_tree)
    _edit_rng_inner(tree)
    bad = tmp_path / "bad.nnx"
    serialization._write(bad, "checkpoint", tree)
    parts = _build(1)
    before = _snapshot(parts, [])
    with pytest.raises(serialization.CheckpointError, match="random generator state of backend"):
        nnx.load_checkpoint(bad, model=parts[0], optimizer=parts[1], scheduler=parts[2])
    _assert_equal(before, _snapshot(parts, []))
