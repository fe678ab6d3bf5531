"""``TensorBoard``: a :func:`nnx.fit` callback that writes TensorBoard event files (through tensorboardX).

Install the optional extra: ``pip install 'nnx-backprop[tensorboard]'`` (tensorboardX), then
``tensorboard --logdir runs/`` shows the run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .backend import to_numpy
from .callbacks import Callback

if TYPE_CHECKING:
    from .training import Trainer

__all__ = ["TensorBoard"]


class TensorBoard(Callback):
    """Log a run of :func:`nnx.fit` for TensorBoard.

    Writes, under ``log_dir``:

    - ``train/loss`` and ``train/lr`` (one curve per parameter group beyond the first:
      ``train/lr_group1``, ...) every ``log_every_n_steps`` optimizer steps (default: fit's
      ``log_every``); each such point reads the batch loss to the host once;
    - ``epoch/<name>`` for every value of the epoch's logs (loss, val_loss, metrics, lr), against
      the epoch number counted from 1;
    - histograms ``weights/<param>`` and ``grads/<param>`` every ``histogram_every_n_steps`` steps
      (0: never), the gradients taken just before the optimizer step;
    - the model's ``repr`` and parameter count as text (``model``), once.

    >>> import pytest; _ = pytest.importorskip("tensorboardX")   # pip install 'nnx-backprop[tensorboard]'
    >>> import numpy as np, os, tempfile
    >>> X = np.random.default_rng(0).standard_normal((32, 4)); y = np.arange(32) % 2   # tiny random data
    >>> train = nnx.data.DataLoader((X, y), batch_size=16)
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    >>> loss_fn, opt = nnx.CrossEntropyLoss(), nnx.optim.SGD(model.parameters(), lr=0.1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = nnx.fit(model, loss_fn, opt, train, epochs=5, quiet=True,
    ...                 callbacks=[nnx.callbacks.TensorBoard(os.path.join(tmp, "exp1"), histogram_every_n_steps=100)])
    ...     any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(tmp, "exp1")))
    True

    Not in PyTorch (whose ``SummaryWriter`` this wraps); the layout follows Keras' callback.
    """

    def __init__(self, log_dir: str | os.PathLike = "runs", log_every_n_steps: int | None = None,
                 histogram_every_n_steps: int = 0, flush_secs: int = 10) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoard: needs tensorboardX; pip install 'nnx-backprop[tensorboard]'") from e
        self._writer_cls = SummaryWriter
        self.log_dir = os.fspath(log_dir)
        self.log_every_n_steps = log_every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.flush_secs = flush_secs
        self.global_step = 0
        self.writer: Any = None
        self._unwrap: Any = None

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, trainer: Trainer) -> None:
        self.writer = self._writer_cls(self.log_dir, flush_secs=self.flush_secs)
        model = trainer.model
        n = sum(p.size for p in model.parameters())
        self.writer.add_text("model", f"```\n{model!r}\n```\n\n{n:,} parameters", self.global_step)
        if self.histogram_every_n_steps:
            self._wrap_optimizer(trainer)

    def on_batch_end(self, trainer: Trainer, step: int) -> None:
        self.global_step += 1
        every = self.log_every_n_steps or trainer.log_every
        if self.global_step % every == 0:
            loss = getattr(trainer, "last_loss", None)
            if loss is not None:
                self.writer.add_scalar("train/loss", float(to_numpy(loss)), self.global_step)
            for i, g in enumerate(trainer.optimizer.param_groups):
                self.writer.add_scalar("train/lr" if i == 0 else f"train/lr_group{i}", float(g["lr"]),
                                       self.global_step)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.writer.add_scalar(f"epoch/{k}", float(v), epoch + 1)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file; restore the optimizer's ``step``."""
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ histograms
    def _wrap_optimizer(self, trainer: Trainer) -> None:
        opt = trainer.optimizer
        original = opt.__dict__.get("step")
        bound = opt.step

        def step(*args: Any, **kwargs: Any) -> Any:
            if (self.global_step + 1) % self.histogram_every_n_steps == 0:
                self._histograms(trainer, self.global_step + 1)
            return bound(*args, **kwargs)

        opt.step = step

        def unwrap() -> None:
            if original is None:
                opt.__dict__.pop("step", None)
            else:
                opt.step = original

        self._unwrap = unwrap

    def _histograms(self, trainer: Trainer, step: int) -> None:
        for name, p in trainer.model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", to_numpy(p.data), step)
            if p.grad is not None:
                self.writer.add_histogram(f"grads/{name}", to_numpy(p.grad), step)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state.get("global_step", 0))
