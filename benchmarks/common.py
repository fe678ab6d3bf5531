"""Shared helpers of the benchmark scripts: machine description, thread limits, timing, JSON out."""

from __future__ import annotations

import json
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
    """Limit NumPy's BLAS and PyTorch's intra-op pool to ``n`` threads inside the block."""
    import threadpoolctl

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
    """
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            samples[name].append(run())
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for k, v in samples.items()}


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
