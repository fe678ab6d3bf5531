"""1 -> 2 (or more) thread scaling on a shared machine: every workload, contestant AND thread
count interleaved in one loop, so a busy phase of the machine hits all of them alike.

Workloads (the step functions of bench_cnn.py, bench_mlp.py, bench_lstm.py): the ResNet basic
block (64ch, 32x32, batch 16), LeNet-5 (batch 64), the MLP (784-512-512-10, batch 128, Adam),
the LSTM (32->128, 32 steps, batch 64); contestants nnx (NumPy backend), PyTorch CPU and the
raw-NumPy floor where the script has one. Each round runs, for each workload, each thread count
(``common.threads``: BLAS + nnx's pool + torch) and each contestant a short timed run; medians
over rounds. ``cpu_per_wall`` (process CPU time / wall time) shows how many cores a run really
got: on a loaded machine it stays near 1 at 2 threads, and the run is then not a fair scaling
measurement.

Usage: ``python benchmarks/bench_scaling.py [--rounds 7] [--threads 1 2]``.
Writes benchmarks/results/scaling.json (read by ``benchmarks/scaling.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
import bench_cnn  # noqa: E402
import bench_lstm  # noqa: E402
import bench_mlp  # noqa: E402

from common import machine, threads, write  # noqa: E402


def workloads() -> dict[str, tuple[int, int, dict]]:
    """name -> (samples per step, steps per timed run, {contestant: step function})."""
    rng = np.random.default_rng(1)
    bx = rng.standard_normal(bench_cnn.BLOCK_SHAPE, dtype=np.float32)
    bdy = rng.standard_normal(bench_cnn.BLOCK_SHAPE, dtype=np.float32)
    lx, ly = bench_cnn.make_data()
    mx, my = bench_mlp.make_data()
    sx, sy = bench_lstm.make_data()
    return {
        "resnet_basic_block": (bench_cnn.BLOCK_SHAPE[0], 4, {
            "nnx": bench_cnn.nnx_block_step(bx, bdy), "torch": bench_cnn.torch_block_step(bx, bdy)}),
        "lenet5": (bench_cnn.BATCH, 20, {
            "nnx": bench_cnn.nnx_step(lx, ly), "numpy_floor": bench_cnn.numpy_floor_step(lx, ly),
            "torch": bench_cnn.torch_step(lx, ly)}),
        "mlp": (bench_mlp.BATCH, 40, {
            "nnx": bench_mlp.nnx_step(mx, my), "numpy_floor": bench_mlp.numpy_floor_step(mx, my),
            "torch": bench_mlp.torch_step(mx, my, fused=False)}),
        "lstm": (bench_lstm.BATCH, 10, {
            "nnx": bench_lstm.nnx_step(sx, sy), "numpy_floor": bench_lstm.numpy_floor_step(sx, sy),
            "torch": bench_lstm.torch_step(sx, sy)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    work = workloads()
    samples: dict = {w: {n: {c: [] for c in steps} for n in args.threads} for w, (_, _, steps) in work.items()}
    busy: dict = {w: {n: {c: [] for c in steps} for n in args.threads} for w, (_, _, steps) in work.items()}
    for r in range(args.rounds + 1):  # round 0 is the warm-up
        for name, (batch, n_steps, steps) in work.items():
            for n in args.threads:
                with threads(n):
                    for who, step in steps.items():
                        step()
                        t0, c0 = time.perf_counter(), time.process_time()
                        for _ in range(n_steps):
                            step()
                        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                        if r:
                            samples[name][n][who].append(batch * n_steps / wall)
                            busy[name][n][who].append(cpu / wall)
        print(f"round {r} done", file=sys.stderr)
    out: dict = {}
    for name, per_thread in samples.items():
        res = {}
        for n, per_who in per_thread.items():
            res[f"{n}_thread"] = {who: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v,
                                        "cpu_per_wall": round(statistics.median(busy[name][n][who]), 2)}
                                  for who, v in per_who.items()}
        out[name] = {"results": res}
    write("scaling", {"benchmark": "samples/s at 1..n threads, workloads, contestants and thread counts interleaved",
                      "machine": machine(), "rounds": args.rounds, **out})


if __name__ == "__main__":
    main()
