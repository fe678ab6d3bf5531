"""nnx.fit / evaluate / predict, History, the NaN/Inf guard and resuming in process (metrics and callbacks:
test_metrics.py, test_callbacks.py)."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest

import nnx
import nnx_backends as backends

from helpers import blobs, fit_setup, host, small_mlp


class Poison(nnx.Module):
    """Identity that outputs NaN from its ``after``-th training call on (to simulate divergence)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                x = x * float("nan")
        return self.record(x, lambda dy, input_grad=True: (dy, ()))


# ------------------------------------------------------------------------------------------ fit
def test_fit_learns_and_reports(backend):
    model, opt, train, val = fit_setup()
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=4, val_loader=val,
                   metrics=["accuracy", "f1"], quiet=True)
    assert isinstance(hist, nnx.History) and len(hist) == 4 and hist.epoch == [0, 1, 2, 3]
    assert list(hist.keys()) == ["loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1", "lr"]
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["val_accuracy"][-1] >= 0.9
    assert model.training  # train mode restored after validation
    result = nnx.evaluate(model, nnx.CrossEntropyLoss(), val, metrics=["accuracy"])
    assert result["loss"] == pytest.approx(hist["val_loss"][-1], rel=1e-5)
    assert result["accuracy"] == hist["val_accuracy"][-1]
    assert hist.best("val_loss")[1] == min(hist["val_loss"])


def test_fit_loss_is_batch_weighted_mean_on_device(backend):
    model, opt, _, _ = fit_setup()
    X, y = blobs(10)
    loader = nnx.data.DataLoader((X, y), batch_size=4)  # batches of 4, 4, 2
    losses = []
    model.eval()
    loss_fn = nnx.CrossEntropyLoss()
    with nnx.no_grad():
        for xb, yb in loader:
            losses.append(float(host(loss_fn(model(xb), yb))) * xb.shape[0])
    model.train()
    expected = sum(losses) / 10
    opt_zero = nnx.optim.SGD(model.parameters(), lr=0.0)
    hist = nnx.fit(model, loss_fn, opt_zero, loader, epochs=1, quiet=True)
    assert hist["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_host_reads_only_at_log_steps(backend, monkeypatch):
    model, opt, _, _ = fit_setup()
    X, y = blobs(120)
    loader = nnx.data.DataLoader((X, y), batch_size=10)  # 12 batches
    reads = {"loss": 0, "metric": 0}
    real_many, real_read = nnx.training._read_many, nnx.metrics._read

    def many(arrays):
        reads["loss"] += 1
        return real_many(arrays)

    def one(x):
        reads["metric"] += 1
        return real_read(x)

    monkeypatch.setattr(nnx.training, "_read_many", many)
    monkeypatch.setattr(nnx.metrics, "_read", one)
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, loader, epochs=1, metrics=["accuracy"], log_every=5, quiet=True)
    assert reads == {"loss": 3, "metric": 3}  # after batches 5 and 10, and at the epoch end


def test_predict_and_evaluate_restore_modes(backend):
    model, opt, train, val = fit_setup(dropout=0.5)
    model[0].eval()  # a frozen submodule must stay frozen
    X, _ = blobs(20)
    out = nnx.predict(model, X, batch_size=8)
    assert tuple(out.shape) == (20, 3) and backends.backend_of(out) is backend
    assert model.training and not model[0].training
    model.eval()
    with nnx.no_grad():
        ref = model(nnx.asarray(X))
    np.testing.assert_allclose(host(out), host(ref), rtol=1e-5, atol=1e-6)  # batch-size-dependent GEMM rounding
    model.train()
    model[0].eval()
    nnx.evaluate(model, nnx.CrossEntropyLoss(), val)
    assert model.training and model[2].training and not model[0].training
    out2 = nnx.predict(model, val)  # a loader of (x, y) pairs
    assert tuple(out2.shape) == (24, 3)


def test_fit_accepts_plain_iterables_of_host_arrays(backend):
    model, opt, _, _ = fit_setup()
    X, y = blobs(32)
    batches = [(X[i:i + 8].astype(np.float32), y[i:i + 8]) for i in range(0, 32, 8)]
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, batches, epochs=2, quiet=True)
    assert len(hist["loss"]) == 2
    with pytest.raises(TypeError, match="pair"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, [X[:4]], epochs=1, quiet=True)


