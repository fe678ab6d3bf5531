"""Direct convolution (``nnx/functional/_direct_conv.py``, the NumPy host kernels) against the
flat-shift / im2col path, per shape: forward + weight gradient (a first layer: no input gradient)
and forward + both gradients, float32, NumPy backend.

Both paths run interleaved in one process (``_direct_conv.MAX_TAPS`` switched between calls), an
untimed call of each path first; medians of ``--repeats`` timed runs. Ratio = flat-shift time /
direct time (above 1: direct faster). The rule's limits (``MAX_TAPS``, ``MAX_IN``, ``MAX_OUT``)
were read off this table.

Usage: ``python benchmarks/bench_direct_conv.py [--repeats 7] [--threads 1 2]``; writes
benchmarks/results/direct_conv.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import machine, threads, write  # noqa: E402

# (batch, in channels, out channels, kernel, padding, map side)
SHAPES = [
    (64, 1, 6, 5, 2, 28),     # LeNet-5's first layer
    (64, 6, 16, 5, 0, 14),    # LeNet-5's second layer
    (64, 1, 16, 5, 2, 28),
    (64, 1, 32, 3, 1, 28),
    (64, 3, 6, 5, 2, 32),
    (16, 3, 16, 3, 1, 32),
    (16, 3, 32, 3, 1, 32),
    (64, 2, 8, 3, 1, 28),
    (16, 16, 16, 3, 1, 32),
]


def _time(fn, repeats: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import nnx
    from nnx.functional import _direct_conv, conv2d_forward

    nnx.set_backend("numpy")
    rng = np.random.default_rng(0)
    limit = _direct_conv.MAX_TAPS, _direct_conv.MAX_IN, _direct_conv.MAX_OUT
    rows = []
    for n, c, o, k, p, side in SHAPES:
        x = rng.standard_normal((n, c, side, side), dtype=np.float32)
        w = rng.standard_normal((o, c, k, k), dtype=np.float32)
        bias = rng.standard_normal(o, dtype=np.float32)
        dy = rng.standard_normal((n, o, side + 2 * p - k + 1, side + 2 * p - k + 1), dtype=np.float32)
        row = {"shape": [n, c, o, k, p, side]}
        for nt in args.threads:
            with threads(nt):
                for input_grad in (False, True):
                    times = {}
                    for path in ("direct", "flat_shift", "direct", "flat_shift"):
                        _direct_conv.MAX_TAPS, _direct_conv.MAX_IN, _direct_conv.MAX_OUT = \
                            (10**9, 10**9, 10**9) if path == "direct" else (None, 0, 0)

                        def step(ig=input_grad, x=x, w=w, bias=bias, p=p, dy=dy):
                            _, back = conv2d_forward(x, w, bias, padding=p)
                            back(dy, ig)

                        times.setdefault(path, []).append(_time(step, args.repeats))
                    d, f = min(times["direct"]), min(times["flat_shift"])
                    key = f"{nt}_thread_{'dx' if input_grad else 'no_dx'}"
                    row[key] = {"direct_ms": round(d, 3), "flat_shift_ms": round(f, 3), "ratio": round(f / d, 2)}
        rows.append(row)
        print(row, flush=True)
    _direct_conv.MAX_TAPS, _direct_conv.MAX_IN, _direct_conv.MAX_OUT = limit
    write("direct_conv", {"benchmark": "conv2d forward + backward, direct kernels vs flat shift (ms; ratio = "
                          "flat/direct)", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
