"""Where Winograd F(2x2,3x3) / F(4x4,3x3) beats the im2col / flat-shift path (NumPy backend, float32).

For 3x3 stride-1 "same" convolutions over a grid of channel counts, map sizes and batch sizes,
times forward + backward (both gradients) of ``nnx.functional.conv2d_forward`` with
``winograd.MODE`` forced to ``"off"``, ``"f2"`` and ``"f4"``, interleaved, medians; wall time and
process CPU time (``time.process_time``: the machine may be shared). The automatic rule in
``nnx/functional/winograd.py`` (``AUTO_MIN_CHANNELS``, ``AUTO_MIN_SIZE``) is read off this table.

The Winograd modes run before ``"off"`` in each round, and each round ends with a 0.3 s pause: at
2+ threads the im2col path's GEMMs run on OpenBLAS's own threads, which then spin for up to
~0.1 s and take the core that nnx's pool would use for the Winograd transforms next (measured: the
F(4x4) input transform at 2 threads 1.4 ms alone, 2.4 ms right after a threaded GEMM). And each
timed run follows an untimed call of the same path, so that its buffers are in the heap, as in
every step after the first of a training run (the first call after another path's page-faults
them: up to 1.5x its steady time). Each path is timed as it runs in a network made of it.

Usage: ``python benchmarks/bench_winograd.py [--quick] [--threads 1 2] [--repeats 5]``.
Writes benchmarks/results/winograd.json.
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
from common import machine, threads, write  # noqa: E402


def run_once(x, w, dy, mode: str, steps: int) -> tuple[float, float]:
    from nnx.functional import conv2d_forward, winograd

    winograd.MODE = mode
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        _, back = conv2d_forward(x, w, None, 1, 1)
        back(dy)
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import nnx

    nnx.set_backend("numpy")
    grid = [(16, 16, 32), (16, 32, 32), (16, 64, 32), (16, 64, 16), (16, 64, 8), (16, 128, 16),
            (16, 128, 8), (16, 256, 8), (64, 16, 28), (4, 64, 32), (64, 64, 4), (8, 64, 56), (16, 128, 32),
            (16, 256, 16)]
    if args.quick:
        grid = grid[:3]
    rng = np.random.default_rng(0)
    rows = []
    modes = ("f2", "f4", "off")  # "off" last: see the module doc
    for n_threads in args.threads:
        with threads(n_threads):
            for batch, ch, size in grid:
                x = rng.standard_normal((batch, ch, size, size), dtype=np.float32)
                w = rng.standard_normal((ch, ch, 3, 3), dtype=np.float32) * 0.1
                dy = rng.standard_normal((batch, ch, size, size), dtype=np.float32)
                steps = max(1, int(2e8 / (batch * ch * ch * size * size * 9)))
                for mode in modes:  # warm-up
                    run_once(x, w, dy, mode, 1)
                time.sleep(0.3)
                wall = {m: [] for m in modes}
                cpu = {m: [] for m in modes}
                for _ in range(args.repeats):
                    for mode in modes:
                        run_once(x, w, dy, mode, 1)  # steady state: this path's buffers in the heap
                        a, c = run_once(x, w, dy, mode, steps)
                        wall[mode].append(a)
                        cpu[mode].append(c)
                    time.sleep(0.3)  # OpenBLAS's workers back asleep before the next round
                row = {"threads": n_threads, "batch": batch, "channels": ch, "size": size}
                for mode in modes:
                    row[f"{mode}_ms"] = round(1e3 * statistics.median(wall[mode]), 3)
                    row[f"{mode}_cpu_ms"] = round(1e3 * statistics.median(cpu[mode]), 3)
                row["f2_speedup"] = round(row["off_ms"] / row["f2_ms"], 3)
                row["f4_speedup"] = round(row["off_ms"] / row["f4_ms"], 3)
                rows.append(row)
                print(row, file=sys.stderr)
    from nnx.functional import winograd

    winograd.MODE = "auto"
    write("winograd", {"benchmark": "winograd", "machine": machine(), "quick": args.quick,
                       "what": "conv2d 3x3 stride 1 pad 1, forward + backward (dx, dW), float32, ms per call",
                       "rows": rows})


if __name__ == "__main__":
    main()
