"""A tiny decoder-only character Transformer (GPT) on the same text as examples/char_lm.py.

    python examples/tiny_gpt.py --time-budget 120          # NumPy, one CPU thread, two minutes
    python examples/tiny_gpt.py --backend cupy --d-model 256 --layers 4 --heads 4 --batch-size 32 --time-budget 300

The defaults (one block of width 128 with 2 heads, batches of 16 windows of 64 characters, peak
lr 3e-3 after a 2 % warm-up, no weight decay, dropout 0.1) were tuned for a short budget on one
CPU core, where many small steps learn more than fewer larger ones; dropout keeps the thousands of
steps of a quiet machine from overfitting the 90k training characters
(benchmarks/bench_tiny_gpt_vs_lstm.py, docs/attention.md).

Model: token embedding + learned position embedding -> ``--layers`` pre-norm
``nnx.TransformerEncoderLayer`` blocks (causal self-attention, GELU) -> LayerNorm -> Linear over the
vocabulary. The backward is written out: head, final norm, the blocks in reverse, then the two
embeddings (the position gradient is the token gradient summed over the batch). Training runs for
``--time-budget`` seconds of wall clock (AdamW, linear warm-up then cosine decay of the learning
rate over the budget, gradient clipping; ``--tie`` shares the token embedding with the output
layer), reporting validation perplexity
(exp of the mean cross-entropy per character, same split and measure as char_lm.py), then samples.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import time

import numpy as np

import nnx


def _char_lm():
    spec = importlib.util.spec_from_file_location("char_lm", os.path.join(os.path.dirname(__file__), "char_lm.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TinyGPT(nnx.Module):
    """Embedding + positions -> causal pre-norm Transformer blocks -> LayerNorm -> Linear."""

    def __init__(self, vocab: int, block: int, d_model: int, nhead: int, layers: int, dropout: float,
                 tie: bool = False, gelu: str = "tanh") -> None:
        super().__init__()
        self.tok = nnx.Embedding(vocab, d_model)
        self.pos = nnx.Embedding(block, d_model)
        self.blocks = nnx.ModuleList([
            nnx.TransformerEncoderLayer(d_model, nhead, 4 * d_model, dropout=dropout,
                                        activation=nnx.GELU(approximate=gelu),
                                        batch_first=True, norm_first=True) for _ in range(layers)])
        self.ln_f = nnx.LayerNorm(d_model)
        self.head = nnx.Linear(d_model, vocab)
        if tie:  # weight tying: the output layer is the token embedding (one Parameter, both gradients add)
            for emb in (self.tok, self.pos):  # small embeddings (as GPT-2): the tied head starts near uniform
                nnx.init.normal_(emb.weight, 0.0, 0.02)
            self.head.weight = self.tok.weight

    def forward(self, ids):
        xp = nnx.get_backend().xp
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(xp.arange(t, dtype=ids.dtype, device=nnx.get_backend().device))
        for blk in self.blocks:
            x = blk(x, is_causal=True)
        return self.head(self.ln_f(x))

    def backward(self, grad_logits, *, input_grad: bool = False):
        xp = nnx.get_backend().xp
        g = self.ln_f.backward(self.head.backward(grad_logits))
        for blk in reversed(list(self.blocks)):
            g = blk.backward(g)
        self.tok.backward(g)
        self.pos.backward(xp.sum(g, axis=0))
        return None


def sample(model, chars, block: int, prompt: str, length: int, temperature: float, seed: int) -> str:
    """Generate ``length`` characters after ``prompt`` (the last ``block`` characters as context)."""
    index = {c: i for i, c in enumerate(chars)}
    rng = np.random.default_rng(seed)
    ids = [index.get(c, 0) for c in prompt] or [0]
    model.eval()
    with nnx.no_grad():
        for _ in range(length):
            ctx = np.array([ids[-block:]], dtype=np.int64)
            last = nnx.to_numpy(model(nnx.asarray(ctx)))[0, -1].astype(np.float64) / max(temperature, 1e-6)
            p = np.exp(last - last.max())
            p /= p.sum()
            ids.append(int(rng.choice(len(chars), p=p)))
    return prompt + "".join(chars[i] for i in ids[len(prompt) or 1:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default=None)
    parser.add_argument("--module", default="argparse", help="standard-library module whose source is the text")
    parser.add_argument("--max-chars", type=int, default=200_000)
    parser.add_argument("--time-budget", type=float, default=120.0, help="training wall-clock seconds")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=float, default=0.02,
                        help="linear warm-up over this fraction of the budget, then cosine decay to 10%%")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decoupled weight decay")
    parser.add_argument("--gelu", choices=("tanh", "none"), default="tanh",
                        help="GELU form: tanh approximation (as GPT-2; NumPy has no erf, so it is faster) or exact")
    parser.add_argument("--tie", action="store_true", help="output layer = token embedding (weight tying)")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    lm = _char_lm()
    with lm.limit_threads(args.threads, args.backend):
        return run(args, lm)


def run(args: argparse.Namespace, lm) -> dict:
    nnx.set_backend(args.backend, device=args.device)
    nnx.manual_seed(args.seed)
    text = lm.load_text(args.module, args.max_chars)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    encoded = np.array([index[c] for c in text], dtype=np.int64)
    split = int(len(encoded) * 0.9)
    train, val = nnx.asarray(encoded[:split]), nnx.asarray(encoded[split:])
    backend = nnx.get_backend()
    xp = backend.xp
    model = TinyGPT(len(chars), args.seq_len, args.d_model, args.heads, args.layers, args.dropout,
                    tie=args.tie, gelu=args.gelu)
    loss_fn = nnx.CrossEntropyLoss()
    optimizer = nnx.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"text: {args.module}.py, {len(text):,} characters, vocabulary {len(chars)}; "
          f"{sum(p.size for p in model.parameters()):,} parameters; budget {args.time_budget:.0f} s")
    history = []
    start = time.perf_counter()
    step = 0
    total = xp.zeros((), dtype=xp.float32, device=backend.device)
    since = 0

    def log() -> None:
        nonlocal total, since
        val_loss = lm.evaluate(_Eval(model), loss_fn, backend, val, args.seq_len, args.batch_size)
        rec = {"step": step, "seconds": time.perf_counter() - start,
               "train_ppl": math.exp(float(total) / max(since, 1)), "val_ppl": math.exp(val_loss)}
        history.append(rec)
        if not args.quiet:
            print(f"step {step}: train perplexity {rec['train_ppl']:7.2f}   validation perplexity "
                  f"{rec['val_ppl']:7.2f}   ({rec['seconds']:.0f} s)")
        total, since = xp.zeros((), dtype=xp.float32, device=backend.device), 0

    while time.perf_counter() - start < args.time_budget and (args.max_steps is None or step < args.max_steps):
        model.train()
        optimizer.param_groups[0]["lr"] = schedule(args, time.perf_counter() - start, step)
        starts = backend.randint((args.batch_size,), 0, split - args.seq_len - 1)
        x, y = lm.windows(backend, train, starts, args.seq_len)
        logits = model(x)
        vocab = logits.shape[-1]
        loss = loss_fn(xp.reshape(logits, (-1, vocab)), xp.reshape(y, (-1,)))
        model.backward(xp.reshape(loss_fn.backward(), logits.shape))
        nnx.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        optimizer.zero_grad()
        total = total + loss
        step += 1
        since += 1
        if step % args.eval_every == 0:
            log()
    train_seconds = time.perf_counter() - start
    if since or not history:
        log()
    text_out = sample(model, chars, args.seq_len, args.prompt, args.sample_length, args.temperature, args.seed)
    print(f"trained {step} steps in {train_seconds:.0f} s; final validation perplexity "
          f"{history[-1]['val_ppl']:.2f}\n--- sample (temperature {args.temperature}) ---\n{text_out}\n---")
    return {"history": history, "sample": text_out, "vocab": len(chars), "steps": step,
            "train_seconds": train_seconds}


def schedule(args: argparse.Namespace, seconds: float, step: int) -> float:
    """Learning rate: linear warm-up, then cosine decay to 10% of ``--lr``, over the time budget
    (or over ``--max-steps`` when that comes first)."""
    frac = seconds / args.time_budget
    if args.max_steps:
        frac = max(frac, step / args.max_steps)
    frac = min(frac, 1.0)
    if frac < args.warmup:
        return args.lr * max(frac / args.warmup, 0.01)
    t = (frac - args.warmup) / max(1.0 - args.warmup, 1e-9)
    return args.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * t)))


class _Eval(nnx.Module):
    """Adapts TinyGPT to char_lm.evaluate, which expects ``(logits, state)``."""

    def __init__(self, model: TinyGPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids), None


if __name__ == "__main__":
    main()
