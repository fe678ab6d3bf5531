"""Data-parallel training of the digits CNN on several MPI processes (DistributedDataParallel).

    python examples/ddp_digits.py                                   # 1 process (the reference)
    mpiexec -n 2 python examples/ddp_digits.py                      # 2 processes, same result
    mpiexec -n 4 python examples/ddp_digits.py --backend cupy       # one GPU per rank (NCCL)
    srun -n 8 --gpus-per-task=1 python examples/ddp_digits.py --backend cupy

Every rank holds a replica of the model (rank 0's weights are broadcast at construction), takes
its shard of every epoch through a DistributedSampler and averages gradients after each backward.
The global batch (``--batch-size``) is split over the ranks, so N ranks follow the same training
trajectory as one process (BatchNorm becomes SyncBatchNorm: statistics of the global batch).
Needs ``pip install mpich mpi4py`` (or a system MPI); without mpi4py it runs as one process.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cnn_digits import build_model, load_data, random_shift  # noqa: E402

import nnx  # noqa: E402
from nnx import distributed as dist  # noqa: E402
from nnx.parallel import DistributedDataParallel  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", help="numpy or cupy (one GPU per rank)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (split over the ranks)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    dist.init()
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        parser.error(f"--batch-size {args.batch_size} must be divisible by the number of ranks {world}")
    device = dist.get_local_rank() if args.backend == "cupy" else None   # one GPU per rank
    nnx.set_backend(args.backend, device=device)
    nnx.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.seed)

    model = DistributedDataParallel(nnx.SyncBatchNorm.convert_sync_batchnorm(build_model()))
    loss_fn = nnx.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = nnx.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = nnx.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    sampler = nnx.data.DistributedSampler(x_train, shuffle=True, seed=args.seed, drop_last=True)
    local_batch = args.batch_size // world
    rng = np.random.default_rng(args.seed)     # same augmentation stream on every rank
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        sampler.set_epoch(epoch)
        shifted = random_shift(x_train, rng)
        idx = np.asarray(sampler.indices())
        xs, ys = nnx.asarray(shifted[idx]), nnx.asarray(y_train[idx])
        total, steps = 0.0, 0
        for i in range(0, len(idx) - local_batch + 1, local_batch):
            loss = loss_fn(model(xs[i:i + local_batch]), ys[i:i + local_batch])
            model.backward(loss_fn.backward(), input_grad=False)   # local backward + gradient all-reduce
            optimizer.step()
            optimizer.zero_grad()
            total += float(loss)
            steps += 1
        scheduler.step()
        mean_loss = dist.all_reduce_scalars({"loss": total / max(steps, 1)})["loss"]
        if rank == 0 and (epoch + 1) % 5 == 0:
            print(f"epoch {epoch + 1}/{args.epochs} loss {mean_loss:.4f}", flush=True)
    elapsed = time.perf_counter() - start

    model.eval()
    with nnx.no_grad():
        xp = nnx.get_backend().xp
        predicted = xp.argmax(model(nnx.asarray(x_test)), axis=1)
        accuracy = float(xp.mean(xp.astype(predicted == nnx.asarray(y_test), xp.float32)))
    if rank == 0:
        print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs in {elapsed:.1f} s on {world} rank(s) "
              f"({nnx.get_backend().name})", flush=True)
    return accuracy


if __name__ == "__main__":
    main()
