"""Classify scikit-learn's handwritten digits with a recurrent network reading each 8x8 image as a
sequence of 8 rows of 8 pixels.

    python examples/rnn_sequence_digits.py                   # LSTM on NumPy (CPU)
    python examples/rnn_sequence_digits.py --cell gru        # a GRU instead
    python examples/rnn_sequence_digits.py --backend cupy    # the same script on a CUDA GPU

The model is ``nnx.LSTM`` (or ``nnx.GRU``) with ``batch_first=True`` and a linear head on the
final hidden state. The training loop is explicit: forward, loss, backward through the head and
then through time (``rnn.backward(None, d_h_n)``: the loss reads only ``h_n``), gradient clipping,
optimizer step. Reaches about 97% test accuracy in a few seconds on one CPU core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

import nnx


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (N, 8 rows, 8 pixels) float32 sequences, standardised; 80/20 train/test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)      # (1797, 8, 8): 8 time steps of 8 features
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 5
    mean, std = x[n_test:].mean((0, 1)), x[n_test:].std((0, 1)) + 0.1
    x = (x - mean) / std
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


@contextmanager
def limit_threads(n: int, backend: str) -> Iterator[None]:
    """Cap the BLAS and OpenMP thread pools inside the block: small per-step products gain nothing
    from threads, and on a busy machine spinning BLAS threads can slow them down many times over."""
    torch_threads = None
    if backend == "torch":  # PyTorch keeps its own intra-op pool size
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        import threadpoolctl
    except ImportError:
        yield
    else:
        with threadpoolctl.threadpool_limits(n):
            yield
    finally:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


class SequenceClassifier(nnx.Module):
    """A recurrent encoder and a linear head on its last hidden state (of the top layer)."""

    def __init__(self, cell: str, hidden: int, classes: int = 10) -> None:
        super().__init__()
        rnn_cls = {"lstm": nnx.LSTM, "gru": nnx.GRU}[cell]
        self.rnn = rnn_cls(8, hidden, batch_first=True)
        self.head = nnx.Linear(hidden, classes)
        self.is_lstm = cell == "lstm"

    def forward(self, x):
        _, state = self.rnn(x)
        h_n = state[0] if self.is_lstm else state
        return self.head(h_n[-1, ...])                   # (batch, classes)

    def backward(self, grad_logits, *, input_grad: bool = False):
        d_last = self.head.backward(grad_logits)      # (batch, hidden)
        d_h_n = d_last[None, ...]                      # h_n is (num_layers * directions, batch, hidden)
        return self.rnn.backward(None, d_h_n, input_grad=input_grad)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy, cupy, torch or array_api_strict")
    parser.add_argument("--device", default=None, help="device of the backend, e.g. 0 or cuda:0")
    parser.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="max global gradient norm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for BLAS and OpenMP (the per-step products are small: 1 is fastest)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    with limit_threads(args.threads, args.backend):
        return run(args)


def run(args: argparse.Namespace) -> float:
    """Train and evaluate; returns the test accuracy."""
    nnx.set_backend(args.backend, device=args.device)
    nnx.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.seed)

    model = SequenceClassifier(args.cell, args.hidden)
    loss_fn = nnx.CrossEntropyLoss()
    optimizer = nnx.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = nnx.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    xs, ys = nnx.asarray(x_train), nnx.asarray(y_train)   # the whole set lives on the device
    xt, yt = nnx.asarray(x_test), nnx.asarray(y_test)
    backend = nnx.get_backend()
    xp = backend.xp
    n = len(x_train)
    start = time.perf_counter()
    bar = tqdm(range(args.epochs), desc=f"rnn_digits {args.cell} [{backend.name}]", disable=args.quiet)
    for _epoch in bar:
        model.train()
        order = backend.permutation(n)
        total = xp.zeros((), dtype=xs.dtype, device=backend.device)
        for i in range(0, n, args.batch_size):
            idx = order[i:min(i + args.batch_size, n)]
            xb, yb = xp.take(xs, idx, axis=0), xp.take(ys, idx, axis=0)
            loss = loss_fn(model(xb), yb)
            model.backward(loss_fn.backward())
            nnx.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            optimizer.zero_grad()
            total = total + loss * idx.shape[0]
        scheduler.step()
        bar.set_postfix(loss=f"{float(total) / n:.4f}")   # read from the device once per epoch
    elapsed = time.perf_counter() - start

    model.eval()
    with nnx.no_grad():
        predicted = xp.argmax(model(xt), axis=1)
    accuracy = float(xp.mean(xp.astype(predicted == yt, xt.dtype)))
    print(f"test accuracy {accuracy:.4f} ({args.cell}, {args.epochs} epochs) in {elapsed:.1f} s "
          f"on {backend.name} ({backend.device_name})")
    return accuracy


if __name__ == "__main__":
    main()
