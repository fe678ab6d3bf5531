"""Data-parallel throughput: 2 MPI ranks x 1 thread against 1 process x 1 thread, same global batch.

    python benchmarks/bench_ddp.py            # runs the 1-rank reference here, then mpiexec -n 2 itself

Prints JSON: samples/s for the MLP (784-512-256-10) and LeNet-5 (1x28x28) training steps (forward,
backward, gradient all-reduce, SGD step), the speedup, the wall and CPU time per step (rank 0's on 2
ranks; MPICH waits by polling, so a rank's CPU time includes its waits), the all-reduce time per
step and the bytes each rank sends per step. The reference is the same nnx step in one process (PyTorch's DDP is not
measured here). Needs ``pip install mpich mpi4py``.
"""
from __future__ import annotations

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

WORKLOADS = {"mlp": (256, 1024), "lenet5": (128, 512)}   # name -> global batches measured


def build(name: str) -> tuple[nnx.Module, tuple[int, ...]]:
    if name == "mlp":
        return nnx.Sequential(nnx.Linear(784, 512), nnx.ReLU(), nnx.Linear(512, 256), nnx.ReLU(),
                              nnx.Linear(256, 10)), (784,)
    return nnx.Sequential(nnx.Conv2d(1, 6, 5, padding=2), nnx.ReLU(), nnx.MaxPool2d(2),
                          nnx.Conv2d(6, 16, 5), nnx.ReLU(), nnx.MaxPool2d(2), nnx.Flatten(),
                          nnx.Linear(400, 120), nnx.ReLU(), nnx.Linear(120, 84), nnx.ReLU(),
                          nnx.Linear(84, 10)), (1, 28, 28)


def measure(name: str, batch: int, steps: int = 60, warmup: int = 5) -> dict:
    nnx.manual_seed(0)
    model, shape = build(name)
    ddp = DistributedDataParallel(model)
    spent = [0.0]
    host_reduce = dist.all_reduce_host   # every gradient message of the MPI host path (bucketed or in place)

    def timed(buf, op="sum"):
        t = time.perf_counter()
        out = host_reduce(buf, op)
        spent[0] += time.perf_counter() - t
        return out

    world = dist.get_world_size()
    dist.all_reduce_host = timed   # at world size 1 DDP skips the reduction entirely: the plain model's step
    local = batch // world
    rng = np.random.default_rng(dist.get_rank())
    x = nnx.asarray(rng.standard_normal((local, *shape)).astype("float32"))
    y = nnx.asarray(rng.integers(0, 10, local))
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.SGD(ddp.parameters(), lr=0.01)

    def step():
        loss_fn(ddp(x), y)
        ddp.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()

    for _ in range(warmup):
        step()
    dist.barrier()
    spent[0] = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    cpu = time.process_time() - c0
    dist.barrier()
    elapsed = time.perf_counter() - t0
    dist.all_reduce_host = host_reduce
    return {"samples_per_s": batch * steps / elapsed, "step_ms": 1e3 * elapsed / steps,
            "step_cpu_ms": 1e3 * cpu / steps,
            "allreduce_ms_per_step": 1e3 * spent[0] / steps, "bytes_sent_per_step": ddp.last_bytes,
            "messages_per_step": ddp.last_messages}


def main() -> None:
    if "--worker" in sys.argv:
        dist.init()
        res = {f"{name}_b{batch}": measure(name, batch) for name, batches in WORKLOADS.items() for batch in batches}
        if dist.get_rank() == 0:
            print(json.dumps(res))
        return
    one = {f"{name}_b{batch}": measure(name, batch) for name, batches in WORKLOADS.items() for batch in batches}
    exe = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if exe is None:
        print(json.dumps({"error": "mpiexec not found (pip install mpich mpi4py)", "one_rank": one}))
        return
    out = subprocess.run([exe, "-n", "2", sys.executable, os.path.abspath(__file__), "--worker"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    two = json.loads(out.strip().splitlines()[-1])
    report = {"benchmark": "ddp", "cores": os.cpu_count(), "threads_per_rank": 1,
              "global_batch": WORKLOADS, "reference": "1 process x 1 thread, same nnx step, same global batch",
              "results": {n: {"one_rank": one[n], "two_ranks": two[n],
                              "speedup": two[n]["samples_per_s"] / one[n]["samples_per_s"]} for n in one}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
