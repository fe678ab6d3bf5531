"""One table of CPU training throughput at 1 and 2 threads: nnx, PyTorch CPU and the raw-NumPy
floor, nnx/torch ratios and the 1 -> 2 thread scaling, from benchmarks/results/{cnn,mlp,lstm}.json.

Usage: ``python benchmarks/scaling.py [scaling]``: without an argument, from the per-workload files
(after bench_cnn.py, bench_mlp.py, bench_lstm.py with ``--threads 1 2``); with ``scaling``, from
results/scaling.json (bench_scaling.py: thread counts interleaved too). Prints Markdown.
"""

from __future__ import annotations

import json
import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
WORKLOADS = [("ResNet basic block 64ch 32x32 b16", "cnn", ("resnet_basic_block", "results")),
             ("LeNet-5 b64", "cnn", ("lenet5", "results")),
             ("MLP 784-512-512-10 b128 Adam", "mlp", ("results",)),
             ("LSTM", "lstm", ("results",))]


def _get(node: dict, path: tuple[str, ...]) -> dict | None:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _median(res: dict, threads: int, who: str) -> float | None:
    entry = _get(res, (f"{threads}_thread", who))
    return entry["median"] if entry else None


def _fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


SCALING = [("ResNet basic block 64ch 32x32 b16", "scaling", ("resnet_basic_block", "results")),
           ("LeNet-5 b64", "scaling", ("lenet5", "results")),
           ("MLP 784-512-512-10 b128 Adam", "scaling", ("mlp", "results")),
           ("LSTM", "scaling", ("lstm", "results"))]


def main() -> None:
    chosen = SCALING if sys.argv[1:] == ["scaling"] else WORKLOADS
    lines = ["| workload | nnx 1 thr | torch 1 thr | floor 1 thr | nnx/torch 1 | nnx 2 thr | torch 2 thr | "
             "floor 2 thr | nnx/torch 2 | nnx 1->2 | torch 1->2 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for title, name, path in chosen:
        fn = os.path.join(RESULTS, f"{name}.json")
        if not os.path.exists(fn):
            continue
        with open(fn) as f:
            res = _get(json.load(f), path)
        if res is None:
            continue
        n1, n2 = _median(res, 1, "nnx"), _median(res, 2, "nnx")
        t1, t2 = _median(res, 1, "torch"), _median(res, 2, "torch")
        f1, f2 = _median(res, 1, "numpy_floor"), _median(res, 2, "numpy_floor")

        def ratio(a: float | None, b: float | None) -> str:
            return "—" if a is None or b is None else f"{a / b:.2f}"

        lines.append(f"| {title} | {_fmt(n1)} | {_fmt(t1)} | {_fmt(f1)} | {ratio(n1, t1)} | {_fmt(n2)} | "
                     f"{_fmt(t2)} | {_fmt(f2)} | {ratio(n2, t2)} | {ratio(n2, n1)} | {ratio(t2, t1)} |")
    print("Samples/s (medians of interleaved runs), higher is better.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
