"""Training throughput of a one-layer LSTM (input 32, hidden 128, 32 steps, batch 64, linear head
on the last hidden state, cross-entropy over 10 classes, Adam, float32).

Contestants, run side by side in one process, interleaved, at 1 and 2 threads:
- ``nnx``: ``nnx.LSTM`` + ``nnx.Linear`` + ``CrossEntropyLoss`` + ``optim.Adam`` on the NumPy backend;
- ``numpy_floor``: the same math by hand in raw NumPy (fused gate product, preallocated buffers,
  in-place activations, hand-written Adam): the floor a framework can approach;
- ``torch``: PyTorch CPU ``nn.LSTM`` (its native kernel) with ``torch.optim.Adam``.

Usage: ``python benchmarks/bench_lstm.py [--quick] [--repeats 5] [--threads 1 2]``.
Writes benchmarks/results/lstm.json. Throughput is training sequences per second (higher is better).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import NumpyAdam, interleaved, machine, threads, time_steps, write  # noqa: E402

INPUT, HIDDEN, STEPS, BATCH, CLASSES = 32, 128, 32, 64, 10
N_BATCHES = 16


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed pool of batches, time-major ``(T, B, I)``, float32, with integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_BATCHES, STEPS, BATCH, INPUT), dtype=np.float32)
    y = rng.integers(0, CLASSES, (N_BATCHES, BATCH)).astype(np.int64)
    return x, y


class Batches:
    def __init__(self, x, y) -> None:
        self.x, self.y, self.i = x, y, 0

    def next(self):
        i = self.i
        self.i = (i + 1) % len(self.x)
        return self.x[i], self.y[i]


def nnx_step(x: np.ndarray, y: np.ndarray):
    import nnx

    nnx.set_backend("numpy")
    nnx.manual_seed(0)
    lstm = nnx.LSTM(INPUT, HIDDEN)
    head = nnx.Linear(HIDDEN, CLASSES)
    loss_fn = nnx.CrossEntropyLoss()
    params = list(lstm.parameters()) + list(head.parameters())
    opt = nnx.optim.Adam(params, lr=1e-3)
    data = Batches(x, y)

    def step() -> None:
        xb, yb = data.next()
        _, (h_n, _) = lstm(xb)
        loss_fn(head(h_n[0]), yb)
        dh = head.backward(loss_fn.backward())
        lstm.backward(None, dh[None], input_grad=False)
        opt.step()
        opt.zero_grad()

    return step


def numpy_floor_step(x: np.ndarray, y: np.ndarray):
    """Hand-written LSTM forward/BPTT, head, softmax cross-entropy and Adam in raw NumPy."""
    rng = np.random.default_rng(0)
    k = 1.0 / math.sqrt(HIDDEN)
    G = 4 * HIDDEN
    w_ih = rng.uniform(-k, k, (G, INPUT)).astype(np.float32)
    w_hh = rng.uniform(-k, k, (G, HIDDEN)).astype(np.float32)
    b_ih = rng.uniform(-k, k, G).astype(np.float32)
    b_hh = rng.uniform(-k, k, G).astype(np.float32)
    w_out = rng.uniform(-k, k, (CLASSES, HIDDEN)).astype(np.float32)
    b_out = rng.uniform(-k, k, CLASSES).astype(np.float32)
    params = [w_ih, w_hh, b_ih, b_hh, w_out, b_out]
    grads = [np.empty_like(p) for p in params]
    T, B, H = STEPS, BATCH, HIDDEN
    gates = np.empty((T, B, G), np.float32)      # pre-activations, then activations (in place)
    dgates = np.empty((T, B, G), np.float32)     # gradients of the pre-activations
    hs = np.zeros((T + 1, B, H), np.float32)
    cs = np.zeros((T + 1, B, H), np.float32)
    tcs = np.empty((T, B, H), np.float32)
    dh = np.empty((B, H), np.float32)
    dc = np.empty((B, H), np.float32)
    tmp = np.empty((B, H), np.float32)
    rows = np.arange(B)
    adam = NumpyAdam(params, lr=1e-3)
    data = Batches(x, y)

    def sigmoid_(a):
        a *= 0.5
        np.tanh(a, out=a)
        a *= 0.5
        a += 0.5

    def step() -> None:
        nonlocal tmp
        xb, yb = data.next()
        np.matmul(xb.reshape(T * B, INPUT), w_ih.T, out=gates.reshape(T * B, G))
        np.add(gates, b_ih, out=gates)
        np.add(gates, b_hh, out=gates)
        for t in range(T):
            g = gates[t]
            g += hs[t] @ w_hh.T
            sigmoid_(g[:, :2 * H])
            sigmoid_(g[:, 3 * H:])
            np.tanh(g[:, 2 * H:3 * H], out=g[:, 2 * H:3 * H])
            i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            np.multiply(f, cs[t], out=cs[t + 1])
            np.multiply(i, gg, out=tmp)
            cs[t + 1] += tmp
            np.tanh(cs[t + 1], out=tcs[t])
            np.multiply(o, tcs[t], out=hs[t + 1])
        logits = hs[T] @ w_out.T + b_out
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[rows, yb] -= 1.0
        p *= 1.0 / B
        np.matmul(p.T, hs[T], out=grads[4])
        np.sum(p, axis=0, out=grads[5])
        np.matmul(p, w_out, out=dh)
        dc[...] = 0.0
        for t in range(T - 1, -1, -1):
            a = gates[t]
            i, f, gg, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            dz = dgates[t]
            di, df, dg, do = dz[:, :H], dz[:, H:2 * H], dz[:, 2 * H:3 * H], dz[:, 3 * H:]
            tc = tcs[t]
            np.multiply(dh, tc, out=do)
            np.multiply(tc, tc, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            np.add(dc, tmp, out=dc)
            np.multiply(dc, gg, out=di)
            np.multiply(dc, cs[t], out=df)
            np.multiply(dc, i, out=dg)
            np.multiply(dc, f, out=dc)
            np.subtract(1.0, i, out=tmp)
            tmp *= i
            di *= tmp
            np.subtract(1.0, f, out=tmp)
            tmp *= f
            df *= tmp
            np.multiply(gg, gg, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            dg *= tmp
            np.subtract(1.0, o, out=tmp)
            tmp *= o
            do *= tmp
            np.matmul(dz, w_hh, out=dh)
        gf = dgates.reshape(T * B, G)
        np.matmul(gf.T, xb.reshape(T * B, INPUT), out=grads[0])
        np.matmul(gf.T, hs[:T].reshape(T * B, H), out=grads[1])
        np.sum(gf, axis=0, out=grads[2])
        grads[3][...] = grads[2]
        adam.step(grads)

    step.params, step.grads = params, grads  # type: ignore[attr-defined]  (for checking the floor's math)
    return step


def torch_step(x: np.ndarray, y: np.ndarray):
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(INPUT, HIDDEN)
    head = torch.nn.Linear(HIDDEN, CLASSES)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-3)
    data = Batches(torch.from_numpy(x), torch.from_numpy(y))

    def step() -> None:
        xb, yb = data.next()
        _, (h_n, _) = lstm(xb)
        loss = loss_fn(head(h_n[0]), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run to check the script")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per run (default 60)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="lstm", help="results name (benchmarks/results/<out>.json)")
    args = parser.parse_args()
    steps = args.steps or (10 if args.quick else 60)
    repeats = 1 if args.quick else args.repeats
    x, y = make_data()

    results = {}
    for n_threads in args.threads:
        with threads(n_threads):
            steppers = {"nnx": nnx_step(x, y), "numpy_floor": numpy_floor_step(x, y)}
            try:
                steppers["torch"] = torch_step(x, y)
            except ImportError:
                pass

            def runner(step):
                return lambda: steps * BATCH / time_steps(step, steps, warmup=3)

            res = interleaved({k: runner(s) for k, s in steppers.items()}, repeats)
            nnx_median = res["nnx"]["median"]
            for r in res.values():
                r["nnx_ratio"] = nnx_median / r["median"]   # above 1: nnx is faster
            results[f"{n_threads}_thread"] = res

    payload = {
        "benchmark": "LSTM 32->128, 32 steps, batch 64, linear head, cross-entropy, Adam, float32; sequences/s",
        "unit": "sequences/s",
        "steps_per_run": steps,
        "repeats": repeats,
        "config": {"input_size": INPUT, "hidden_size": HIDDEN, "seq_len": STEPS, "batch": BATCH,
                   "classes": CLASSES, "optimizer": "Adam(lr=1e-3)", "dtype": "float32", "quick": args.quick},
        "machine": machine(),
        "results": results,
    }
    write(args.out, payload)


if __name__ == "__main__":
    main()
