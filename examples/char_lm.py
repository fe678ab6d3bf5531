"""A character-level LSTM language model trained on Python source that ships with Python itself.

    python examples/char_lm.py                          # NumPy on the CPU, about a minute
    python examples/char_lm.py --module textwrap --epochs 5 --temperature 0.6
    python examples/char_lm.py --backend cupy --hidden 512 --epochs 20   # on a CUDA GPU

The text is the source file of a standard-library module (``argparse`` by default, found with
``inspect.getsourcefile``), so nothing is downloaded. The model is
``Embedding -> LSTM -> Linear``; training uses random windows of ``--seq-len`` characters,
backpropagation through time written out explicitly (head, then ``lstm.backward(d_output)``, then
the embedding), gradient clipping by norm and Adam. Each epoch reports the training and validation
perplexity (exp of the mean cross-entropy per character); at the end the model writes a sample,
one character at a time, carrying the LSTM state ``(h, c)`` from step to step, at the sampling
``--temperature`` (lower: more conservative).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

import nnx


def load_text(module: str, max_chars: int) -> str:
    """The source text of a standard-library module (its .py file), at most ``max_chars`` characters."""
    path = inspect.getsourcefile(importlib.import_module(module))
    if path is None:
        raise SystemExit(f"char_lm: module {module!r} has no Python source file; pick another (e.g. argparse)")
    with open(path, encoding="utf-8") as f:
        return f.read()[:max_chars]


class CharLM(nnx.Module):
    """Embedding -> LSTM (batch first) -> Linear over the vocabulary, with an explicit backward."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nnx.Embedding(vocab, embed)
        self.lstm = nnx.LSTM(embed, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.head = nnx.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embed(ids), state)    # (B, T, hidden)
        return self.head(out), state                     # logits (B, T, vocab)

    def backward(self, grad_logits, *, input_grad: bool = False):
        d_out = self.head.backward(grad_logits)
        d_emb = self.lstm.backward(d_out)                 # the final state is not used by the loss
        self.embed.backward(d_emb)
        return None


def windows(backend, data, starts, seq_len: int):
    """Inputs and next-character targets for windows beginning at ``starts``: (B, T) each."""
    xp = backend.xp
    offsets = xp.arange(seq_len, dtype=starts.dtype, device=backend.device)
    idx = starts[:, None] + offsets[None, :]
    flat = xp.reshape(idx, (-1,))
    x = xp.reshape(xp.take(data, flat, axis=0), idx.shape)
    y = xp.reshape(xp.take(data, flat + 1, axis=0), idx.shape)
    return x, y


def evaluate(model, loss_fn, backend, data, seq_len: int, batch: int):
    """Mean cross-entropy per character over non-overlapping windows of ``data`` (eval mode)."""
    xp = backend.xp
    n_windows = (data.shape[0] - 1) // seq_len
    total = xp.zeros((), dtype=xp.float32, device=backend.device)
    count = 0
    model.eval()
    with nnx.no_grad():
        for i in range(0, n_windows, batch):
            stop = min(i + batch, n_windows)
            starts = xp.arange(i, stop, dtype=xp.int64, device=backend.device) * seq_len
            x, y = windows(backend, data, starts, seq_len)
            logits, _ = model(x)
            loss = loss_fn(xp.reshape(logits, (-1, logits.shape[-1])), xp.reshape(y, (-1,)))
            total = total + loss * float((stop - i) * seq_len)
            count += (stop - i) * seq_len
    return float(total) / max(count, 1)


