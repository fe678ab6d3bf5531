"""nnx.callbacks: EarlyStopping, learning-rate schedulers in fit, ModelCheckpoint, CSV and JSON loggers, on
every backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnx

from helpers import fit_setup, host, small_mlp, trainer_stub


def test_early_stopping_logic_and_restore(backend):
    model = small_mlp()
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
    model, opt, train, _ = fit_setup()
    es = nnx.callbacks.EarlyStopping(monitor="loss", mode="max", patience=2)  # loss keeps falling
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=20, callbacks=[es], quiet=True)
    assert len(hist) == 3 and es.stopped_epoch == 2


def test_schedulers(backend):
    model, opt, train, val = fit_setup(lr=0.1)
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, scheduler=sched, quiet=True)
    assert hist["lr"] == pytest.approx([0.1, 0.05, 0.025])
    model, opt, train, val = fit_setup(lr=0.1)
    plateau = nnx.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, val_loader=val, scheduler=plateau,
                   scheduler_monitor="val_loss", quiet=True)  # val_loss falls: "max" mode sees no improvement
    assert hist["lr"] == pytest.approx([0.1, 0.1, 0.05])
    model, opt, train, val = fit_setup(lr=0.1)
    cb = nnx.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, callbacks=[cb], quiet=True)
    assert hist["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    model, opt, train, val = fit_setup(lr=0.1)
    wrapped = nnx.callbacks.LearningRateScheduler(nnx.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1))
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=2, callbacks=[wrapped], quiet=True)
    assert hist["lr"] == pytest.approx([0.1, 0.01])


def test_model_checkpoint_best_and_last(backend, tmp_path):
    model, opt, train, val = fit_setup()
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
    model, opt, train, val = fit_setup()
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
