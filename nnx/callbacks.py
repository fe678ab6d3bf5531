"""Callbacks for :func:`nnx.fit`: early stopping, learning-rate schedules, checkpoints, CSV/JSON logs.

A callback overrides any of these hooks; each receives the :class:`nnx.training.Trainer`
(``trainer.model``, ``.optimizer``, ``.scheduler``, ``.history``, ``.stop_training``):

* ``on_train_begin(trainer)`` / ``on_train_end(trainer)``
* ``on_epoch_begin(trainer, epoch)`` / ``on_epoch_end(trainer, epoch, logs)`` — ``logs`` maps
  ``"loss"``, ``"val_loss"``, metric names (``"accuracy"``, ``"val_accuracy"``) and ``"lr"`` to
  Python floats, read once at the end of the epoch
* ``on_batch_end(trainer, step)`` — no logs (reading the loss would synchronise the device)

Callbacks with state that matters for an exact resume (``EarlyStopping``'s best value and
patience counter, ``ModelCheckpoint``'s best value) implement ``state_dict``/``load_state_dict``;
:func:`nnx.fit` stores those in its training checkpoints.

Epochs are counted from 0 in the API (``epoch=0`` is the first) and shown from 1 in messages.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nnx_backends as backends

from .errors import NonFiniteError  # noqa: F401  (re-exported: nnx.callbacks.NonFiniteError)

if TYPE_CHECKING:
    from .training import Trainer

__all__ = [
    "Callback",
    "CSVLogger",
    "EarlyStopping",
    "JSONLogger",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "NonFiniteError",
]


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first epoch (after a resume has been loaded)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once after the last epoch (not when training stops with an error)."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Called before each epoch's first batch."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch, its validation and the scheduler step, with the epoch's logs."""

    def on_batch_end(self, trainer: Trainer, step: int) -> None:
        """Called after each optimizer step (``step`` counts from 0 within the epoch)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (arrays allowed) saved in training checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def _resolve_mode(mode: str, monitor: str, where: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{where}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if any(s in name for s in ("acc", "f1", "auc", "precision", "recall")) else "min"


def _monitored(logs: dict[str, float], monitor: str, where: str) -> float:
    if monitor not in logs:
        raise KeyError(f"{where}: monitored quantity {monitor!r} is not in the epoch logs {sorted(logs)}; "
                       "pass val_loader= to fit for 'val_*' quantities, or monitor one of these")
    return float(logs[monitor])


def _check_monitor_at_start(trainer: Any, monitor: str, where: str) -> None:
    """Refuse at the start of fit, not after the first epoch, a ``val_*`` quantity without validation data."""
    if monitor.startswith("val_") and getattr(trainer, "val_loader", None) is None:
        raise ValueError(f"{where}: monitor={monitor!r} needs validation data, but fit was given no val_loader; "
                         f"pass val_loader= to fit, or monitor {monitor[4:]!r} (the training quantity)")


class _Monitor:
    def __init__(self, monitor: str, mode: str, min_delta: float, where: str) -> None:
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor, where)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


def _copy_state(model: Any) -> dict[str, Any]:
    out = {}
    for k, v in model.state_dict().items():
        xp = backends.backend_of(v).xp
        out[k] = xp.asarray(v, copy=True)  # a device copy: no host round trip
    return out


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs (``"val_loss"``, ``"val_accuracy"``, ``"loss"``).
        patience: epochs without improvement before stopping.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy/F1-like names, else min).
        min_delta: the least change that counts as an improvement.
        restore_best_weights: at the end of training, load the weights of the best epoch (kept
            as a copy on the device, and stored in training checkpoints).

    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((48, 4)); y = np.arange(48) % 2   # labels are noise
    >>> train, val = nnx.data.DataLoader((X[:32], y[:32]), batch_size=16), nnx.data.DataLoader((X[32:], y[32:]))
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    >>> loss_fn, opt = nnx.CrossEntropyLoss(), nnx.optim.Adam(model.parameters(), lr=0.05)
    >>> history = nnx.fit(model, loss_fn, opt, train, epochs=100, val_loader=val, quiet=True,
    ...                   callbacks=[nnx.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
    >>> len(history["loss"]) < 100                  # stopped once val_loss stopped improving
    True
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, mode: str = "auto", min_delta: float = 0.0,
                 restore_best_weights: bool = False) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be a non-negative integer, got {patience!r}")
        self._m = _Monitor(monitor, mode, min_delta, "EarlyStopping")
        self.monitor, self.mode, self.patience = monitor, self._m.mode, patience
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, Any] | None = None

    @property
    def best(self) -> float:
        return self._m.best

    def on_train_begin(self, trainer: Trainer) -> None:
        _check_monitor_at_start(trainer, self.monitor, "EarlyStopping")

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._m.improved(value):
            self._m.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = _copy_state(trainer.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True
            best_at = self.best_epoch + 1 if self.best_epoch is not None else "-"
            trainer.log(f"EarlyStopping: {self.monitor} has not improved for {self.wait} epochs "
                        f"(best {self._m.best:.6g} at epoch {best_at}); stopping after epoch {epoch + 1}")

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)
            trainer.log(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1}")

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"best": self._m.best, "wait": self.wait, "best_epoch": self.best_epoch}
        if self.best_weights is not None:
            out["best_weights"] = dict(self.best_weights)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, best_epoch = _checked_best_state("EarlyStopping", state)
        wait, bw = state.get("wait"), state.get("best_weights")
        if isinstance(wait, bool) or not isinstance(wait, int) or wait < 0:
            raise ValueError(f"EarlyStopping.load_state_dict: 'wait' must be an integer >= 0, got {wait!r}")
        if bw is not None and not isinstance(bw, dict):
            raise ValueError(f"EarlyStopping.load_state_dict: 'best_weights' must be a dict of arrays or None, "
                             f"got {type(bw).__name__}")
        self._m.best, self.wait, self.best_epoch = best, wait, best_epoch
        self.best_weights = dict(bw) if bw is not None else None  # host arrays: loaded into the model at the end


class LearningRateScheduler(Callback):
    """Set the learning rate every epoch.

    ``schedule`` is either a function ``schedule(epoch, lr) -> new_lr`` (called before each
    epoch, Keras style, for every parameter group) or an ``nnx.optim.lr_scheduler`` object,
    stepped after each epoch; a ``ReduceLROnPlateau`` is stepped with ``logs[monitor]``
    (``monitor`` defaults to ``"val_loss"`` when present, else ``"loss"``). Passing the
    scheduler as ``fit(..., scheduler=...)`` does the same and stores it in checkpoints.
    """

    def __init__(self, schedule: Callable[[int, float], float] | Any, monitor: str | None = None) -> None:
        self.schedule = schedule
        self.monitor = monitor
        self._is_scheduler = hasattr(schedule, "step") and hasattr(schedule, "state_dict")
        if not self._is_scheduler and not callable(schedule):
            raise TypeError(f"LearningRateScheduler: expected a function (epoch, lr) -> lr or an nnx LR scheduler, "
                            f"got {type(schedule).__name__}")

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if self._is_scheduler:
            return
        for g in trainer.optimizer.param_groups:
            lr = self.schedule(epoch, g["lr"])
            if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
                raise ValueError(f"LearningRateScheduler: schedule({epoch}, {g['lr']}) returned {lr!r}, "
                                 "expected a non-negative float")
            g["lr"] = float(lr)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self._is_scheduler:
            step_scheduler(self.schedule, logs, self.monitor)

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.schedule.state_dict()} if self._is_scheduler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._is_scheduler and "scheduler" in state:
            self.schedule.load_state_dict(dict(state["scheduler"]))


def _is_plateau(scheduler: Any) -> bool:
    from .optim.lr_scheduler import ReduceLROnPlateau

    return isinstance(scheduler, ReduceLROnPlateau)


def step_scheduler(scheduler: Any, logs: dict[str, float], monitor: str | None) -> None:
    """Step ``scheduler`` once at the end of an epoch (with the monitored value for a plateau one)."""
    if _is_plateau(scheduler):
        key = monitor or ("val_loss" if "val_loss" in logs else "loss")
        scheduler.step(_monitored(logs, key, "ReduceLROnPlateau"))
    else:
        scheduler.step()


class ModelCheckpoint(Callback):
    """Save the best and the last model of a run into ``dirpath``.

    * ``best.nnx``: rewritten whenever ``monitor`` improves (``save_best``); weights only (load
      with ``nnx.load``) unless ``weights_only=False``.
    * ``last.nnx``: after every epoch (``save_last``), a full training checkpoint — model,
      optimizer, scheduler, random generator states, data loader positions, history and callback
      states — from which ``nnx.fit(..., resume_from=path)`` continues exactly.

    Every save is atomic, and before each save the weights are checked to be finite: a run that
    diverged raises :class:`NonFiniteError` and the last good checkpoint stays on disk.

    >>> import numpy as np, os, tempfile
    >>> X = np.random.default_rng(0).standard_normal((48, 4)); y = (X[:, 0] > 0).astype(int)   # tiny data
    >>> train, val = nnx.data.DataLoader((X[:32], y[:32]), batch_size=16), nnx.data.DataLoader((X[32:], y[32:]))
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    >>> loss_fn, opt = nnx.CrossEntropyLoss(), nnx.optim.SGD(model.parameters(), lr=0.1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ckpt = nnx.callbacks.ModelCheckpoint(os.path.join(tmp, "mlp"), monitor="val_accuracy")
    ...     _ = nnx.fit(model, loss_fn, opt, train, epochs=3, val_loader=val, metrics=["accuracy"],
    ...                 callbacks=[ckpt], quiet=True)
    ...     sorted(os.listdir(os.path.join(tmp, "mlp")))
    ['best.nnx', 'last.nnx']
    """

    #: runs on rank 0 only in multi-process training (nnx.distributed)
    rank_zero_only = True

    def __init__(self, dirpath: str | os.PathLike, monitor: str = "val_loss", mode: str = "auto",
                 save_best: bool = True, save_last: bool = True, weights_only: bool = True,
                 best_name: str = "best.nnx", last_name: str = "last.nnx", check_finite: bool = True) -> None:
        self.dirpath = os.fspath(dirpath)
        self._m = _Monitor(monitor, mode, 0.0, "ModelCheckpoint")
        self.monitor, self.mode = monitor, self._m.mode
        self.save_best, self.save_last, self.weights_only = save_best, save_last, weights_only
        self.best_path = os.path.join(self.dirpath, best_name)
        self.last_path = os.path.join(self.dirpath, last_name)
        self.check_finite = check_finite
        self.best_epoch: int | None = None

    @property
    def best(self) -> float:
        return self._m.best

    def on_train_begin(self, trainer: Trainer) -> None:
        if self.save_best:
            _check_monitor_at_start(trainer, self.monitor, "ModelCheckpoint")
        os.makedirs(self.dirpath, exist_ok=True)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        improved = False
        if self.save_best:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            improved = self._m.improved(value)
        if not (improved or self.save_last):
            return
        if self.check_finite:
            trainer.check_weights_finite(epoch, "ModelCheckpoint")
        if improved:
            self._m.best = value
            self.best_epoch = epoch
            if self.weights_only:
                from .serialization import save

                save(trainer.model, self.best_path)
            else:
                trainer.save_checkpoint(self.best_path, epoch)
        if self.save_last:
            trainer.save_checkpoint(self.last_path, epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self._m.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._m.best, self.best_epoch = _checked_best_state("ModelCheckpoint", state)


def _checked_best_state(name: str, state: Any) -> tuple[float, int | None]:
    """``best`` (a number, not NaN) and ``best_epoch`` (None or an integer >= 0) of a saved callback state."""
    where = f"{name}.load_state_dict"
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected a dict, got {type(state).__name__}")
    best, best_epoch = state.get("best"), state.get("best_epoch")
    if isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best):
        raise ValueError(f"{where}: 'best' must be a number, got {best!r}")
    if best_epoch is not None and (isinstance(best_epoch, bool) or not isinstance(best_epoch, int) or best_epoch < 0):
        raise ValueError(f"{where}: 'best_epoch' must be None or an integer >= 0, got {best_epoch!r}")
    return float(best), best_epoch


def _clean(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else None


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` counted from 1, then the logs) to a CSV file.

    The file is flushed after every row. ``append=True`` keeps an existing file; otherwise it
    is replaced at the start of training, except when ``fit`` resumes from a checkpoint.
    """

    #: runs on rank 0 only in multi-process training (nnx.distributed)
    rank_zero_only = True

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._file: Any = None
        self._writer: Any = None
        self._keys: list[str] | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        append = self.append or getattr(trainer, "resumed", False)
        exists = append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._keys = None
        if exists:
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header else None
        self._file = open(self.filename, "a" if exists else "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self._keys is None:
            self._keys = list(logs)
            self._writer.writerow(["epoch", *self._keys])
        self._writer.writerow([epoch + 1, *(logs.get(k, "") for k in self._keys)])
        self._file.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class JSONLogger(Callback):
    """Append one JSON object per epoch (``{"epoch": 1, "loss": ..., ...}``, JSON Lines) to a file.

    NaN and infinite values are written as ``null`` (strict JSON). ``append=True`` keeps an
    existing file; a resumed ``fit`` always appends.
    """

    #: runs on rank 0 only in multi-process training (nnx.distributed)
    rank_zero_only = True

    def __init__(self, filename: str | os.PathLike, append: bool = False) -> None:
        self.filename = os.fspath(filename)
        self.append = append

    def on_train_begin(self, trainer: Trainer) -> None:
        if not (self.append or getattr(trainer, "resumed", False)):
            with open(self.filename, "w"):
                pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        record = {"epoch": epoch + 1, **{k: _clean(v) for k, v in logs.items()}}
        with open(self.filename, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda trainer, epoch, logs: ...)``."""

    def __init__(self, on_train_begin: Callable | None = None, on_train_end: Callable | None = None,
                 on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_batch_end: Callable | None = None) -> None:
        for name, fn in (("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_batch_end", on_batch_end)):
            if fn is not None:
                setattr(self, name, fn)


def __getattr__(name: str) -> Any:
    if name == "TensorBoard":  # defined in nnx/tensorboard.py (needs the optional tensorboardX only when built)
        from .tensorboard import TensorBoard

        return TensorBoard
    raise AttributeError(f"module 'nnx.callbacks' has no attribute {name!r}")