def sample(model, backend, chars: list[str], prompt: str, length: int, temperature: float, seed: int) -> str:
    """Generate ``length`` characters after ``prompt``, one step at a time, carrying the state."""
    index = {c: i for i, c in enumerate(chars)}
    rng = np.random.default_rng(seed)
    model.eval()
    out = list(prompt)
    state = None
    with nnx.no_grad():
        ids = [index.get(c, 0) for c in prompt] or [0]
        logits, state = model(nnx.asarray(np.array([ids], dtype=np.int64)), state)
        for _ in range(length):
            last = nnx.to_numpy(logits)[0, -1].astype(np.float64) / max(temperature, 1e-6)
            p = np.exp(last - last.max())
            p /= p.sum()
            nxt = int(rng.choice(len(chars), p=p))
            out.append(chars[nxt])
            logits, state = model(nnx.asarray(np.array([[nxt]], dtype=np.int64)), state)
    return "".join(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy, cupy, torch or array_api_strict")
    parser.add_argument("--device", default=None, help="device of the backend, e.g. 0 or cuda:0")
    parser.add_argument("--module", default="argparse", help="standard-library module whose source is the text")
    parser.add_argument("--max-chars", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop training after this many wall-clock seconds (epochs then unlimited); "
                             "the last epoch may be partial")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="training windows batches per epoch (default: one pass over the text)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0, help="between LSTM layers (needs --layers > 1)")
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="max global gradient norm")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for BLAS and OpenMP (the per-step products are small: 1 is fastest)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    with limit_threads(args.threads, args.backend):
        return run(args)


@contextmanager
def limit_threads(n: int, backend: str) -> Iterator[None]:
    """Cap the BLAS, OpenMP and PyTorch thread pools inside the block (restored after): the
    per-step products are small, and spinning threads on a busy machine slow them down."""
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


def run(args: argparse.Namespace) -> dict:
    """Train, report perplexities per epoch, sample; returns the history and the sample."""
    nnx.set_backend(args.backend, device=args.device)
    nnx.manual_seed(args.seed)
    text = load_text(args.module, args.max_chars)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    encoded = np.array([index[c] for c in text], dtype=np.int64)
    split = int(len(encoded) * 0.9)
    train, val = nnx.asarray(encoded[:split]), nnx.asarray(encoded[split:])
    backend = nnx.get_backend()
    xp = backend.xp

    model = CharLM(len(chars), args.embed, args.hidden, args.layers, args.dropout)
    loss_fn = nnx.CrossEntropyLoss()
    optimizer = nnx.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.steps_per_epoch or max(1, split // (args.batch_size * args.seq_len))
    print(f"text: {args.module}.py, {len(text):,} characters, vocabulary {len(chars)}; "
          f"{steps} steps of {args.batch_size} x {args.seq_len} per epoch")

    history = []
    start = time.perf_counter()
    budget = args.time_budget
    epochs = args.epochs if budget is None else 10**9
    for epoch in range(1, epochs + 1):
        if budget is not None and time.perf_counter() - start >= budget:
            break
        model.train()
        done = 0
        total = xp.zeros((), dtype=xp.float32, device=backend.device)
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{args.epochs} [{backend.name}]", disable=args.quiet,
                   leave=False)
        for _ in bar:
            if budget is not None and time.perf_counter() - start >= budget:
                break
            starts = backend.randint((args.batch_size,), 0, split - args.seq_len - 1)
            x, y = windows(backend, train, starts, args.seq_len)
            logits, _ = model(x)
            vocab = logits.shape[-1]
            loss = loss_fn(xp.reshape(logits, (-1, vocab)), xp.reshape(y, (-1,)))
            d_logits = xp.reshape(loss_fn.backward(), logits.shape)
            model.backward(d_logits)
            nnx.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            optimizer.zero_grad()
            total = total + loss
            done += 1
        train_loss = float(total) / max(done, 1)          # read from the device once per epoch
        val_loss = evaluate(model, loss_fn, backend, val, args.seq_len, args.batch_size)
        history.append({"epoch": epoch, "steps": done, "seconds": time.perf_counter() - start,
                        "train_ppl": math.exp(train_loss), "val_ppl": math.exp(val_loss)})
        print(f"epoch {epoch}: train perplexity {math.exp(train_loss):7.2f}   "
              f"validation perplexity {math.exp(val_loss):7.2f}   ({time.perf_counter() - start:.0f} s)")

    text_out = sample(model, backend, chars, args.prompt, args.sample_length, args.temperature, args.seed)
    print(f"\n--- sample (temperature {args.temperature}) ---\n{text_out}\n---")
    return {"history": history, "sample": text_out, "vocab": len(chars)}


if __name__ == "__main__":
    main()
