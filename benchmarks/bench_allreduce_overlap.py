"""Does a non-blocking all-reduce overlap with computation on this MPI? (the DDP overlap question)

    python benchmarks/bench_allreduce_overlap.py        # runs itself under mpiexec -n 2

The MLP 784-512-256-10 at a global batch of 256 on 2 ranks: the gradients of its last two layers
(0.5 MiB) are complete before the first layer's weight gradient (a 512x128 @ 128x784 product); the
first layer's gradient (1.6 MiB) is complete last. Measured per step (median of 300, both ranks
start together after a barrier), 1 thread per rank:

* ``gemm``: the product alone; ``allreduce_all``: one blocking all-reduce of all 2.1 MB; ``concat``
  and ``divide``: the bucket copy and the averaging pass DDP spent per step before the in-place path;
* ``sequential`` (the reference): product, then blocking all-reduces of the 0.5 MiB and 1.6 MiB;
* ``overlap``: ``Iallreduce`` of the 0.5 MiB started before the product, waited after it, then the
  blocking 1.6 MiB one; ``overlap_both``: the same with the 1.6 MiB one also non-blocking.

With MPICH the progress of a non-blocking collective happens inside MPI calls, so ``overlap`` is
expected to equal ``sequential`` unless the MPI library progresses in the background.
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


def worker() -> None:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    small = np.ones(512 * 256 + 256 + 256 * 10 + 10, np.float32)
    big = np.ones(784 * 512 + 512, np.float32)
    whole = np.ones(small.size + big.size, np.float32)
    rng = np.random.default_rng(0)
    a = rng.random((512, 128), dtype=np.float32)
    b = rng.random((128, 784), dtype=np.float32)

    def gemm():
        a @ b

    def allreduce_all():
        comm.Allreduce(MPI.IN_PLACE, whole)

    def concat():
        np.concatenate([big, small])

    def divide():
        whole.__itruediv__(2)

    def sequential():
        a @ b
        comm.Allreduce(MPI.IN_PLACE, small)
        comm.Allreduce(MPI.IN_PLACE, big)

    def overlap():
        r = comm.Iallreduce(MPI.IN_PLACE, small)
        a @ b
        r.Wait()
        comm.Allreduce(MPI.IN_PLACE, big)

    def overlap_both():
        r = comm.Iallreduce(MPI.IN_PLACE, small)
        a @ b
        MPI.Request.Waitall([r, comm.Iallreduce(MPI.IN_PLACE, big)])

    def bench(f, reps=300):
        for _ in range(10):
            f()
        ts = []
        for _ in range(reps):
            comm.Barrier()
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(1e3 * float(np.median(ts)), 3)

    fns = dict(gemm=gemm, allreduce_all=allreduce_all, concat=concat, divide=divide, sequential=sequential,
               overlap=overlap, overlap_both=overlap_both)
    res = {k: bench(f) for k, f in fns.items()}
    if comm.Get_rank() == 0:
        print(json.dumps({"benchmark": "allreduce_overlap", "ranks": 2, "median_ms": res,
                          "reference": "sequential"}))


def main() -> None:
    if "--worker" in sys.argv:
        worker()
        return
    exe = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if exe is None:
        print(json.dumps({"error": "mpiexec not found (pip install mpich mpi4py)"}))
        return
    out = subprocess.run([exe, "-n", "2", sys.executable, os.path.abspath(__file__), "--worker"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
