"""The single-thread threshold of nnx's elementwise pool (``MIN_PARALLEL_ELEMENTS``).

Times one fused multiply-add pass (``b = 1.5 * a; b += a``, float32) split by
``nnx_backends.threads.parallel_rows`` at 1 and 2 threads over array sizes 2^12 .. 2^22,
interleaved, medians of wall time (and process CPU time); prints the speed-up per size.

Usage: ``python benchmarks/bench_threads.py [--repeats 7]``. Writes benchmarks/results/threads.json.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import nnx_backends.threads as T

    old_min = T.MIN_PARALLEL_ELEMENTS
    T.MIN_PARALLEL_ELEMENTS = 0
    rows = []
    for log2 in range(12, 23, 2):
        n = 1 << log2
        a = np.random.default_rng(0).random((n // 64, 64), dtype=np.float32)
        b = np.empty_like(a)

        def work(lo: int, hi: int, a=a, b=b) -> None:
            np.multiply(a[lo:hi], 1.5, out=b[lo:hi])
            b[lo:hi] += a[lo:hi]

        reps = max(3, int(5e7 / n))
        wall: dict[int, list[float]] = {1: [], 2: []}
        cpu: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for threads in (1, 2):
                T._state["threads"] = threads
                T.parallel_rows(work, a.shape[0], a.size)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(reps):
                    T.parallel_rows(work, a.shape[0], a.size)
                wall[threads].append((time.perf_counter() - t0) / reps * 1e6)
                cpu[threads].append((time.process_time() - c0) / reps * 1e6)
        w1, w2 = statistics.median(wall[1]), statistics.median(wall[2])
        rows.append({"elements": n, "us_1_thread": round(w1, 1), "us_2_threads": round(w2, 1),
                     "cpu_us_1": round(statistics.median(cpu[1]), 1), "cpu_us_2": round(statistics.median(cpu[2]), 1),
                     "speedup": round(w1 / w2, 2)})
        print(rows[-1], file=sys.stderr)
    T.MIN_PARALLEL_ELEMENTS = old_min
    T._state["threads"] = None
    write("threads", {"benchmark": "elementwise pool threshold", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
