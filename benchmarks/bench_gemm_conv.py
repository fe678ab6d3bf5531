"""The GEMM convolution (``nnx/functional/_gemm_conv.py``: per sample a padding, an im2col of
contiguous runs and one cblas GEMM, on nnx's C thread pool) against the paths it replaced (the
flat-shift path, and im2col for 1x1 kernels), forward + both gradients, float32, NumPy backend.

Each path runs alone in a process of its own (``_gemm_conv.ENABLED`` switches), the processes
alternated ``--repeats`` times at 1 and 2 threads; each process times 7 runs of 5 steps per shape
(median). Medians over the repeats. Not in one process: the flat-shift path's Python pool and the C
pool's spinning workers would share the two cores (measured in one process, the 2-thread timings
of both paths came out up to 2x slower than alone). The shapes: a pointwise 64 -> 128 layer, 3x3
layers below Winograd's channel counts or sizes, LeNet-5's second layer, and 5x5 layers.

Usage: ``python benchmarks/bench_gemm_conv.py [--repeats 5]``. Writes benchmarks/results/gemm_conv.json.
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

#: (batch, in channels, size, out channels, kernel, padding)
SHAPES = [(16, 64, 16, 128, 1, 0), (16, 8, 32, 16, 3, 1), (32, 16, 28, 32, 3, 0), (8, 128, 8, 128, 3, 1),
          (64, 6, 14, 16, 5, 0), (16, 32, 16, 64, 5, 2)]


def child(enabled: bool, threads: int) -> list[float]:
    """Milliseconds per forward + backward step of every shape, on one path, in this process."""
    import nnx
    from nnx.functional import _gemm_conv
    from nnx.functional.convolution import conv2d_forward

    nnx.set_backend("numpy")
    nnx.set_num_threads(threads)
    _gemm_conv.ENABLED = enabled
    rng = np.random.default_rng(0)
    out = []
    for n, c, h, o, k, p in SHAPES:
        x = nnx.asarray(rng.standard_normal((n, c, h, h)).astype(np.float32))
        w = nnx.asarray((rng.standard_normal((o, c, k, k)) * 0.1).astype(np.float32))
        b = nnx.asarray(np.zeros(o, np.float32))

        def step(x=x, w=w, b=b, p=p) -> None:
            y, back = conv2d_forward(x, w, b, 1, p)
            back(y)

        for _ in range(3):
            step()
        times = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(5):
                step()
            times.append((time.perf_counter() - t) / 5 * 1e3)
        out.append(statistics.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("ENABLED", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0] == "1", int(args.child[1]))))
        return
    import nnx

    nnx.set_backend("numpy")
    if not nnx.get_backend().fast_gemm_conv():
        sys.exit("the GEMM convolution needs the host kernels and NumPy's OpenBLAS")
    runs = {(on, t): [] for on in (0, 1) for t in (1, 2)}
    for _ in range(args.repeats):
        for t in (1, 2):
            for on in (0, 1):
                got = subprocess.run([sys.executable, __file__, "--child", str(on), str(t)], capture_output=True,
                                     text=True, check=True)
                runs[(on, t)].append(json.loads(got.stdout.strip().splitlines()[-1]))
    rows = []
    for i, (n, c, h, o, k, p) in enumerate(SHAPES):
        row = {"shape": f"{n}x{c}x{h}x{h} -> {o}, {k}x{k}, pad {p}"}
        for t in (1, 2):
            old = statistics.median(r[i] for r in runs[(0, t)])
            new = statistics.median(r[i] for r in runs[(1, t)])
            row[f"ms_before_{t}"], row[f"ms_gemm_{t}"], row[f"speedup_{t}"] = round(old, 3), round(new, 3), round(
                old / new, 2)
        rows.append(row)
        print(f"{row['shape']:34s} 1 thread {row['ms_before_1']:7.2f} -> {row['ms_gemm_1']:7.2f} ms "
              f"(x{row['speedup_1']:.2f})   2 threads {row['ms_before_2']:7.2f} -> {row['ms_gemm_2']:7.2f} ms "
              f"(x{row['speedup_2']:.2f})")
    write("gemm_conv", {"machine": machine(), "method": "each path alone in a process, alternated", "rows": rows})


if __name__ == "__main__":
    main()
