"""Old vs current recurrent kernels: one training step of LSTM, GRU and RNN-tanh, interleaved.

Workload (as ``bench_lstm.py``): input 32, hidden 128, 32 steps, batch 64, float32, time-major,
a linear head on the last hidden state, cross-entropy over 10 classes, Adam; one step is
forward + backward + optimizer step on the NumPy backend.

Each contestant runs in its own long-lived subprocess at one BLAS thread (``OPENBLAS_NUM_THREADS=1``
and friends, ``threadpoolctl``, ``nnx.set_num_threads(1)``, ``torch.set_num_threads(1)``):

- ``old``: the nnx tree given by ``--old`` (e.g. a detached worktree of an earlier commit);
- ``new``: the nnx tree given by ``--new`` (default: the tree this script lives in);
- ``torch``: PyTorch CPU ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` with ``torch.optim.Adam`` (reference).

The driver sends them work in alternating rounds (order reversed every other round, one process
busy at a time) and collects the CPU time (``time.process_time``) and wall time of every single
step. On a shared machine the CPU time is the steadier figure; both are reported as medians.

Usage::

    git worktree add --detach /tmp/nnx-old <commit>
    python benchmarks/bench_rnn_regression.py --old /tmp/nnx-old [--rounds 21] [--steps 8]

Prints one JSON line per (cell, contestant) and one summary line per cell with the ratios
``new/old`` (above 1: the current code is slower) and ``new/torch``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any

INPUT, HIDDEN, STEPS, BATCH, CLASSES = 32, 128, 32, 64, 10
N_BATCHES = 8
CELLS = ("lstm", "gru", "rnn")
HERE = os.path.dirname(os.path.abspath(__file__))
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


# ============================================================================ worker side
def _import_tree(tree: str) -> Any:
    """Import ``nnx`` and ``nnx_backends`` (folder ``backends/``) from the source tree ``tree``."""
    tree = os.path.abspath(tree)
    spec = importlib.util.spec_from_file_location("nnx_backends", os.path.join(tree, "backends", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(tree, "backends")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["nnx_backends"] = module
    spec.loader.exec_module(module)
    sys.path.insert(0, tree)
    import nnx

    for mod in (nnx, module):
        if not os.path.abspath(mod.__file__).startswith(tree + os.sep):
            raise RuntimeError(f"bench_rnn_regression: {mod.__name__} came from {mod.__file__}, not from {tree}")
    return nnx


def _data(np: Any) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_BATCHES, STEPS, BATCH, INPUT), dtype=np.float32)
    y = rng.integers(0, CLASSES, (N_BATCHES, BATCH)).astype(np.int64)
    return x, y


def _nnx_stepper(nnx: Any, cell: str, x: Any, y: Any) -> Any:
    nnx.set_backend("numpy")
    nnx.manual_seed(0)
    rnn = {"lstm": nnx.LSTM, "gru": nnx.GRU, "rnn": nnx.RNN}[cell](INPUT, HIDDEN)
    head = nnx.Linear(HIDDEN, CLASSES)
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
    i = [0]

    def step() -> None:
        k = i[0] = (i[0] + 1) % N_BATCHES
        _, state = rnn(x[k])
        h_n = state[0] if cell == "lstm" else state
        loss_fn(head(h_n[0]), y[k])
        dh = head.backward(loss_fn.backward())
        rnn.backward(None, dh[None], input_grad=False)
        opt.step()
        opt.zero_grad()

    return step


def _torch_stepper(torch: Any, cell: str, x: Any, y: Any) -> Any:
    torch.manual_seed(0)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](INPUT, HIDDEN)
    head = torch.nn.Linear(HIDDEN, CLASSES)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    i = [0]

    def step() -> None:
        k = i[0] = (i[0] + 1) % N_BATCHES
        _, state = rnn(xs[k])
        h_n = state[0] if cell == "lstm" else state
        loss_fn(head(h_n[0]), ys[k]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def worker(tree: str) -> None:
    """Serve ``<cell> <steps>`` lines from stdin: run that many timed steps, answer a JSON line
    ``{"cpu": [...], "wall": [...]}`` (seconds per step)."""
    import numpy as np
    import threadpoolctl

    threadpoolctl.threadpool_limits(1)
    if tree == "torch":
        import torch

        torch.set_num_threads(1)
        make, lib, origin = _torch_stepper, torch, f"torch {torch.__version__}"
    else:
        nnx = _import_tree(tree)
        if hasattr(nnx, "set_num_threads"):
            nnx.set_num_threads(1)
        make, lib, origin = _nnx_stepper, nnx, os.path.dirname(os.path.dirname(os.path.abspath(nnx.__file__)))
    x, y = _data(np)
    steppers: dict[str, Any] = {}
    print(json.dumps({"ready": origin}), flush=True)
    for line in sys.stdin:
        cell, n = line.split()
        if cell not in steppers:
            steppers[cell] = make(lib, cell, x, y)
            for _ in range(3):
                steppers[cell]()
        step = steppers[cell]
        cpu, wall = [], []
        for _ in range(int(n)):
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
        print(json.dumps({"cpu": cpu, "wall": wall}), flush=True)


# ============================================================================ driver side
class Contestant:
    def __init__(self, name: str, tree: str) -> None:
        env = {**os.environ, **ONE_THREAD}
        env.pop("PYTHONPATH", None)
        self.name = name
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", tree],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        self.origin = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench_rnn_regression: worker {self.name} died")
        return json.loads(line)

    def run(self, cell: str, n: int) -> dict:
        self.proc.stdin.write(f"{cell} {n}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _summary(values: list[float]) -> dict:
    ms = sorted(v * 1e3 for v in values)
    q = statistics.quantiles(ms, n=4)
    return {"median_ms": round(statistics.median(ms), 3), "q1_ms": round(q[0], 3), "q3_ms": round(q[2], 3)}


def _round_medians(rounds: list[list[float]]) -> list[float]:
    return [statistics.median(r) for r in rounds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--old", help="path of the old nnx source tree")
    parser.add_argument("--new", default=os.path.dirname(HERE), help="path of the current tree (default: this one)")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds per cell")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per contestant and round")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch reference")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if not args.old:
        parser.error("--old PATH is required")
    trees = {"old": args.old, "new": args.new}
    if not args.no_torch:
        trees["torch"] = "torch"
    contestants = [Contestant(name, tree) for name, tree in trees.items()]
    try:
        for cell in args.cells:
            _measure(cell, contestants, args.rounds, args.steps)
    finally:
        for c in contestants:
            c.close()


def _measure(cell: str, contestants: list[Contestant], rounds: int, steps: int) -> None:
    cpu: dict[str, list[float]] = {c.name: [] for c in contestants}
    wall: dict[str, list[float]] = {c.name: [] for c in contestants}
    per_round: dict[str, list[list[float]]] = {c.name: [] for c in contestants}
    for r in range(rounds):
        for c in (contestants if r % 2 == 0 else contestants[::-1]):
            res = c.run(cell, steps)
            cpu[c.name] += res["cpu"]
            wall[c.name] += res["wall"]
            per_round[c.name].append(res["cpu"])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    med = {}
    for c in contestants:
        line = {"cell": cell, "contestant": c.name, "origin": c.origin, "steps": len(cpu[c.name]),
                "cpu": _summary(cpu[c.name]), "wall": _summary(wall[c.name])}
        med[c.name] = (line["cpu"]["median_ms"], line["wall"]["median_ms"])
        print(json.dumps(line), flush=True)
    summary: dict[str, Any] = {"cell": cell, "date": date, "load": os.getloadavg()[0], "cores": os.cpu_count(),
                               "rounds": rounds, "steps_per_round": steps}
    if "old" in med:
        summary["new_over_old_cpu"] = round(med["new"][0] / med["old"][0], 3)
        summary["new_over_old_wall"] = round(med["new"][1] / med["old"][1], 3)
        # paired per round: the ratio of the round medians, then its median (robust to slow phases)
        pairs = [n / o for n, o in zip(_round_medians(per_round["new"]), _round_medians(per_round["old"]),
                                       strict=True)]
        summary["new_over_old_cpu_paired"] = round(statistics.median(pairs), 3)
    if "torch" in med:
        summary["new_over_torch_cpu"] = round(med["new"][0] / med["torch"][0], 3)
        summary["old_over_torch_cpu"] = round(med["old"][0] / med["torch"][0], 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
