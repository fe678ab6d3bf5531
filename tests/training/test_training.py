"""nnx.fit / evaluate / predict, metrics, callbacks, History and the NaN/Inf guard."""

from __future__ import annotations

import importlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import nnx
import nnx_backends as backends

from helpers import host

# ------------------------------------------------------------------------------------------ fixtures


def blobs(n=96, d=6, classes=3, seed=0):
    """Separable Gaussian blobs: a small real classification problem."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 3.0
    y = np.arange(n) % classes
    X = centers[y] + rng.standard_normal((n, d))
    return X, y


def mlp(d=6, classes=3, dropout=0.0):
    layers = [nnx.Linear(d, 16), nnx.ReLU()]
    if dropout:
        layers.append(nnx.Dropout(dropout))
    return nnx.Sequential(*layers, nnx.Linear(16, classes))


def setup(batch_size=16, lr=0.05, dropout=0.0, shuffle=True):
    nnx.manual_seed(0)
    X, y = blobs()
    train = nnx.data.DataLoader((X[:72], y[:72]), batch_size=batch_size, shuffle=shuffle)
    val = nnx.data.DataLoader((X[72:], y[72:]), batch_size=32)
    model = mlp(dropout=dropout)
    opt = nnx.optim.Adam(model.parameters(), lr=lr)
    return model, opt, train, val


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
    model, opt, train, val = setup()
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
    model, opt, _, _ = setup()
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
    model, opt, _, _ = setup()
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
    model, opt, train, val = setup(dropout=0.5)
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
    model, opt, _, _ = setup()
    X, y = blobs(32)
    batches = [(X[i:i + 8].astype(np.float32), y[i:i + 8]) for i in range(0, 32, 8)]
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, batches, epochs=2, quiet=True)
    assert len(hist["loss"]) == 2
    with pytest.raises(TypeError, match="pair"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, [X[:4]], epochs=1, quiet=True)


def test_progress_output(backend, capsys):
    model, opt, train, val = setup()
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
    model, opt, train, _ = setup()

    def poison(trainer, epoch, logs):
        if epoch == 1:
            p = next(iter(trainer.model.parameters()))
            p.data = p.data * float("nan")

    cbs = [nnx.callbacks.LambdaCallback(on_epoch_end=poison), nnx.callbacks.ModelCheckpoint(tmp_path, monitor="loss")]
    with pytest.raises(nnx.NonFiniteError, match="weights contain NaN/Inf after epoch 2"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, callbacks=cbs, quiet=True)
    assert nnx.load_checkpoint(tmp_path / "last.nnx")["epoch"] == 0


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_match_sklearn(backend):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((40, 5))
    target = rng.integers(0, 5, 40)
    pred = scores.argmax(1)
    o, t = nnx.asarray(scores), nnx.asarray(target)
    assert nnx.metrics.Accuracy()(o, t) == pytest.approx(sk.accuracy_score(target, pred))
    assert nnx.metrics.F1Score()(o, t) == pytest.approx(sk.f1_score(target, pred, average="macro"))
    assert nnx.metrics.TopKAccuracy(3)(o, t) == pytest.approx(
        sk.top_k_accuracy_score(target, scores, k=3, labels=range(5)))
    binary_t = target % 2
    assert nnx.metrics.F1Score("binary")(nnx.asarray(scores[:, 0]), nnx.asarray(binary_t)) == pytest.approx(
        sk.f1_score(binary_t, scores[:, 0] > 0))
    assert nnx.metrics.Accuracy()(nnx.asarray(scores[:, :1]), nnx.asarray(binary_t)) == pytest.approx(
        sk.accuracy_score(binary_t, scores[:, 0] > 0))
    assert nnx.metrics.MeanAbsoluteError()(nnx.asarray(scores[:, :1]), nnx.asarray(scores[:, 1])) == pytest.approx(
        sk.mean_absolute_error(scores[:, 1], scores[:, 0]), rel=1e-6)


def test_metrics_accumulate_over_batches(backend):
    rng = np.random.default_rng(1)
    scores, target = rng.standard_normal((30, 4)), rng.integers(0, 4, 30)
    for metric in (nnx.metrics.Accuracy(), nnx.metrics.F1Score(), nnx.metrics.TopKAccuracy(2),
                   nnx.metrics.MeanAbsoluteError()):
        full_target = target if metric.name != "mae" else scores[:, ::-1]
        whole = metric(nnx.asarray(scores), nnx.asarray(full_target))
        metric.reset()
        for i in range(0, 30, 7):
            t = target[i:i + 7] if metric.name != "mae" else scores[i:i + 7, ::-1]
            metric.update(nnx.asarray(scores[i:i + 7]), nnx.asarray(t))
        assert metric.compute() == pytest.approx(whole, rel=1e-6), metric.name
        # the accumulators are arrays of the backend: nothing was read back per batch
        acc = next(getattr(metric, a) for a in ("correct", "tp", "sum") if getattr(metric, a, None) is not None)
        assert backends.backend_of(acc) is backend


def test_metric_names_and_errors():
    assert nnx.metrics.get_metric("top3_accuracy").k == 3
    assert nnx.metrics.get_metric("f1_binary").average == "binary"
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        nnx.metrics.get_metric("auc")
    with pytest.raises(ValueError, match="duplicate metric names"):
        nnx.fit(mlp(), nnx.CrossEntropyLoss(), nnx.optim.SGD(mlp().parameters()), [], metrics=["acc", "accuracy"])


# ------------------------------------------------------------------------------------------ callbacks
def trainer_stub(model=None):
    return SimpleNamespace(model=model, stop_training=False, log=lambda msg: None)


def test_early_stopping_logic_and_restore(backend):
    model = mlp()
    es = nnx.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    t = trainer_stub(model)
    best = {k: host(v).copy() for k, v in model.state_dict().items()}
    for epoch, value in enumerate([1.0, 0.5, 0.6, 0.55]):
        es.on_epoch_end(t, epoch, {"val_loss": value})
        if epoch == 1:
            best = {k: host(v).copy() for k, v in model.state_dict().items()}
        for p in model.parameters():  # training changes the weights every epoch
            p.data = p.data + 1.0
        assert t.stop_training == (epoch == 3)
    assert es.best == 0.5 and es.best_epoch == 1 and es.stopped_epoch == 3
    es.on_train_end(t)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(host(v), best[k])
    assert nnx.callbacks.EarlyStopping(monitor="val_accuracy").mode == "max"
    with pytest.raises(KeyError, match="'val_loss' is not in the epoch logs"):
        nnx.callbacks.EarlyStopping().on_epoch_end(t, 0, {"loss": 1.0})


def test_early_stopping_in_fit(backend):
    model, opt, train, _ = setup()
    es = nnx.callbacks.EarlyStopping(monitor="loss", mode="max", patience=2)  # loss keeps falling
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=20, callbacks=[es], quiet=True)
    assert len(hist) == 3 and es.stopped_epoch == 2


def test_schedulers(backend):
    model, opt, train, val = setup(lr=0.1)
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, scheduler=sched, quiet=True)
    assert hist["lr"] == pytest.approx([0.1, 0.05, 0.025])
    model, opt, train, val = setup(lr=0.1)
    plateau = nnx.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, val_loader=val, scheduler=plateau,
                   scheduler_monitor="val_loss", quiet=True)  # val_loss falls: "max" mode sees no improvement
    assert hist["lr"] == pytest.approx([0.1, 0.1, 0.05])
    model, opt, train, val = setup(lr=0.1)
    cb = nnx.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, callbacks=[cb], quiet=True)
    assert hist["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    model, opt, train, val = setup(lr=0.1)
    wrapped = nnx.callbacks.LearningRateScheduler(nnx.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1))
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, callbacks=[wrapped], quiet=True)
    assert hist["lr"] == pytest.approx([0.1, 0.01])


def test_model_checkpoint_best_and_last(backend, tmp_path):
    model, opt, train, val = setup()
    best_seen = {}

    def remember(trainer, epoch, logs):
        if logs["val_loss"] <= min(trainer.history["val_loss"]):
            best_seen.update({k: host(v).copy() for k, v in trainer.model.state_dict().items()})

    cbs = [nnx.callbacks.LambdaCallback(on_epoch_end=remember), nnx.callbacks.ModelCheckpoint(tmp_path)]
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, val_loader=val, callbacks=cbs, quiet=True)
    best = nnx.load(tmp_path / "best.nnx", backend="numpy")
    for k in best:
        np.testing.assert_array_equal(best[k], best_seen[k])
    last = nnx.load_checkpoint(tmp_path / "last.nnx")
    assert last["epoch"] == 2 and len(last["extra"]["history"]["epoch"]) == 3
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(last["model"][k], host(v))


def test_csv_and_json_loggers(backend, tmp_path):
    model, opt, train, val = setup()
    cbs = [nnx.callbacks.CSVLogger(tmp_path / "log.csv"), nnx.callbacks.JSONLogger(tmp_path / "log.jsonl")]
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, val_loader=val, metrics=["accuracy"],
                   callbacks=cbs, quiet=True)
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr" and len(lines) == 3
    assert float(lines[2].split(",")[1]) == hist["loss"][1]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["val_accuracy"] == hist["val_accuracy"][1]
    # append mode continues the same files
    cbs = [nnx.callbacks.CSVLogger(tmp_path / "log.csv", append=True),
           nnx.callbacks.JSONLogger(tmp_path / "log.jsonl", append=True)]
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=1, val_loader=val, metrics=["accuracy"],
            callbacks=cbs, quiet=True)
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3


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

    monkeypatch.setattr(nnx.training.importlib, "import_module", fake)
    h = nnx.History()
    h.append(0, {"loss": 1.0})
    with pytest.raises(ImportError, match=r"nnx-backprop\[plot\]"):
        h.plot()


# ------------------------------------------------------------------------------------------ resume (in process)
def test_resume_continues_history_and_logs(backend, tmp_path):
    model, opt, train, val = setup()
    cbs = [nnx.callbacks.ModelCheckpoint(tmp_path), nnx.callbacks.CSVLogger(tmp_path / "log.csv")]
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, val_loader=val, callbacks=cbs, quiet=True)
    model, opt, train, val = setup()
    cbs = [nnx.callbacks.ModelCheckpoint(tmp_path), nnx.callbacks.CSVLogger(tmp_path / "log.csv")]
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, val_loader=val, callbacks=cbs, quiet=True,
                   resume_from=tmp_path / "last.nnx")
    assert hist.epoch == [0, 1, 2]
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2", "3"]


def test_resume_from_foreign_checkpoint_changes_nothing(backend, tmp_path):
    model, opt, train, _ = setup()
    nnx.save_checkpoint(tmp_path / "c.nnx", model=model, optimizer=opt)  # no epoch, no history
    nnx.manual_seed(3)
    other = mlp()
    other_opt = nnx.optim.Adam(other.parameters(), lr=0.5)
    before = {k: host(v).copy() for k, v in other.state_dict().items()}
    with pytest.raises(nnx.CheckpointError, match="not a checkpoint written by fit"):
        nnx.fit(other, nnx.CrossEntropyLoss(), other_opt, train, epochs=2, quiet=True, resume_from=tmp_path / "c.nnx")
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(host(v), before[k])
    assert other_opt.param_groups[0]["lr"] == 0.5


def test_evaluate_and_predict_accept_arrays(backend):
    model, _, _, val = setup()
    X, y = blobs(96)
    a = nnx.evaluate(model, nnx.CrossEntropyLoss(), (X[72:], y[72:]), metrics=["accuracy"], batch_size=5)
    b = nnx.evaluate(model, nnx.CrossEntropyLoss(), val, metrics=["accuracy"])
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert tuple(nnx.predict(model, (X[:7], y[:7]), batch_size=3).shape) == (7, 3)


def test_evaluate_on_empty_data_is_refused_like_predict(backend):
    model = mlp()
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
    model, opt, train, _ = setup()
    before = {k: host(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"monitor='val_loss' needs validation data, but fit was given no val_loader"):
        nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, callbacks=[make(tmp_path / "ck")])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(host(v), before[k], err_msg=f"{k} trained before the refusal")
