"""Per-phase time of one data-parallel MLP training step inside each rank (issue 10 profile).

    python benchmarks/profile_ddp.py [--batch 256] [--steps 200]    # 1 rank here, then mpiexec -n 2

Phases: forward (model + loss), local backward (module.backward), the gradient synchronisation
split into its parts as :meth:`DistributedDataParallel.sync_gradients` runs them (bucket packing,
all-reduce, scaling), the SGD step and zero_grad; "other" is the rest of the step (Python glue).
Wall time (perf_counter) and this process's CPU time (process_time) per phase, mean ms/step.
Prints JSON with rank 0's and rank 1's numbers, and one process on half the batch (what each of the
2 ranks computes, with no communication at all).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import nnx  # noqa: E402
from nnx import distributed as dist  # noqa: E402
from nnx.parallel import DistributedDataParallel  # noqa: E402


class _Clock:
    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, name: str, w0: float, c0: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()


def run(batch: int, steps: int, warmup: int = 20) -> dict:
    nnx.manual_seed(0)
    model = nnx.Sequential(nnx.Linear(784, 512), nnx.ReLU(), nnx.Linear(512, 256), nnx.ReLU(), nnx.Linear(256, 10))
    ddp = DistributedDataParallel(model)
    clock = _Clock()
    world = dist.get_world_size()
    host_reduce = dist.all_reduce_host   # every MPI message of the host path goes through it

    def timed_reduce(buf, op="sum"):
        w0, c0 = time.perf_counter(), time.process_time()
        out = host_reduce(buf, op)
        clock.add("sync: all-reduce", w0, c0)
        return out

    dist.all_reduce_host = timed_reduce
    # the gradient averaging as DDP.backward calls it (``_average`` here; ``sync_gradients`` before it existed)
    name = "_average" if hasattr(ddp, "_average") else "sync_gradients"
    sync = getattr(ddp, name)

    def timed_sync(*args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        sync(*args, **kwargs)
        clock.add("sync: total", w0, c0)

    setattr(ddp, name, timed_sync)
    local = batch // world
    rng = np.random.default_rng(dist.get_rank())
    x = nnx.asarray(rng.standard_normal((local, 784)).astype("float32"))
    y = nnx.asarray(rng.integers(0, 10, local))
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.SGD(ddp.parameters(), lr=0.01)
    module_backward = model.backward

    def timed_backward(dy, *, input_grad=True):
        w0, c0 = time.perf_counter(), time.process_time()
        out = module_backward(dy, input_grad=input_grad)
        clock.add("local backward", w0, c0)
        return out

    model.backward = timed_backward

    def step():
        w0, c0 = time.perf_counter(), time.process_time()
        loss_fn(ddp(x), y)
        dy = loss_fn.backward()
        clock.add("forward+loss", w0, c0)
        ddp.backward(dy, input_grad=False)
        w0, c0 = time.perf_counter(), time.process_time()
        opt.step()
        clock.add("optimizer step", w0, c0)
        w0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        clock.add("zero_grad", w0, c0)

    for _ in range(warmup):
        step()
    dist.barrier()
    clock.reset()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    total_w, total_c = time.perf_counter() - w0, time.process_time() - c0
    dist.barrier()
    wall = {k: 1e3 * v / steps for k, v in clock.wall.items()}
    cpu = {k: 1e3 * v / steps for k, v in clock.cpu.items()}
    for d, tot in ((wall, total_w), (cpu, total_c)):
        named = sum(v for k, v in d.items() if not k.startswith("sync: ") or k == "sync: total")
        d["other"] = 1e3 * tot / steps - named
        d["step"] = 1e3 * tot / steps
    return {"wall_ms": {k: round(v, 3) for k, v in wall.items()}, "cpu_ms": {k: round(v, 3) for k, v in cpu.items()},
            "messages": ddp.last_messages, "bytes": ddp.last_bytes,
            "sync_other_ms": round(wall.get("sync: total", 0.0) - wall.get("sync: all-reduce", 0.0), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--worker", action="store_true")
    a = ap.parse_args()
    if a.worker:
        dist.init()
        res = dist.all_gather_object(run(a.batch, a.steps))
        if dist.get_rank() == 0:
            print(json.dumps(res))
        return
    one = run(a.batch, a.steps)
    half = run(a.batch // 2, a.steps)   # one rank's share alone, without MPI: the ceiling of 2 ranks
    exe = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    out = subprocess.run([exe, "-n", "2", sys.executable, os.path.abspath(__file__), "--worker",
                          "--batch", str(a.batch), "--steps", str(a.steps)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    two = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({"benchmark": "ddp_profile", "model": "mlp 784-512-256-10", "global_batch": a.batch,
                      "one_rank": one,
                      "one_process_half_batch": half, "two_ranks": {"rank0": two[0], "rank1": two[1]}}, indent=1))


if __name__ == "__main__":
    main()
