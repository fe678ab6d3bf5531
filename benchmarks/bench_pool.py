"""The single-thread thresholds of nnx's C thread pool (``host_pool.c``): ``MIN_TASK_ELEMENTS``
(``host_kernels.py``) and ``MIN_POOL_MACS`` (``threads.py``).

Times, at 1 and 2 threads, interleaved, medians of wall time:

* the ReLU backward task (``nnx_task_relu_bwd``, float32: one read of two arrays, one write) over
  2^10 .. 2^20 elements;
* ``threads.pool_matmul`` against ``numpy.matmul`` on one thread (OpenBLAS held at one, as the pool
  holds it) for float32 products of 2^17 .. 2^25 multiply-adds (``m x k @ k x n``, square-ish).

Usage: ``python benchmarks/bench_pool.py [--repeats 7]``. Writes benchmarks/results/pool.json.
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
from common import machine, write  # noqa: E402


def _time(f, reps: int = 200) -> float:
    for _ in range(20):
        f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import nnx
    import nnx_backends.host_kernels as HK
    import nnx_backends.threads as T

    lib = HK.kernels()
    if lib is None or T.cblas_gemm() is None:
        sys.exit(f"the C pool needs the host kernels and NumPy's OpenBLAS ({HK.reason()})")
    HK.MIN_TASK_ELEMENTS, T.MIN_POOL_MACS = 0, 0
    old = T.get_num_threads()
    rng = np.random.default_rng(0)
    relu, gemm = [], []
    for log2 in range(10, 21, 2):
        n = 1 << log2
        g, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
        d = np.empty_like(g)
        args_ = (g.ctypes.data, y.ctypes.data, d.ctypes.data)
        times = {1: [], 2: []}
        for _ in range(args.repeats):
            for t in (1, 2):
                times[t].append(_time(lambda t=t, w=args_, n=n: lib.run("relu_bwd", np.dtype(np.float32), w, n, n, t)))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        relu.append({"elements": n, "us_1_thread": round(one, 2), "us_2_threads": round(two, 2),
                     "speedup": round(one / two, 2)})
        print(f"relu_bwd 2^{log2:<2d}  1 thread {one:8.1f} us  2 threads {two:8.1f} us  x{one / two:.2f}")
    for log2 in range(17, 26, 2):
        side = round((1 << log2) ** (1 / 3))
        a = rng.standard_normal((side, side), dtype=np.float32)
        b = rng.standard_normal((side, side), dtype=np.float32)
        times = {"numpy": [], "pool": []}
        for _ in range(args.repeats):
            nnx.set_num_threads(1)
            times["numpy"].append(_time(lambda a=a, b=b: np.matmul(a, b), 50))
            nnx.set_num_threads(2)
            T.hold_blas_one_thread()
            times["pool"].append(_time(lambda a=a, b=b: T.pool_matmul(a, b), 50))
        one, two = statistics.median(times["numpy"]), statistics.median(times["pool"])
        gemm.append({"shape": side, "macs": side ** 3, "us_numpy_1_thread": round(one, 2),
                     "us_pool_2_threads": round(two, 2), "speedup": round(one / two, 2)})
        print(f"matmul {side}^3 ({side ** 3:>9d} MACs)  numpy 1 thread {one:8.1f} us  pool 2 threads {two:8.1f} us"
              f"  x{one / two:.2f}")
    nnx.set_num_threads(old)
    write("pool", {"machine": machine(), "relu_bwd": relu, "matmul": gemm})


if __name__ == "__main__":
    main()
