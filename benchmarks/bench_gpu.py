"""nnx against PyTorch eager on the issue-8 workloads: one training step, median time.

    python benchmarks/bench_gpu.py                                   # nnx on CuPy vs PyTorch CUDA
    python benchmarks/bench_gpu.py --backend numpy --device cpu --tiny   # CPU smoke run (seconds)

For each workload and batch size (benchmarks/workloads.py): ``--warmup`` untimed steps, then
``--repeats`` timed steps, each timed alone with a device synchronisation before and after
(``nnx.synchronize()``, ``torch.cuda.synchronize()``), and the median reported with the
launch count of the nnx step. Writes JSON to ``benchmarks/results/gpu_<backend>.json`` (``--out``)
and prints a summary table; ``speedup`` > 1 means nnx is faster. ``--budget`` seconds bound the
whole run (the remaining workloads are skipped and reported as such).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import WORKLOADS, nnx_step, torch_step  # noqa: E402

import nnx  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TINY = {"mlp": (8,), "lenet": (4,), "resnet_block": (2,), "lstm": (4,), "gru": (4,)}


def _time(step: Any, sync: Any, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _versions(backend: str) -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {"nnx": nnx.__version__, "numpy": np.__version__, "backend": backend}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except ImportError:
        pass
    return info


def run(backend: str, device: str | None, tiny: bool, warmup: int, repeats: int, budget: float,
        only: list[str] | None = None) -> dict[str, Any]:
    """Time every workload; returns the JSON document."""
    import torch

    tdev = "cuda" if backend == "cupy" else (device or "cpu")
    tsync = (lambda: torch.cuda.synchronize()) if tdev.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    rows = []
    for name, batches in (TINY if tiny else WORKLOADS).items():
        if only and name not in only:
            continue
        for batch in batches:
            if time.perf_counter() - start > budget:
                rows.append({"workload": name, "batch": batch, "skipped": f"time budget of {budget:.0f} s spent"})
                continue
            with nnx.use_backend(backend, None if device in (None, "cpu") and backend == "numpy" else device):
                step = nnx_step(name, batch, tiny=tiny)
                t_nnx = _time(step, nnx.synchronize, warmup, repeats)
            t_torch = _time(torch_step(name, batch, tdev, tiny=tiny), tsync, warmup, repeats)
            rows.append({"workload": name, "batch": batch, "nnx_ms": round(t_nnx * 1e3, 4),
                         "torch_ms": round(t_torch * 1e3, 4), "speedup": round(t_torch / t_nnx, 3)})
            print(json.dumps(rows[-1]), flush=True)
    return {"versions": _versions(backend), "torch_device": tdev, "tiny": tiny, "warmup": warmup,
            "repeats": repeats, "results": rows}


def table(doc: dict[str, Any]) -> str:
    """A plain-text summary table."""
    lines = [f"{'workload':<14}{'batch':>6}{'nnx ms':>11}{'torch ms':>11}{'nnx speed':>11}"]
    for r in doc["results"]:
        if "skipped" in r:
            lines.append(f"{r['workload']:<14}{r['batch']:>6}  skipped: {r['skipped']}")
        else:
            lines.append(f"{r['workload']:<14}{r['batch']:>6}{r['nnx_ms']:>11.3f}{r['torch_ms']:>11.3f}"
                         f"{r['speedup']:>10.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy", help="nnx backend (cupy on a GPU; numpy for a CPU smoke run)")
    parser.add_argument("--device", default=None, help="nnx device (PyTorch runs on CUDA for cupy, else this)")
    parser.add_argument("--tiny", action="store_true", help="tiny batch sizes and shapes (a smoke run)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_<backend>.json)")
    args = parser.parse_args(argv)
    doc = run(args.backend, args.device, args.tiny, args.warmup, args.repeats, args.budget, args.workload)
    out = args.out or os.path.join(RESULTS, f"gpu_{args.backend}{'_tiny' if args.tiny else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    print(table(doc))
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