def test_progress_output(backend, capsys):
    model, opt, train, val = fit_setup()
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, val_loader=val, quiet=True)
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, metrics=["accuracy"])
    err = capsys.readouterr().err
    assert "Epoch 1/2 - loss:" in err and "Epoch 2/2 - loss:" in err and "accuracy" in err


# ------------------------------------------------------------------------------------------ NaN guard
def test_nonfinite_loss_raises_with_epoch_and_step_and_keeps_checkpoint(backend, tmp_path):
    nnx.manual_seed(0)
    X, y = blobs(64)
    train = nnx.data.DataLoader((X, y), batch_size=8)  # 8 batches per epoch
    model = nnx.Sequential(nnx.Linear(6, 8), Poison(after=8 + 2), nnx.ReLU(), nnx.Linear(8, 3))
    opt = nnx.optim.SGD(model.parameters(), lr=0.01)
    ckpt = nnx.callbacks.ModelCheckpoint(tmp_path, monitor="loss")
    with pytest.raises(nnx.NonFiniteError, match=r"epoch 2, batch 3 \(detected at batch 5") as err:
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, callbacks=[ckpt], log_every=5, quiet=True)
    assert err.value.epoch == 1 and err.value.step == 2
    good = nnx.load_checkpoint(tmp_path / "last.nnx")  # the last good checkpoint survives
    assert good["epoch"] == 0
    assert all(np.isfinite(v).all() for v in good["model"].values())
    assert all(np.isfinite(v).all() for v in nnx.load(tmp_path / "best.nnx", backend="numpy").values())


def test_nonfinite_at_the_end_of_an_epoch_is_caught_before_callbacks(backend, tmp_path):
    nnx.manual_seed(0)
    X, y = blobs(16)
    train = nnx.data.DataLoader((X, y), batch_size=8)  # 2 batches per epoch
    model = nnx.Sequential(nnx.Linear(6, 8), Poison(after=3), nnx.Linear(8, 3))
    opt = nnx.optim.SGD(model.parameters(), lr=0.01)
    seen = []
    spy = nnx.callbacks.LambdaCallback(on_epoch_end=lambda t, e, logs: seen.append(e))
    with pytest.raises(nnx.NonFiniteError, match="epoch 2, batch 2"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, callbacks=[spy], quiet=True)
    assert seen == [0]


def test_nonfinite_can_be_ignored(backend):
    nnx.manual_seed(0)
    X, y = blobs(16)
    model = nnx.Sequential(nnx.Linear(6, 8), Poison(after=2), nnx.Linear(8, 3))
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), nnx.optim.SGD(model.parameters(), lr=0.01),
                   nnx.data.DataLoader((X, y), batch_size=8), epochs=2, stop_on_nonfinite=False, quiet=True)
    assert not math.isnan(hist["loss"][0]) and math.isnan(hist["loss"][1])


def test_checkpoint_refuses_nonfinite_weights(backend, tmp_path):
    model, opt, train, _ = fit_setup()

    def poison(trainer, epoch, logs):
        if epoch == 1:
            p = next(iter(trainer.model.parameters()))
            p.data = p.data * float("nan")

    cbs = [nnx.callbacks.LambdaCallback(on_epoch_end=poison), nnx.callbacks.ModelCheckpoint(tmp_path, monitor="loss")]
    with pytest.raises(nnx.NonFiniteError, match="weights contain NaN/Inf after epoch 2"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, callbacks=cbs, quiet=True)
    assert nnx.load_checkpoint(tmp_path / "last.nnx")["epoch"] == 0


# ------------------------------------------------------------------------------------------ History
def test_history_plot(tmp_path):
    h = nnx.History()
    for e in range(3):
        h.append(e, {"loss": 1.0 / (e + 1), "accuracy": 0.5 + 0.1 * e, "val_loss": 1.2 / (e + 1), "lr": 0.1})
    fig = h.plot(tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].lines) == 2  # train and validation
    h.append(3, {"loss": 0.1})  # a key missing in an epoch is NaN
    assert math.isnan(h["accuracy"][3])
    state = h.state_dict()
    h2 = nnx.History()
    h2.load_state_dict(json.loads(json.dumps(state).replace("NaN", "null").replace("null", "NaN")))
    assert h2.epoch == h.epoch and h2["loss"] == h["loss"]


