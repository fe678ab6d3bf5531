"""The record of a training run: :class:`History` (per-epoch logs, ``best``, ``plot``), returned by
:func:`nnx.fit` and restored with a checkpoint."""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["History"]


class History:
    """Per-epoch values of a run: ``history["loss"]``, ``history["val_accuracy"]``, ...

    ``history.history`` is the dict of lists (Keras' layout), ``history.epoch`` the epoch
    numbers (from 0, as stored; the log and :meth:`best` count from 1). NaN marks a value that an epoch did not produce.

    >>> h = nnx.History()                           # what nnx.fit returns; filled here by hand
    >>> for epoch, (loss, val_loss) in enumerate([(0.9, 0.8), (0.5, 0.6), (0.4, 0.7)]):
    ...     h.append(epoch, {"loss": loss, "val_loss": val_loss})
    >>> h["loss"], h.best("val_loss")
    ([0.9, 0.5, 0.4], (2, 0.6))
    >>> import os, tempfile, pytest; _ = pytest.importorskip("matplotlib")   # plot needs matplotlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     fig = h.plot(os.path.join(tmp, "curves.png")); os.path.exists(os.path.join(tmp, "curves.png"))
    True
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record the logs of ``epoch``."""
        n = len(self.epoch)
        for k in logs:
            if k not in self.history:
                self.history[k] = [math.nan] * n
        for k, values in self.history.items():
            values.append(float(logs.get(k, math.nan)))
        self.epoch.append(int(epoch))

    def __getitem__(self, key: str) -> list[float]:
        try:
            return self.history[key]
        except KeyError:
            raise KeyError(f"History has no {key!r}; it has {sorted(self.history)}") from None

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def __iter__(self):
        return iter(self.history)

    def __len__(self) -> int:
        return len(self.epoch)

    def keys(self) -> Iterable[str]:
        """The recorded quantities (``"loss"``, ``"val_loss"``, metric names, ``"lr"``)."""
        return self.history.keys()

    def items(self) -> Iterable[tuple[str, list[float]]]:
        """``(name, per-epoch values)`` pairs."""
        return self.history.items()

    def best(self, key: str, mode: str = "auto") -> tuple[int, float]:
        """``(epoch, value)`` of the best value of ``key`` (min for losses/errors, max for accuracy-like).

        ``epoch`` is the epoch number as the log shows it, counted from 1 ("Epoch 14/16" -> 14); the
        index into ``history[key]`` is ``epoch - 1 - history.epoch[0]`` (0 for a run that was not resumed).
        """
        from .callbacks import _resolve_mode

        values = self[key]
        mode = _resolve_mode(mode, key, "History.best")
        pairs = [(v, e) for e, v in zip(self.epoch, values, strict=True) if not math.isnan(v)]
        if not pairs:
            raise ValueError(f"History.best: no finite value of {key!r}")
        v, e = min(pairs) if mode == "min" else max(pairs, key=lambda p: (p[0], -p[1]))
        return e + 1, v

    def state_dict(self) -> dict[str, Any]:
        """JSON-able copy (stored in training checkpoints)."""
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        epochs, hist = state.get("epoch"), state.get("history")
        if not isinstance(epochs, list) or not isinstance(hist, dict) or \
                any(not isinstance(v, list) or len(v) != len(epochs) for v in hist.values()):
            raise ValueError("History.load_state_dict: malformed history")
        self.epoch = [int(e) for e in epochs]
        self.history = {str(k): [float(x) for x in v] for k, v in hist.items()}

    def plot(self, path: str | os.PathLike | None = None, keys: Sequence[str] | None = None) -> Any:
        """Draw the learning curves (one panel per quantity, train and ``val_`` together).

        Writes a PNG to ``path`` when given and returns the matplotlib ``Figure`` (made without
        pyplot, so no global state changes). Needs matplotlib: ``pip install 'nnx-backprop[plot]'``.
        """
        try:
            figure_mod = importlib.import_module("matplotlib.figure")
            agg = importlib.import_module("matplotlib.backends.backend_agg")
        except ImportError:
            raise ImportError("History.plot needs matplotlib; install it with pip install 'nnx-backprop[plot]' "
                              "(or pip install matplotlib)") from None
        names = list(keys) if keys is not None else [k for k in self.history if not k.startswith("val_")
                                                      and k != "lr"]
        names += [k[4:] for k in self.history if k.startswith("val_") and k[4:] not in names and keys is None]
        if not names:
            raise ValueError("History.plot: nothing to plot (the history is empty)")
        fig = figure_mod.Figure(figsize=(4.5 * len(names), 3.5), layout="constrained")
        agg.FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        x = [e + 1 for e in self.epoch]
        for ax, name in zip(axes, names, strict=True):
            for key, label in ((name, "train"), (f"val_{name}", "validation")):
                if key in self.history:
                    ax.plot(x, self.history[key], marker="o", markersize=3, label=label)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.legend()
        if path is not None:
            fig.savefig(os.fspath(path), dpi=100)
        return fig

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items()} if self.epoch else {}
        return f"History(epochs={len(self.epoch)}, last={last})"
