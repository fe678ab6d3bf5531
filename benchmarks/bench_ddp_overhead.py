"""What DistributedDataParallel costs per step besides its messages, in one process.

    python benchmarks/bench_ddp_overhead.py

A fake communicator of 2 ranks whose all-reduce does nothing stands in for MPI, so the measurement
is deterministic and needs neither mpi4py nor a second core: the MLP 784-512-256-10 on one rank's
share of a global batch of 256 (128 samples), 1 thread. Reported (process CPU time, ms/step, best
and median of 5 x 200 steps): the gradient averaging (bucket copy, scaling, Python), the whole DDP
step, and the reference: the same step of the plain model without DDP.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import nnx  # noqa: E402
from nnx import distributed as dist  # noqa: E402
from nnx.parallel import DistributedDataParallel  # noqa: E402


def _model() -> nnx.Module:
    nnx.manual_seed(0)
    return nnx.Sequential(nnx.Linear(784, 512), nnx.ReLU(), nnx.Linear(512, 256), nnx.ReLU(), nnx.Linear(256, 10))


def measure(wrap: bool, reps: int = 5, steps: int = 200) -> dict:
    model = _model()
    net = DistributedDataParallel(model) if wrap else model
    rng = np.random.default_rng(0)
    x = nnx.asarray(rng.standard_normal((128, 784)).astype("float32"))
    y = nnx.asarray(rng.integers(0, 10, 128))
    loss_fn, opt = nnx.CrossEntropyLoss(), nnx.optim.SGD(net.parameters(), lr=0.01)
    spent = [0.0]
    if wrap:   # the averaging as backward calls it (``_average``; ``sync_gradients`` in older versions)
        name = "_average" if hasattr(net, "_average") else "sync_gradients"
        sync = getattr(net, name)

        def timed(*args, **kwargs):
            t = time.process_time()
            sync(*args, **kwargs)
            spent[0] += time.process_time() - t

        setattr(net, name, timed)

    def step():
        loss_fn(net(x), y)
        net.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()

    for _ in range(20):
        step()
    sync_ms, step_ms = [], []
    for _ in range(reps):
        spent[0] = 0.0
        t = time.process_time()
        for _ in range(steps):
            step()
        step_ms.append(1e3 * (time.process_time() - t) / steps)
        sync_ms.append(1e3 * spent[0] / steps)
    out = {"step_ms": {"best": round(min(step_ms), 3), "median": round(statistics.median(step_ms), 3)}}
    if wrap:
        out["averaging_ms"] = {"best": round(min(sync_ms), 3), "median": round(statistics.median(sync_ms), 3)}
    return out


def main() -> None:
    ref = measure(False)
    dist.init(comm=dist.MirrorComm(), abort_on_exception=False)  # buffers left as they are
    dist.all_reduce_host = lambda buf, op="sum": buf   # every gradient message goes through it; none is sent
    ddp = measure(True)
    print(json.dumps({"benchmark": "ddp_overhead", "model": "mlp 784-512-256-10", "local_batch": 128,
                      "world": "2 (fake communicator, no data moved)", "ddp": ddp,
                      "reference": {"plain_model": ref}}))


if __name__ == "__main__":
    main()
