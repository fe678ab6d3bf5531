"""The high-level training workflow: :func:`fit`, :func:`evaluate`, :func:`predict` and :class:`History`.

:func:`fit` runs the explicit nnx training step, nothing hidden::

    logits = model(x)
    loss = loss_fn(logits, y)
    model.backward(loss_fn.backward(), input_grad=False)
    optimizer.step(); optimizer.zero_grad()

and around it: validation under ``nnx.no_grad()`` and ``model.eval()`` (train mode restored), a
tqdm progress bar per epoch, metrics and the running loss accumulated **on the device** and read
to the host only every ``log_every`` batches and at the end of each epoch (no per-batch
synchronisation), a NaN/Inf guard, a learning-rate scheduler, callbacks and exact resumption from
a training checkpoint.

>>> import numpy as np
>>> X = np.random.default_rng(0).standard_normal((96, 4)); y = (X[:, 0] > 0).astype(int)   # tiny data
>>> train_loader = nnx.data.DataLoader((X[:64], y[:64]), batch_size=16, shuffle=True, seed=0)
>>> val_loader = test_loader = nnx.data.DataLoader((X[64:], y[64:]), batch_size=32)
>>> model = nnx.Sequential(nnx.Linear(4, 16), nnx.ReLU(), nnx.Linear(16, 2))
>>> opt = nnx.optim.Adam(model.parameters(), lr=0.05)
>>> history = nnx.fit(model, nnx.CrossEntropyLoss(), opt, train_loader, epochs=10,
...                   val_loader=val_loader, metrics=["accuracy"], quiet=True)   # quiet: no progress output
>>> history["val_accuracy"][-1] > 0.8
True
>>> sorted(nnx.evaluate(model, nnx.CrossEntropyLoss(), test_loader, metrics=["accuracy", "f1"]))
['accuracy', 'f1', 'loss']
>>> probs = nnx.predict(model, X[64:], batch_size=256)
>>> tuple(probs.shape)
(32, 2)
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import nnx_backends as backends

from . import distributed
from .backend import asarray, to_numpy, use_backend
from .callbacks import Callback, step_scheduler
from .errors import NonFiniteError
from .grad_mode import no_grad
from .history import History
from .metrics import Mean, Metric, get_metric
from .module import Module
from .optim import clip_grad_norm_

__all__ = ["History", "NonFiniteError", "Trainer", "evaluate", "fit", "predict"]


# ---------------------------------------------------------------------------------------- helpers
def _metrics(specs: Iterable[str | Metric] | str | Metric | None) -> list[Metric]:
    if specs is None:
        return []
    if isinstance(specs, (str, Metric)):
        specs = [specs]
    out = [get_metric(s) for s in specs]
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate metric names {names}; give metrics distinct name= arguments")
    return out


def _split_batch(batch: Any, where: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    length = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
    raise TypeError(f"{where}: each batch must be a pair (inputs, targets), got {type(batch).__name__}{length}")


def _place(x: Any, b: backends.Backend) -> Any:
    """Arrays from a plain iterable that are not on the model's backend go there (one transfer)."""
    if b.owns(x) and b.device_of(x) == b.device:
        return x
    return asarray(x, backend=b)


def _read_many(arrays: list[Any]) -> list[float]:
    """One host read for several 0-d device arrays."""
    b = backends.backend_of(arrays[0])
    xp = b.xp
    dtype = arrays[0].dtype
    stacked = xp.stack([a if a.dtype == dtype else xp.astype(a, dtype) for a in arrays])
    return [float(v) for v in to_numpy(stacked).reshape(-1).tolist()]


class _Modes:
    """Remember each submodule's training flag and restore it exactly."""

    def __init__(self, model: Module) -> None:
        self.flags = [(m, m.training) for m in model.modules()]

    def restore(self) -> None:
        for m, flag in self.flags:
            object.__setattr__(m, "training", flag)


