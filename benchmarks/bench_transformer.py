"""Training step of one TransformerEncoderLayer: nnx (NumPy backend) vs PyTorch CPU, side by side.

d_model 256, 4 heads, dim_feedforward 1024, sequence 128, batch 32, batch_first, dropout 0,
float32, MSE to a fixed target, Adam. Both contestants run in one process, interleaved, at
``--threads`` (default 1: OPENBLAS_NUM_THREADS=1 / torch.set_num_threads(1)).

Usage: ``python benchmarks/bench_transformer.py [--quick] [--repeats 5] [--steps 5]``.
Writes benchmarks/results/transformer.json; throughput is samples per second (higher is better),
``ratio`` is nnx / torch. The machine may be shared: ``cpu_results`` gives the same throughput
from ``time.process_time`` (CPU seconds of this process), which other processes disturb less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, machine, threads, write  # noqa: E402

D, H, FF, T, B = 256, 4, 1024, 128, 32


def nnx_step(x: np.ndarray, target: np.ndarray):
    import nnx

    nnx.set_backend("numpy")
    nnx.manual_seed(0)
    layer = nnx.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True)
    loss_fn = nnx.MSELoss()
    opt = nnx.optim.Adam(layer.parameters(), lr=1e-4)

    def step() -> None:
        loss_fn(layer(x), target)
        layer.backward(loss_fn.backward(), input_grad=False)  # as fit; torch's input needs no grad either
        opt.step()
        opt.zero_grad()

    return step


def torch_step(x: np.ndarray, target: np.ndarray):
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-4)
    tx, tt = torch.from_numpy(x), torch.from_numpy(target)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(layer(tx), tt)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 steps (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    repeats, steps = (1, 2) if args.quick else (args.repeats, args.steps)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, D), dtype=np.float32)
    target = rng.standard_normal((B, T, D), dtype=np.float32)
    with threads(args.threads):
        contestants = {"nnx": nnx_step(x, target), "torch": torch_step(x, target)}
        cpu: dict[str, list[float]] = {k: [] for k in contestants}

        def runner(name: str):
            def run() -> float:
                step = contestants[name]
                step()  # warm-up
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(steps):
                    step()
                wall, used = time.perf_counter() - w0, time.process_time() - c0
                cpu[name].append(B * steps / used)
                return B * steps / wall
            return run

        res = interleaved({k: runner(k) for k in contestants}, repeats)
    payload = {
        "benchmark": "transformer_encoder_layer_train_step",
        "config": {"d_model": D, "nhead": H, "dim_feedforward": FF, "seq": T, "batch": B, "dtype": "float32",
                   "optimizer": "Adam", "threads": args.threads, "repeats": repeats, "steps": steps},
        "unit": "samples/s",
        "results": res,
        "ratio_nnx_over_torch": res["nnx"]["median"] / res["torch"]["median"],
        "cpu_results": {k: {"median": statistics.median(v), "runs": v} for k, v in cpu.items()},
        "cpu_ratio_nnx_over_torch": statistics.median(cpu["nnx"]) / statistics.median(cpu["torch"]),
        "machine": machine(),
    }
    write("transformer", payload)
    return payload


if __name__ == "__main__":
    main()
