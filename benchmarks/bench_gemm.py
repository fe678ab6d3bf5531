"""nnx's own float32 GEMM (backends/host_gemm.c) against NumPy's OpenBLAS and PyTorch's CPU GEMM, one
thread, on the products of the benchmark workloads.

OpenBLAS picks its kernel when it loads: by CPU detection, or by ``OPENBLAS_CORETYPE`` where the
environment sets one. So OpenBLAS is timed twice, each in a process of its own: under this
environment as it is, and with ``OPENBLAS_CORETYPE`` removed (its own detection). nnx's kernel
and PyTorch do not depend on it. Each figure is the median of ``--rounds`` timed loops, the
contestants alternated round by round.

Usage: ``python benchmarks/bench_gemm.py [--rounds 5]``. Writes benchmarks/results/gemm.json.
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
from common import machine, write  # noqa: E402

#: (name, M, K, N): C (M, N) = A (M, K) B (K, N)
SHAPES = [
    ("LSTM recurrent step, forward (batch 64)", 64, 128, 512),
    ("LSTM recurrent step, forward (a part of 32 rows)", 32, 128, 512),
    ("LSTM recurrent step, backward", 64, 512, 128),
    ("LSTM weight gradients [dW_ih | db | dW_hh]", 512, 2048, 161),
    ("MLP 784-512, batch 128", 128, 784, 512),
    ("MLP 512-512, batch 128", 128, 512, 512),
    ("ResNet block Winograd, one tile position of a sample", 64, 64, 64),
    ("ResNet block Winograd weight gradient, one tile position", 64, 1024, 64),
    ("LeNet-5 conv2 as a GEMM, one sample", 16, 150, 140),
]


def _loops(fn, seconds: float = 0.15) -> int:
    fn()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds / 3:
        fn()
        n += 1
    return max(3, 3 * n)


def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _child(who: str, rounds: int) -> None:
    """One contestant in this process: its median time per shape in microseconds, as JSON."""
    import threadpoolctl

    threadpoolctl.threadpool_limits(1)
    rng = np.random.default_rng(0)
    out = {}
    for name, m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), dtype=np.float32)
        if who == "nnx":
            import nnx_backends.host_kernels as HK

            lib = HK.kernels()
            if lib is None or not lib.own_gemm_available:
                print(json.dumps({"error": "nnx's GEMM is not built here"}))
                return
            args = (0, 0, m, n, k, a.ctypes.data, k, b.ctypes.data, n, 0.0, c.ctypes.data, n)

            def fn(args=args, lib=lib):
                lib.sgemm(*args)
        elif who == "torch":
            import torch

            torch.set_num_threads(1)
            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)

            def fn(ta=ta, tb=tb, tc=tc):
                torch.matmul(ta, tb, out=tc)
        else:
            def fn(a=a, b=b, c=c):
                np.matmul(a, b, out=c)
        loops = _loops(fn)
        out[name] = statistics.median(_time(fn, loops) for _ in range(rounds)) * 1e6
    info = threadpoolctl.threadpool_info()
    out["_blas"] = [i.get("architecture") for i in info if i.get("internal_api") == "openblas"]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.rounds)
        return
    env_auto = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    contestants = {"nnx": ("nnx", None), "openblas_env": ("openblas", None),
                   "openblas_autodetect": ("openblas", env_auto)}
    try:
        import torch  # noqa: F401
        contestants["torch"] = ("torch", None)
    except ImportError:
        pass
    got = {}
    for who, (child, env) in contestants.items():
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", child, "--rounds",
                              str(args.rounds)], capture_output=True, text=True, check=True, env=env)
        got[who] = json.loads(run.stdout.strip().splitlines()[-1])
    rows = {}
    for name, m, k, n in SHAPES:
        row = {who: round(r[name], 1) for who, r in got.items() if name in r}
        row["gflops"] = {who: round(2 * m * k * n / (t * 1e3), 1) for who, t in row.items()}
        row["shape"] = f"{m}x{k} @ {k}x{n}"
        rows[name] = row
        print(f"{name:50s} " + "  ".join(f"{w} {t:8.1f} us" for w, t in row.items() if isinstance(t, float)))
    write("gemm", {"benchmark": "float32 GEMM, one thread, microseconds per product (median)",
                   "openblas_core": {w: r.get("_blas") for w, r in got.items()},
                   "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
                   "machine": machine(), "rounds": args.rounds, "results": rows})


if __name__ == "__main__":
    main()