def _len_or_none(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # a widget in notebooks, a text bar in terminals

    # disable=None: tqdm turns itself off when stderr is not a terminal
    return tqdm(total=total, desc=desc, disable=None if enabled else True, leave=True, dynamic_ncols=True,
                unit="batch", file=sys.stderr)


def _fmt(logs: dict[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())


# ---------------------------------------------------------------------------------------- evaluate / predict
def _as_loader(data: Any, batch_size: int) -> Any:
    """Arrays, or a tuple ``(X, y)`` of arrays, become a DataLoader; loaders pass through."""
    from .data import DataLoader

    if (hasattr(data, "shape") and hasattr(data, "dtype")) or (
            isinstance(data, tuple) and data and all(hasattr(t, "shape") for t in data)):
        return DataLoader(data, batch_size=batch_size)
    return data


def evaluate(model: Module, loss_fn: Module | None, loader: Any, metrics: Iterable[str | Metric] | None = None,
             *, prefix: str = "", batch_size: int = 256) -> dict[str, float]:
    """Loss and metrics of ``model`` over ``loader`` (pairs ``(x, y)``, or a tuple of arrays
    ``(X, y)`` split into batches of ``batch_size``), without training.

    Runs under ``nnx.no_grad()`` in eval mode (dropout off, running statistics used); every
    submodule's training flag is restored afterwards. The loss is the batch losses' mean weighted
    by batch size (exact for ``reduction="mean"``). Metrics accumulate on the device and are read
    once at the end. Returns ``{"loss": ..., "accuracy": ...}`` (keys prefixed with ``prefix``).

    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((40, 4)); y = np.arange(40) % 3   # tiny random data
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 3))
    >>> scores = nnx.evaluate(model, nnx.CrossEntropyLoss(), (X, y), batch_size=16, metrics=["accuracy"])
    >>> sorted(scores), 0.0 <= scores["accuracy"] <= 1.0
    (['accuracy', 'loss'], True)
    """
    loader = _as_loader(loader, batch_size)
    ms = [copy.deepcopy(m) for m in _metrics(metrics)]
    for m in ms:
        m.reset()
    loss_mean = Mean()
    modes = _Modes(model)
    b = model.backend
    model.eval()
    seen = 0
    try:
        with no_grad(), use_backend(b):
            for batch in loader:
                x, y = _split_batch(batch, "evaluate")
                seen += int(x.shape[0])
                x, y = _place(x, b), _place(y, b)
                out = model(x)
                if loss_fn is not None:
                    loss_mean.update(loss_fn(out, y), int(x.shape[0]))
                for m in ms:
                    m.update(out, y)
    finally:
        modes.restore()
    model.raise_deferred_errors()
    if seen == 0:
        raise ValueError("evaluate: the data is empty (no batch, or only empty batches); there is nothing to "
                         "average")
    logs: dict[str, float] = {}
    if loss_fn is not None:
        logs[prefix + "loss"] = loss_mean.compute()
    for m in ms:
        logs[prefix + m.name] = m.compute()
    return logs


def predict(model: Module, data: Any, batch_size: int = 256) -> Any:
    """Model outputs for ``data``, concatenated along the first axis, on the model's backend.

    ``data`` is an array (host or backend; split into batches of ``batch_size``), a tuple
    ``(X, y)`` of arrays, or a loader yielding arrays or ``(x, y)`` pairs (targets ignored).
    Runs in eval mode under ``no_grad``; training flags are restored.

    >>> import numpy as np
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 3))
    >>> logits = nnx.predict(model, np.zeros((10, 4)), batch_size=4)   # (N, C), on the model's backend
    >>> tuple(logits.shape)
    (10, 3)
    """
    data = _as_loader(data, batch_size)
    modes = _Modes(model)
    b = model.backend
    model.eval()
    outs = []
    try:
        with no_grad(), use_backend(b):
            for batch in data:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                outs.append(model(_place(x, b)))
    finally:
        modes.restore()
    model.raise_deferred_errors()
    if not outs:
        raise ValueError("predict: the data is empty")
    return backends.backend_of(outs[0]).xp.concat(outs, axis=0)


# ---------------------------------------------------------------------------------------- the trainer
class Trainer:
    """The state of one :func:`fit` run, handed to callbacks.

    Attributes: ``model``, ``loss_fn``, ``optimizer``, ``scheduler``, ``train_loader``,
    ``val_loader``, ``metrics``, ``callbacks``, ``history``, ``epoch`` (current, from 0),
    ``epochs`` (total), ``stop_training`` (set True to stop after this epoch), ``verbose``.
    """

    def __init__(self, model: Module, loss_fn: Module, optimizer: Any, train_loader: Any, *, epochs: int,
                 val_loader: Any = None, metrics: Iterable[str | Metric] | None = None,
                 callbacks: Sequence[Callback] | None = None, scheduler: Any = None,
                 scheduler_monitor: str | None = None, log_every: int | None = None, stop_on_nonfinite: bool = True,
                 verbose: bool = True, clip_grad_norm: float | None = None) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"fit: model must be an nnx.Module, got {type(model).__name__}")
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "zero_grad"):
            raise TypeError(f"fit: optimizer must be an nnx optimizer, got {type(optimizer).__name__}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
        if log_every is None:  # about 10 reads per epoch, at most every 50 batches
            n = _len_or_none(train_loader)
            log_every = 50 if n is None else max(1, min(50, n // 10))
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"fit: log_every must be a positive integer, got {log_every!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.train_loader, self.val_loader = train_loader, val_loader
        self.metrics = _metrics(metrics)
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks must be nnx.callbacks.Callback instances, got {type(cb).__name__}")
        self.scheduler, self.scheduler_monitor = scheduler, scheduler_monitor
        self.epochs, self.log_every = epochs, log_every
        self.stop_on_nonfinite, self.verbose, self.clip_grad_norm = stop_on_nonfinite, verbose, clip_grad_norm
        self.history = History()
        self.epoch = 0
        self.stop_training = False
        #: True when this run continues from a checkpoint (loggers then append to their files)
        self.resumed = False

    # ------------------------------------------------------------------ messages
    def log(self, message: str) -> None:
        """Print a message (above the progress bar) unless quiet; on rank 0 only."""
        if self.verbose and distributed.get_rank() == 0:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    # ------------------------------------------------------------------ checks
    def check_weights_finite(self, epoch: int, where: str = "fit") -> None:
        """Raise :class:`NonFiniteError` if any parameter holds NaN/Inf (one host read)."""
        params = [p.data for p in self.model.parameters()]
        if not params:
            return
        xp = backends.backend_of(params[0]).xp
        flags = xp.stack([xp.all(xp.isfinite(p)) for p in params])
        if not bool(to_numpy(xp.all(flags))):
            raise NonFiniteError(f"{where}: the model weights contain NaN/Inf after epoch {epoch + 1}; nothing was "
                                 "saved, the previous checkpoint is intact", epoch=epoch)

    # ------------------------------------------------------------------ checkpoints
    def _loaders(self) -> dict[str, Any]:
        return {k: ld for k, ld in (("train", self.train_loader), ("val", self.val_loader))
                if ld is not None and hasattr(ld, "state_dict")}

    def save_checkpoint(self, path: str | os.PathLike, epoch: int | None = None) -> None:
        """A full training checkpoint after ``epoch`` (model, optimizer, scheduler, RNGs, loaders,
        history, callback states); ``fit(..., resume_from=path)`` continues from it exactly.
        Only rank 0 writes (every rank holds the same weights)."""
        from .serialization import save_checkpoint

        if distributed.get_rank() != 0:
            return
        extra = {
            "history": self.history.state_dict(),
            "loaders": {k: ld.state_dict() for k, ld in self._loaders().items()},
            "callbacks": [{"type": type(cb).__name__, "state": cb.state_dict()} for cb in self.callbacks],
        }
        save_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        epoch=self.epoch if epoch is None else epoch, extra=extra)

    def load_checkpoint(self, path: str | os.PathLike) -> int:
        """Restore a checkpoint from :meth:`save_checkpoint`; returns the next epoch. All or nothing."""
        from .serialization import CheckpointError, StateSnapshot, load_checkpoint

        snap = StateSnapshot(self.model, self.optimizer, self.scheduler)
        loaders = self._loaders()
        saved_parts = [(obj, obj.state_dict()) for obj in [*loaders.values(), *self.callbacks]]
        info = load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        try:
            extra = info.get("extra") or {}
            if info.get("epoch") is None or not isinstance(extra, dict) or "history" not in extra:
                raise CheckpointError(f"fit(resume_from={os.fspath(path)!r}): not a checkpoint written by fit or "
                                      "ModelCheckpoint (no epoch or history); load it with nnx.load_checkpoint")
            history = History()
            history.load_state_dict(extra["history"])
            loader_states, saved = extra.get("loaders") or {}, extra.get("callbacks") or []
            if not isinstance(loader_states, dict) or not isinstance(saved, list):
                raise CheckpointError(f"fit(resume_from={os.fspath(path)!r}): malformed loader or callback states")
            for k, st in loader_states.items():
                if k in loaders:
                    loaders[k].load_state_dict(st)
            for cb, entry in zip(self.callbacks, saved, strict=False):  # matched by type; extra entries ignored
                if isinstance(entry, dict) and entry.get("type") == type(cb).__name__ and entry.get("state"):
                    cb.load_state_dict(entry["state"])
        except BaseException:
            for obj, st in saved_parts:  # loaders and callbacks back to their states before the call
                obj.load_state_dict(st)
            snap.restore()
            raise
        self.history = history
        self.resumed = True
        return int(info["epoch"]) + 1

    # ------------------------------------------------------------------ the loop
    def run(self, initial_epoch: int = 0) -> History:
        """Train from ``initial_epoch`` to ``epochs``; returns the history.

        With several MPI ranks (:mod:`nnx.distributed`), the logged loss and metrics are averaged
        over ranks, and callbacks marked ``rank_zero_only`` (checkpoints, file loggers) run on rank 0.
        """
        active = [cb for cb in self.callbacks
                  if distributed.get_rank() == 0 or not getattr(cb, "rank_zero_only", False)]
        for cb in active:
            cb.on_train_begin(self)
        for epoch in range(initial_epoch, self.epochs):
            self.epoch = epoch
            for cb in active:
                cb.on_epoch_begin(self, epoch)
            lr = self.optimizer.param_groups[0].get("lr") if getattr(self.optimizer, "param_groups", None) else None
            logs = self._train_epoch(epoch)
            if self.val_loader is not None:
                logs.update(evaluate(self.model, self.loss_fn, self.val_loader, self.metrics, prefix="val_"))
            if distributed.get_world_size() > 1:
                logs = distributed.all_reduce_scalars(logs, "mean")
            if lr is not None:
                logs["lr"] = float(lr)
            self.history.append(epoch, logs)
            if self.scheduler is not None:
                step_scheduler(self.scheduler, logs, self.scheduler_monitor)
            for cb in active:
                cb.on_epoch_end(self, epoch, logs)
            self.log(f"Epoch {epoch + 1}/{self.epochs} - {_fmt(logs)}")
            if self.stop_training:
                break
        for cb in active:
            cb.on_train_end(self)
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        model, loss_fn, opt = self.model, self.loss_fn, self.optimizer
        for m in self.metrics:
            m.reset()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        b = model.backend
        model.train()
        bar = _progress(_len_or_none(self.train_loader), f"Epoch {epoch + 1}/{self.epochs}",
                        self.verbose and distributed.get_rank() == 0)
        loss_sum: Any = None
        bad: Any = None
        good_prefix: Any = None
        count = 0
        step = -1
        logs: dict[str, float] = {}
        try:
            with use_backend(b):
                for step, batch in enumerate(self.train_loader):
                    x, y = _split_batch(batch, "fit")
                    x, y = _place(x, b), _place(y, b)
                    logits = model(x)
                    loss = loss_fn(logits, y)
                    model.backward(loss_fn.backward(), input_grad=False)
                    if self.clip_grad_norm is not None:
                        clip_grad_norm_(model.parameters(), self.clip_grad_norm)
                    opt.step()
                    opt.zero_grad()
                    # device-side bookkeeping: no host synchronisation here
                    n = int(x.shape[0])
                    xp = b.xp
                    weighted = loss * float(n)
                    is_bad = xp.astype(xp.logical_not(xp.isfinite(loss)), xp.int64)
                    if loss_sum is None:
                        loss_sum, bad = weighted, is_bad
                        good_prefix = xp.astype(bad == 0, xp.int64)
                    else:
                        loss_sum, bad = loss_sum + weighted, bad + is_bad
                        good_prefix = good_prefix + xp.astype(bad == 0, xp.int64)
                    count += n
                    for m in self.metrics:
                        m.update(logits, y)
                    self.last_loss = loss  # this batch's loss, a 0-d device array (for callbacks; not read here)
                    for cb in self.callbacks:
                        cb.on_batch_end(self, step)
                    if (step + 1) % self.log_every == 0:
                        logs = self._log_step(epoch, step, loss_sum, bad, good_prefix, count, bar)
                    bar.update(1)
            if step < 0:
                raise ValueError(f"fit: the training loader yielded no batch in epoch {epoch + 1}")
            if (step + 1) % self.log_every != 0:
                logs = self._log_step(epoch, step, loss_sum, bad, good_prefix, count, bar)
        finally:
            bar.close()
        return logs

    def _log_step(self, epoch: int, step: int, loss_sum: Any, bad: Any, good_prefix: Any, count: int,
                  bar: Any) -> dict[str, float]:
        total, n_bad, first_bad = _read_many([loss_sum, bad, good_prefix])  # the one read of this log step
        self.model.raise_deferred_errors()  # device-recorded input errors (token ids out of range on a GPU)
        if n_bad > 0 and self.stop_on_nonfinite:
            raise NonFiniteError(
                f"fit: the training loss became NaN/Inf at epoch {epoch + 1}, batch {int(first_bad) + 1} "
                f"(detected at batch {step + 1}; {int(n_bad)} non-finite batch losses). Training stopped before "
                "any checkpoint of this epoch was written; lower the learning rate, clip gradients "
                "(clip_grad_norm=...) or check the data, or pass stop_on_nonfinite=False",
                epoch=epoch, step=int(first_bad))
        logs = {"loss": total / count}
        for m in self.metrics:
            logs[m.name] = m.compute()
        if not bar.disable:
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
        return logs


# ---------------------------------------------------------------------------------------- fit
def fit(model: Module, loss_fn: Module, optimizer: Any, train_loader: Any, epochs: int = 1, val_loader: Any = None,
        metrics: Iterable[str | Metric] | None = None, callbacks: Sequence[Callback] | None = None,
        scheduler: Any = None, *, scheduler_monitor: str | None = None, verbose: bool = True, quiet: bool = False,
        log_every: int | None = None, stop_on_nonfinite: bool = True, clip_grad_norm: float | None = None,
        initial_epoch: int = 0, resume_from: str | os.PathLike | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs over ``train_loader``; returns a :class:`History`.

    Args:
        model, loss_fn, optimizer: an nnx Module, loss Module and optimizer.
        train_loader: an :class:`nnx.data.DataLoader` (its shuffle order is set per epoch with
            ``set_epoch``, which makes resuming exact) or any iterable of ``(x, y)`` pairs.
        epochs: the total number of epochs (counting those done before a resume).
        val_loader: evaluated after each epoch (``val_loss``, ``val_<metric>``).
        metrics: names (``"accuracy"``, ``"top5_accuracy"``, ``"mae"``, ``"f1"``, ``"f1_binary"``)
            or :class:`nnx.metrics.Metric` objects, computed on the training batches and on
            ``val_loader``.
        callbacks: :mod:`nnx.callbacks` objects (EarlyStopping, ModelCheckpoint, CSVLogger, ...).
        scheduler: an ``nnx.optim.lr_scheduler`` stepped after every epoch; ``ReduceLROnPlateau``
            is stepped with ``logs[scheduler_monitor]`` (default ``"val_loss"``, else ``"loss"``).
        verbose / quiet: progress bar per epoch (``quiet=True`` or ``verbose=False`` silences
            everything; the bar also turns itself off when stderr is not a terminal, and a one-line
            summary per epoch is printed instead).
        log_every: read the running loss and metrics (one host synchronisation) every this many
            batches, for the progress bar and the NaN/Inf check, and at the end of each epoch.
            Default: a tenth of an epoch, at most 50 batches.
        stop_on_nonfinite: raise :class:`NonFiniteError` (naming the epoch and the first bad
            batch) when a training loss is NaN/Inf. It is detected at the next log step, always
            before any callback of that epoch runs, so no checkpoint of a diverged model is written.
        clip_grad_norm: clip the global gradient norm to this value before each step.
        initial_epoch: the first epoch to run (when continuing by hand).
        resume_from: a training checkpoint from :class:`nnx.callbacks.ModelCheckpoint` (``last.nnx``)
            or ``Trainer.save_checkpoint``: restores model, optimizer, scheduler, random generators,
            loader seeds, history and callback states, and continues after its epoch. The result
            equals an uninterrupted run bit for bit on NumPy (to float tolerance elsewhere).

    The step is nnx's explicit one: ``loss = loss_fn(model(x), y)``,
    ``model.backward(loss_fn.backward(), input_grad=False)``, ``optimizer.step()``,
    ``optimizer.zero_grad()``. Batches not on the model's backend are moved there; a DataLoader
    without ``backend=`` collates straight to the model's backend.
    """
    trainer = Trainer(model, loss_fn, optimizer, train_loader, epochs=epochs, val_loader=val_loader,
                      metrics=metrics, callbacks=callbacks, scheduler=scheduler, scheduler_monitor=scheduler_monitor,
                      log_every=log_every, stop_on_nonfinite=stop_on_nonfinite, verbose=verbose and not quiet,
                      clip_grad_norm=clip_grad_norm)
    start = initial_epoch
    if resume_from is not None:
        start = trainer.load_checkpoint(resume_from)
        trainer.log(f"Resumed from {os.fspath(resume_from)!r} after epoch {start}")
    return trainer.run(start)
