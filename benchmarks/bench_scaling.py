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

Two methods. By default everything runs in this one process, and the loop sleeps ``--settle``
seconds (0.3 s) before each contestant's untimed warm-up step: a library's worker threads keep
spinning for a while after their last task (OpenBLAS's up to about 0.1 s) and would take the
cores of the next contestant. ``--isolated`` runs every contestant alone in a process of its own
(a warm-up run, then the median of three timed runs), the processes alternated round by round:
what a user's training process sees, no other library's threads on the cores. Measured on the
2-vCPU VM, LeNet-5 at 2 threads: PyTorch 7.4-8.1 ms per step right after nnx's run in one
process, 4.6-4.9 ms after a run that left OpenBLAS's threads asleep, 4.5 ms alone; the README's
table comes from ``--isolated``.

Usage: ``python benchmarks/bench_scaling.py [--rounds 7] [--threads 1 2] [--workloads lstm mlp]
[--settle 0.3] [--isolated]``.
Writes benchmarks/results/scaling.json (read by ``benchmarks/scaling.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

WORKLOADS = ("resnet_basic_block", "lenet5", "mlp", "lstm")


def _build(name: str, only: str | None = None) -> tuple[int, int, dict]:
    """One workload: (samples per step, steps per timed run, {contestant: step function}), every
    contestant or ``only`` that one."""
    rng = np.random.default_rng(1)
    if name == "resnet_basic_block":
        bx = rng.standard_normal(bench_cnn.BLOCK_SHAPE, dtype=np.float32)
        bdy = rng.standard_normal(bench_cnn.BLOCK_SHAPE, dtype=np.float32)
        batch, n_steps = bench_cnn.BLOCK_SHAPE[0], 4
        makers = {"nnx": lambda: bench_cnn.nnx_block_step(bx, bdy),
                  "torch": lambda: bench_cnn.torch_block_step(bx, bdy)}
    elif name == "lenet5":
        lx, ly = bench_cnn.make_data()
        batch, n_steps = bench_cnn.BATCH, 20
        makers = {"nnx": lambda: bench_cnn.nnx_step(lx, ly), "numpy_floor": lambda: bench_cnn.numpy_floor_step(lx, ly),
                  "torch": lambda: bench_cnn.torch_step(lx, ly)}
    elif name == "mlp":
        mx, my = bench_mlp.make_data()
        batch, n_steps = bench_mlp.BATCH, 40
        makers = {"nnx": lambda: bench_mlp.nnx_step(mx, my), "numpy_floor": lambda: bench_mlp.numpy_floor_step(mx, my),
                  "torch": lambda: bench_mlp.torch_step(mx, my, fused=False)}
    else:
        sx, sy = bench_lstm.make_data()
        batch, n_steps = bench_lstm.BATCH, 10
        makers = {"nnx": lambda: bench_lstm.nnx_step(sx, sy),
                  "numpy_floor": lambda: bench_lstm.numpy_floor_step(sx, sy),
                  "torch": lambda: bench_lstm.torch_step(sx, sy)}
    return batch, n_steps, {who: make() for who, make in makers.items() if only in (None, who)}


def _timed(step, batch: int, n_steps: int) -> tuple[float, float]:
    """(samples/s, process CPU time / wall time) of one timed run."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_steps):
        step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return batch * n_steps / wall, cpu / wall


def _child(name: str, who: str, n: int, runs: int) -> None:
    """``--child``: one contestant alone in this process; prints the median of ``runs`` timed runs
    after a warm-up run, as JSON."""
    batch, n_steps, steps = _build(name, who)
    step = steps[who]
    with threads(n):
        _timed(step, batch, n_steps)
        got = [_timed(step, batch, n_steps) for _ in range(runs)]
    print(json.dumps({"samples_per_s": statistics.median(g[0] for g in got),
                      "cpu_per_wall": statistics.median(g[1] for g in got)}))


def _isolated(args: argparse.Namespace) -> tuple[dict, dict]:
    """Every contestant in a process of its own (no other library's threads on the cores), the
    processes alternated round by round."""
    contestants = {name: ["nnx", "torch"] if name == "resnet_basic_block" else ["nnx", "numpy_floor", "torch"]
                   for name in args.workloads}
    samples: dict = {w: {n: {c: [] for c in cs} for n in args.threads} for w, cs in contestants.items()}
    busy: dict = {w: {n: {c: [] for c in cs} for n in args.threads} for w, cs in contestants.items()}
    for r in range(args.rounds):
        for name, cs in contestants.items():
            for n in args.threads:
                for who in cs:
                    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, who, str(n)],
                                         capture_output=True, text=True, check=True).stdout
                    got = json.loads(out.strip().splitlines()[-1])
                    samples[name][n][who].append(got["samples_per_s"])
                    busy[name][n][who].append(got["cpu_per_wall"])
        print(f"round {r} done", file=sys.stderr)
    return samples, busy


def _interleaved(args: argparse.Namespace) -> tuple[dict, dict]:
    """Every workload, thread count and contestant in this process, one loop."""
    work = {name: _build(name) for name in args.workloads}
    samples: dict = {w: {n: {c: [] for c in steps} for n in args.threads} for w, (_, _, steps) in work.items()}
    busy: dict = {w: {n: {c: [] for c in steps} for n in args.threads} for w, (_, _, steps) in work.items()}
    for r in range(args.rounds + 1):  # round 0 is the warm-up
        for name, (batch, n_steps, steps) in work.items():
            for n in args.threads:
                with threads(n):
                    for who, step in steps.items():
                        time.sleep(args.settle)
                        step()
                        rate, cpu = _timed(step, batch, n_steps)
                        if r:
                            samples[name][n][who].append(rate)
                            busy[name][n][who].append(cpu)
        print(f"round {r} done", file=sys.stderr)
    return samples, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--settle", type=float, default=0.3,
                        help="seconds to sleep before each contestant's run (other libraries' threads stop spinning)")
    parser.add_argument("--isolated", action="store_true",
                        help="run every contestant in a process of its own, processes alternated round by round")
    parser.add_argument("--child", nargs=3, metavar=("WORKLOAD", "CONTESTANT", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]), args.child_runs)
        return
    samples, busy = _isolated(args) if args.isolated else _interleaved(args)
    out: dict = {}
    for name, per_thread in samples.items():
        res = {}
        for n, per_who in per_thread.items():
            res[f"{n}_thread"] = {who: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v,
                                        "cpu_per_wall": round(statistics.median(busy[name][n][who]), 2)}
                                  for who, v in per_who.items()}
        out[name] = {"results": res}
    method = ("isolated processes, alternated" if args.isolated
              else f"interleaved in one process, {args.settle} s settle")
    write("scaling", {"benchmark": "samples/s at 1..n threads per workload and contestant", "method": method,
                      "machine": machine(), "rounds": args.rounds, **out})


if __name__ == "__main__":
    main()
