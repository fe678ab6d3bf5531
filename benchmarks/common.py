"""Shared helpers of the benchmark scripts: machine description, thread limits, timing, JSON out."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU, core count, library versions, BLAS, relevant environment."""
    import numpy as np

    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))},
    }
    try:
        import threadpoolctl

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                        for d in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Limit NumPy's BLAS, nnx's elementwise pool (``nnx.set_num_threads``) and PyTorch's intra-op
    pool to ``n`` threads inside the block."""
    import threadpoolctl

    try:
        import nnx

        old_nnx = nnx.get_num_threads()
        nnx.set_num_threads(n)
    except (ImportError, AttributeError):
        nnx, old_nnx = None, None

    try:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(n)
    except ImportError:
        torch, old = None, None
    with threadpoolctl.threadpool_limits(limits=n):
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old)
            if nnx is not None:
                nnx.set_num_threads(old_nnx)


def time_steps(step: Callable[[], None], n_steps: int, warmup: int, sync: Callable[[], None] | None = None) -> float:
    """Seconds for ``n_steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    if sync:
        sync()
    return time.perf_counter() - t0


def interleaved(runners: dict[str, Callable[[], float]], repeats: int) -> dict[str, dict[str, Any]]:
    """Run every runner once per round, ``repeats`` rounds; each returns a throughput.

    Interleaving spreads slow phases of a noisy machine over all contestants; medians are quoted.
    ``cpu_per_wall`` is the median of process CPU time (``time.process_time``) over wall time per
    run: about the number of busy cores (a shared machine shows up as a low value at n threads).
    """
    samples: dict[str, list[float]] = {k: [] for k in runners}
    busy: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            samples[name].append(run())
            busy[name].append((time.process_time() - c0) / max(time.perf_counter() - t0, 1e-9))
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v,
                "cpu_per_wall": round(statistics.median(busy[k]), 2)} for k, v in samples.items()}


def write(name: str, payload: dict[str, Any]) -> str:
    """Print ``payload`` as JSON and write it to benchmarks/results/<name>.json."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    text = json.dumps(payload, indent=2, sort_keys=False)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)
    return path


class Batches:
    """Cycles through ``(x, y)`` in fixed consecutive batches: the same order for every contestant."""

    def __init__(self, x: Any, y: Any, batch: int) -> None:
        self.x, self.y, self.batch, self.i = x, y, batch, 0

    def next(self) -> tuple[Any, Any]:
        i, b = self.i, self.batch
        self.i = (i + b) % (len(self.x) - b)
        return self.x[i:i + b], self.y[i:i + b]


class NumpyAdam:
    """The raw-NumPy floors' Adam: torch.optim.Adam's arithmetic, in place, one scratch buffer per parameter."""

    def __init__(self, params: list, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import numpy as np

        self.params, self.lr, (self.b1, self.b2), self.eps, self.t = params, lr, betas, eps, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.scratch = [np.empty_like(p) for p in params]

    def step(self, grads: list) -> None:
        import numpy as np

        self.t += 1
        b1, b2 = self.b1, self.b2
        step_size = self.lr / (1 - b1 ** self.t)
        inv_bc2 = 1.0 / math.sqrt(1 - b2 ** self.t)
        for p, g, mm, vv, s in zip(self.params, grads, self.m, self.v, self.scratch):
            mm *= b1
            mm += (1 - b1) * g
            np.multiply(g, g, out=s)
            vv *= b2
            s *= 1 - b2
            vv += s
            np.sqrt(vv, out=s)
            s *= inv_bc2
            s += self.eps
            np.divide(mm, s, out=s)
            s *= step_size
            p -= s
