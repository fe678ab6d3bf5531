"""Training throughput of an MLP 784-512-512-10 (ReLU, cross-entropy, Adam, batch 128, float32).

Contestants, run side by side in one process, interleaved, at 1 and 2 threads:
- ``nnx``: nnx on the NumPy backend (``nnx.Sequential``, ``CrossEntropyLoss``, ``optim.Adam``);
- ``numpy_floor``: the same math written by hand in raw NumPy with preallocated buffers (the
  floor a framework can approach: no abstraction at all);
- ``torch``, ``torch_fused``: PyTorch CPU with ``torch.optim.Adam`` (default and ``fused=True``);
- ``sklearn``: scikit-learn's ``MLPClassifier`` (one epoch of ``partial_fit``), for scale.

Usage: ``python benchmarks/bench_mlp.py [--quick] [--repeats 5] [--threads 1 2]``.
Writes benchmarks/results/mlp.json. Throughput is samples per second (higher is better).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Batches, NumpyAdam, interleaved, machine, threads, time_steps, write  # noqa: E402

SIZES = (784, 512, 512, 10)
BATCH = 128
N_SAMPLES = 60_000


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], N_SAMPLES).astype(np.int64)
    return x, y


def nnx_step(x: np.ndarray, y: np.ndarray):
    import nnx

    nnx.set_backend("numpy")
    nnx.manual_seed(0)
    model = nnx.Sequential(nnx.Linear(784, 512), nnx.ReLU(), nnx.Linear(512, 512), nnx.ReLU(), nnx.Linear(512, 10))
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.Adam(model.parameters(), lr=1e-3)
    data = Batches(x, y, BATCH)

    def step() -> None:
        xb, yb = data.next()
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()

    return step


def numpy_floor_step(x: np.ndarray, y: np.ndarray):
    """Hand-written forward, backward and Adam with preallocated buffers: the raw-NumPy floor."""
    rng = np.random.default_rng(0)
    ws, bs = [], []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        ws.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
        bs.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    params = [p for pair in zip(ws, bs) for p in pair]
    grads = [np.empty_like(p) for p in params]
    acts = [np.empty((BATCH, s), np.float32) for s in SIZES[1:]]
    deltas = [np.empty((BATCH, s), np.float32) for s in SIZES[1:]]
    adam = NumpyAdam(params, lr=1e-3)
    data = Batches(x, y, BATCH)
    rows = np.arange(BATCH)

    def step() -> None:
        xb, yb = data.next()
        h = xb
        for i, (w, b) in enumerate(zip(ws, bs)):
            np.matmul(h, w.T, out=acts[i])
            acts[i] += b
            if i < len(ws) - 1:
                np.maximum(acts[i], 0.0, out=acts[i])
            h = acts[i]
        logits = acts[-1]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=deltas[-1])
        deltas[-1] /= deltas[-1].sum(axis=1, keepdims=True)
        deltas[-1][rows, yb] -= 1.0
        deltas[-1] *= 1.0 / BATCH
        for i in range(len(ws) - 1, -1, -1):
            inp = xb if i == 0 else acts[i - 1]
            np.matmul(deltas[i].T, inp, out=grads[2 * i])
            np.sum(deltas[i], axis=0, out=grads[2 * i + 1])
            if i > 0:
                np.matmul(deltas[i], ws[i], out=deltas[i - 1])
                deltas[i - 1] *= acts[i - 1] > 0
        adam.step(grads)

    return step


def torch_step(x: np.ndarray, y: np.ndarray, fused: bool):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    data = Batches(tx, ty, BATCH)

    def step() -> None:
        xb, yb = data.next()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sklearn_epoch_throughput(x: np.ndarray, y: np.ndarray, n: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], batch_size=BATCH, solver="adam", learning_rate_init=1e-3,
                        max_iter=1, shuffle=False, random_state=0, tol=0.0)
    import time

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.partial_fit(x[:n], y[:n], classes=np.arange(SIZES[-1]))
        return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run to check the script")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: one epoch)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--out", default="mlp", help="results name (benchmarks/results/<out>.json)")
    args = parser.parse_args()
    steps = args.steps or (30 if args.quick else N_SAMPLES // BATCH)
    repeats = 1 if args.quick else args.repeats
    x, y = make_data()

    results = {}
    for n_threads in args.threads:
        with threads(n_threads):
            steppers = {"nnx": nnx_step(x, y), "numpy_floor": numpy_floor_step(x, y)}
            try:
                steppers["torch"] = torch_step(x, y, fused=False)
                steppers["torch_fused"] = torch_step(x, y, fused=True)
            except ImportError:
                pass

            def runner(step):
                return lambda: steps * BATCH / time_steps(step, steps, warmup=5)

            runners = {k: runner(s) for k, s in steppers.items()}
            if not args.no_sklearn:
                runners["sklearn"] = lambda n=BATCH * steps: sklearn_epoch_throughput(x, y, n)
            res = interleaved(runners, repeats)
            nnx_median = res["nnx"]["median"]
            for r in res.values():
                r["nnx_ratio"] = nnx_median / r["median"]
            results[f"{n_threads}_thread"] = res
    write(args.out, {
        "benchmark": "MLP 784-512-512-10, ReLU, cross-entropy, Adam, batch 128, float32; samples/s",
        "steps_per_run": steps,
        "repeats": repeats,
        "machine": machine(),
        "results": results,
    })


if __name__ == "__main__":
    main()
