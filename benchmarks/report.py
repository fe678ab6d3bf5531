"""Render benchmarks/results/*.json as the Markdown tables of the README.

Usage: ``python benchmarks/report.py [results/mlp.json ...]``. A table is made of every group of
contestants (a dict whose entries carry a ``median``); the ratio column divides nnx's median
throughput by each contestant's (above 1: nnx is faster).
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def groups(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, dict]]]:
    """Yield (path, {contestant: stats}) for every dict of contestants with a median."""
    if isinstance(node, dict):
        entries = {k: v for k, v in node.items() if isinstance(v, dict) and "median" in v}
        if entries:
            yield path, entries
        for k, v in node.items():
            if isinstance(v, dict) and "median" not in v:
                yield from groups(v, path + (k,))


def table(title: str, entries: dict[str, dict], unit: str) -> str:
    ref = next((v["median"] for k, v in entries.items() if k.startswith("nnx")), None)
    lines = [f"**{title}**", "", f"| implementation | {unit} (median) | min – max | nnx / this |",
             "| --- | ---: | ---: | ---: |"]
    for name, st in entries.items():
        ratio = f"{ref / st['median']:.2f}" if ref else "—"
        lines.append(f"| {name} | {st['median']:,.0f} | {st['min']:,.0f} – {st['max']:,.0f} | {ratio} |")
    return "\n".join(lines)


def render(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    m = data.get("machine", {})
    unit = data.get("unit", "samples/s")
    blas = next((b for b in m.get("blas", []) if b.get("internal_api") == "openblas"), {})
    env = ", ".join(f"{k}={v}" for k, v in sorted(m.get("env", {}).items())) or "no OPENBLAS_* variables"
    head = [f"### {data.get('benchmark', os.path.basename(path))}", "",
            f"{m.get('date', '?')}, {m.get('cpu', '?')}, {m.get('cores', '?')} cores, NumPy {m.get('numpy', '?')} "
            f"(OpenBLAS {blas.get('version', '?')}, {blas.get('architecture', '?')} kernels; {env}), "
            f"PyTorch {m.get('torch', '—')}; medians of {data.get('repeats', '?')} interleaved repeats. "
            f"Source: `benchmarks/results/{os.path.basename(path)}`.", ""]
    measured = {k: v for k, v in data.items() if k != "machine"}
    body = [table(" / ".join(k for k in p if k != "results") or "results", e, unit) for p, e in groups(measured)]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n"


def main() -> None:
    paths = sys.argv[1:] or sorted(glob.glob(os.path.join(HERE, "results", "*.json")))
    print("\n".join(render(p) for p in paths))


if __name__ == "__main__":
    main()
