"""Compiled training steps (``nnx.compile_step``, jax.jit) beside eager nnx and PyTorch CPU.

For the MLP (784-512-512-10 + Adam, batch 128), LeNet-5 (+ SGD momentum, batch 64) and the LSTM
(32 steps, 32->128 + head + Adam, batch 64) workloads of ``workloads.py``, one process runs, in
interleaved rounds: nnx eager on NumPy, nnx eager on JAX, nnx compiled on JAX, PyTorch eager.
All at ``--threads`` (default 1; XLA's CPU backend is limited through its flags where it can be).

Usage: ``python benchmarks/bench_jax_jit.py [--quick] [--repeats 3] [--steps 10]``.
Writes benchmarks/results/jax_jit.json: steps per second (higher is better) and ratios to NumPy
eager and to PyTorch.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workloads import _data, nnx_model, torch_step  # noqa: E402

import nnx  # noqa: E402

from common import interleaved, machine, threads, time_steps, write  # noqa: E402

CASES = {"mlp": 128, "lenet": 64, "lstm": 64}


def _nnx_runner(name: str, batch: int, backend: str, compiled: bool, steps: int):
    with nnx.use_backend(backend):
        nnx.manual_seed(0)
        model, loss_fn, opt = nnx_model(name)
        x_host, y_host = _data(name, batch, np.random.default_rng(0))
        x, y = nnx.asarray(x_host, dtype="float32"), nnx.asarray(y_host, dtype="int64")
        last: list = [None]
        if compiled:
            step_fn = nnx.compile_step(model, loss_fn, opt)

            def step() -> None:
                last[0] = step_fn(x, y)
        else:
            def step() -> None:
                opt.zero_grad()
                last[0] = loss_fn(model(x), y)
                model.backward(loss_fn.backward(), input_grad=False)
                opt.step()

    def sync() -> None:  # JAX dispatches asynchronously: wait for the last step's results
        nnx.to_numpy(last[0])
        for p in model.parameters():
            nnx.to_numpy(p.data)

    def run() -> float:
        with nnx.use_backend(backend):
            return steps / time_steps(step, steps, warmup=2, sync=sync)

    return run


def _torch_runner(name: str, batch: int, steps: int):
    step = torch_step(name, batch)

    def run() -> float:
        return steps / time_steps(step, steps, warmup=2)

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one round (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workload", action="append", choices=sorted(CASES))
    args = parser.parse_args(argv)
    repeats, steps = (1, 2) if args.quick else (args.repeats, args.steps)
    results = {}
    with threads(args.threads):
        for name, batch in CASES.items():
            if args.workload and name not in args.workload:
                continue
            runners = {
                "nnx numpy eager": _nnx_runner(name, batch, "numpy", False, steps),
                "nnx jax eager": _nnx_runner(name, batch, "jax", False, steps),
                "nnx jax compiled": _nnx_runner(name, batch, "jax", True, steps),
                "torch eager": _torch_runner(name, batch, steps),
            }
            r = interleaved(runners, repeats)
            compiled = r["nnx jax compiled"]["median"]
            results[name] = {"batch": batch, "steps_per_second": {k: round(v["median"], 2) for k, v in r.items()},
                             "compiled_vs_numpy_eager": round(compiled / r["nnx numpy eager"]["median"], 2),
                             "compiled_vs_torch": round(compiled / r["torch eager"]["median"], 2),
                             "cpu_per_wall": {k: v["cpu_per_wall"] for k, v in r.items()}}
    payload = {"machine": machine(), "threads": args.threads, "results": results}
    write("jax_jit" if not args.quick else "jax_jit_quick", payload)
    return payload


if __name__ == "__main__":
    main()