def test_history_plot_without_matplotlib(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *args)

    monkeypatch.setattr(nnx.history.importlib, "import_module", fake)
    h = nnx.History()
    h.append(0, {"loss": 1.0})
    with pytest.raises(ImportError, match=r"nnx-backprop\[plot\]"):
        h.plot()


# ------------------------------------------------------------------------------------------ resume (in process)
def test_resume_continues_history_and_logs(backend, tmp_path):
    model, opt, train, val = fit_setup()
    cbs = [nnx.callbacks.ModelCheckpoint(tmp_path), nnx.callbacks.CSVLogger(tmp_path / "log.csv")]
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, val_loader=val, callbacks=cbs, quiet=True)
    model, opt, train, val = fit_setup()
    cbs = [nnx.callbacks.ModelCheckpoint(tmp_path), nnx.callbacks.CSVLogger(tmp_path / "log.csv")]
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, val_loader=val, callbacks=cbs, quiet=True,
                   resume_from=tmp_path / "last.nnx")
    assert hist.epoch == [0, 1, 2]
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2", "3"]


def test_resume_from_foreign_checkpoint_changes_nothing(backend, tmp_path):
    model, opt, train, _ = fit_setup()
    nnx.save_checkpoint(tmp_path / "c.nnx", model=model, optimizer=opt)  # no epoch, no history
    nnx.manual_seed(3)
    other = small_mlp()
    other_opt = nnx.optim.Adam(other.parameters(), lr=0.5)
    before = {k: host(v).copy() for k, v in other.state_dict().items()}
    with pytest.raises(nnx.CheckpointError, match="not a checkpoint written by fit"):
        nnx.fit(other, nnx.CrossEntropyLoss(), other_opt, train, epochs=2, quiet=True, resume_from=tmp_path / "c.nnx")
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(host(v), before[k])
    assert other_opt.param_groups[0]["lr"] == 0.5


def test_evaluate_and_predict_accept_arrays(backend):
    model, _, _, val = fit_setup()
    X, y = blobs(96)
    a = nnx.evaluate(model, nnx.CrossEntropyLoss(), (X[72:], y[72:]), metrics=["accuracy"], batch_size=5)
    b = nnx.evaluate(model, nnx.CrossEntropyLoss(), val, metrics=["accuracy"])
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert tuple(nnx.predict(model, (X[:7], y[:7]), batch_size=3).shape) == (7, 3)


def test_evaluate_on_empty_data_is_refused_like_predict(backend):
    model = small_mlp()
    X, y = blobs(6)
    empty = nnx.data.DataLoader((X[:0], y[:0]), batch_size=4)
    with pytest.raises(ValueError, match="evaluate: the data is empty"):
        nnx.evaluate(model, nnx.CrossEntropyLoss(), empty, metrics=["accuracy"])
    with pytest.raises(ValueError, match="predict: the data is empty"):
        nnx.predict(model, X[:0])


@pytest.mark.parametrize("n", [32, 33, 47, 48])
def test_drop_last_drops_only_an_incomplete_batch(n):
    X = np.arange(n, dtype=np.float32)[:, None]
    sizes = [int(x.shape[0]) for x, in nnx.data.DataLoader((X,), batch_size=16, drop_last=True)]
    assert sizes == [16] * (n // 16), "a complete last batch is kept, an incomplete one dropped"
    kept = [int(x.shape[0]) for x, in nnx.data.DataLoader((X,), batch_size=16)]
    assert sum(kept) == n and len(kept) == -(-n // 16)


@pytest.mark.parametrize("make", [lambda d: nnx.callbacks.ModelCheckpoint(d), lambda d: nnx.callbacks.EarlyStopping()])
def test_monitoring_val_quantities_without_val_loader_fails_at_the_start(backend, tmp_path, make):
    model, opt, train, _ = fit_setup()
    before = {k: host(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"monitor='val_loss' needs validation data, but fit was given no val_loader"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, callbacks=[make(tmp_path / "ck")])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(host(v), before[k], err_msg=f"{k} trained before the refusal")


def test_history_best_counts_epochs_from_one():
    h = nnx.History()
    for e, v in enumerate([0.9, 0.5, 0.7]):
        h.append(e, {"val_loss": v, "val_accuracy": 1 - v})
    assert h.best("val_loss") == (2, 0.5)  # the log's "Epoch 2/3"
    assert h.best("val_accuracy") == (2, 0.5)
