"""Minor page faults per training step, per workload, contestant and thread count: the steps of
``bench_scaling.py``, each contestant alone in a process of its own.

A step that allocates large buffers the allocator hands back to the system between steps faults
their pages in again every step (a kernel round trip per 4 KiB page, costly in a VM); a step that
reuses its buffers faults none. Counted with ``getrusage`` over ``--steps`` steps after 30
warm-up steps.

Usage: ``python benchmarks/page_faults.py [--workloads mlp lenet5] [--threads 1 2] [--steps 300]``.
Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("resnet_basic_block", "lenet5", "mlp", "lstm")


def _child(name: str, who: str, n: int, steps: int) -> None:
    sys.path.insert(0, HERE)
    import bench_scaling

    from common import threads

    _, _, fns = bench_scaling._build(name, who)
    step = fns[who]
    with threads(n):
        for _ in range(30):
            step()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"workload": name, "contestant": who, "threads": n,
                      "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
                      "system_s_per_step": (r1.ru_stime - r0.ru_stime) / steps,
                      "ms_per_step": wall / steps * 1e3}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=["lenet5", "mlp"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--child", nargs=3, metavar=("WORKLOAD", "CONTESTANT", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]), args.steps)
        return
    for name in args.workloads:
        for n in args.threads:
            for who in ("nnx", "torch"):
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--steps", str(args.steps),
                                      "--child", name, who, str(n)], capture_output=True, text=True, check=True)
                print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
