"""Device operations (kernel launches) per training step of the issue-8 workloads.

    python benchmarks/launches.py            # JSON lines {"workload", "batch", "ops_per_step", ...}
    python benchmarks/launches.py --unfused  # count the pure-standard references of adapter methods
    python benchmarks/launches.py --torch    # the reference: PyTorch eager's own step (ATen ops)

Counted with ``nnx.count_launches()`` on ``nnx.launches.counting_backend()``: NumPy arithmetic,
every operation counted as CuPy would launch it (one per adapter method / fused kernel, views
excluded). The counted step is the second one (the optimizer's state exists by then), so the
number is the steady state. Exact and deterministic; ``tests/benchmarks/test_launches_pinned.py`` pins it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import WORKLOADS, nnx_step, torch_step  # noqa: E402

import nnx  # noqa: E402


def count(name: str, batch: int, fused: bool = True, tiny: bool = False) -> nnx.launches.LaunchCount:
    """Launches of one steady-state training step of ``name`` at ``batch``."""
    with nnx.use_backend(nnx.launches.counting_backend(fused=fused)):
        step = nnx_step(name, batch, tiny=tiny)
        step()
        with nnx.count_launches() as n:
            step()
    return n


def count_torch(name: str, batch: int) -> nnx.launches.LaunchCount:
    """ATen operators of one steady-state PyTorch eager step (autograd, default optimizers)."""
    from nnx_backends.counting import torch_meter

    step = torch_step(name, batch)
    step()
    with torch_meter() as n:
        step()
    return n


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unfused", action="store_true", help="count the NumPy operations inside adapter methods")
    parser.add_argument("--torch", action="store_true", help="count PyTorch eager's own step instead")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="only these (repeatable)")
    parser.add_argument("--top", type=int, default=5, help="how many of the most frequent ops to list")
    args = parser.parse_args(argv)
    rows = []
    for name, batches in WORKLOADS.items():
        if args.workload and name not in args.workload:
            continue
        for batch in batches:
            n = count_torch(name, batch) if args.torch else count(name, batch, fused=not args.unfused)
            mode = "torch" if args.torch else ("unfused" if args.unfused else "cupy")
            row = {"workload": name, "batch": batch, "ops_per_step": n.total, "syncs_per_step": sum(n.syncs.values()),
                   "mode": mode, "top_ops": dict(n.by_op.most_common(args.top))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
