"""Run under ``mpiexec -n 2`` with one argument: ``mismatch`` (ranks build different models: every
rank must raise ModelMismatchError), ``raise`` (rank 1 raises while rank 0 waits in a barrier: the
job must end via MPI_Abort), or ``misc`` (broadcast, all_gather, no_sync, sampler and loader)."""
from __future__ import annotations

import copy
import sys

import numpy as np

import nnx
from nnx import distributed as dist
from nnx.parallel import DistributedDataParallel, ModelMismatchError


def mismatch() -> int:
    width = 4 if dist.get_rank() == 0 else 5
    model = nnx.Sequential(nnx.Linear(3, width), nnx.ReLU(), nnx.Linear(width, 2))
    try:
        DistributedDataParallel(model)
    except ModelMismatchError as e:
        print(f"rank {dist.get_rank()} refused: {e}", flush=True)
        return 0
    print(f"rank {dist.get_rank()} NOT refused", flush=True)
    return 1


def fail() -> int:
    if dist.get_rank() == 1:
        raise ValueError("boom on purpose")
    dist.barrier()   # would block forever without the abort
    return 0


def misc() -> int:
    rank, world = dist.get_rank(), dist.get_world_size()
    x = nnx.asarray(np.full((3,), float(rank + 1)))
    assert float(nnx.to_numpy(dist.all_reduce(x, "sum"))[0]) == sum(range(1, world + 1))
    assert float(nnx.to_numpy(dist.all_reduce(x, "mean"))[0]) == sum(range(1, world + 1)) / world
    assert float(nnx.to_numpy(dist.all_reduce(x, "max"))[0]) == world
    assert float(nnx.to_numpy(dist.broadcast(x, 1))[0]) == 2.0
    gathered = dist.all_gather(nnx.asarray(np.arange(rank + 1, dtype="float32")))
    assert [tuple(g.shape) for g in gathered] == [(r + 1,) for r in range(world)]
    # parameters broadcast from rank 0 at construction
    nnx.manual_seed(rank)   # different init on each rank
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.Tanh(), nnx.Linear(4, 2))
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-5)
    w = dist.all_gather_object(nnx.to_numpy(model[0].weight.data))
    assert np.array_equal(w[0], w[1]), "parameters not broadcast"
    # no_sync accumulates locally; the next synced backward averages the sum (== one big batch)
    loss_fn = nnx.MSELoss()
    rng = np.random.default_rng(rank)
    xs = [nnx.asarray(rng.standard_normal((2, 3)).astype("float32")) for _ in range(2)]
    ys = [nnx.asarray(rng.standard_normal((2, 2)).astype("float32")) for _ in range(2)]
    with ddp.no_sync():
        loss_fn(ddp(xs[0]), ys[0])
        ddp.backward(loss_fn.backward(), input_grad=False)
    local = nnx.to_numpy(model[0].weight.grad).copy()
    other = dist.all_gather_object(local)
    assert not np.array_equal(other[0], other[1]), "no_sync still synchronised"
    loss_fn(ddp(xs[1]), ys[1])
    ddp.backward(loss_fn.backward(), input_grad=False)
    g = dist.all_gather_object(nnx.to_numpy(model[0].weight.grad))
    assert np.array_equal(g[0], g[1]), "gradients differ after sync"
    assert ddp.last_messages >= 2, ddp.last_messages
    if nnx.parallel._DIRECT_BYTES == 0:   # every accumulated gradient is owned: one message each
        assert ddp.last_messages == 4, ddp.last_messages
    # the value: the mean over ranks of each rank's local sum over its two micro-batches
    ref = copy.deepcopy(model)
    ref.zero_grad()
    for xb, yb in zip(xs, ys, strict=True):
        loss_fn(ref(xb), yb)
        ref.backward(loss_fn.backward(), input_grad=False)
    sums = dist.all_gather_object([nnx.to_numpy(p.grad) for p in ref.parameters()])
    for k, p in enumerate(model.parameters()):
        np.testing.assert_allclose(nnx.to_numpy(p.grad), (sums[0][k] + sums[1][k]) / 2, rtol=1e-6, atol=1e-7)
    # DistributedSampler with defaults from the world, via DataLoader
    data = np.arange(11, dtype="float32")[:, None]
    sampler = nnx.data.DistributedSampler(data, shuffle=True, seed=3)
    assert (sampler.rank, sampler.num_replicas) == (rank, world)
    loader = nnx.data.DataLoader(data, batch_size=2, sampler=sampler)
    seen = np.concatenate([nnx.to_numpy(b)[:, 0] for b in loader]).astype(int).tolist()
    every = dist.all_gather_object(seen)
    flat = sorted(sum(every, []))
    assert set(flat) == set(range(11)) and len(flat) == 12, flat   # complete, padded by one
    print(f"rank {rank} misc OK", flush=True)
    return 0


def build_fit(world_sampler: bool = True):
    """A small classification fit on a DDP model with a DistributedSampler (shared with the test)."""
    nnx.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = DistributedDataParallel(nnx.Sequential(nnx.Linear(5, 8), nnx.ReLU(), nnx.Linear(8, 2)))
    sampler = nnx.data.DistributedSampler(x, shuffle=True, seed=1)
    loader = nnx.data.DataLoader((x, y), batch_size=8, sampler=sampler)
    opt = nnx.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, loader


def fit(outdir: str) -> int:
    import os
    model, opt, loader = build_fit()
    rank = dist.get_rank()
    cbs = [nnx.callbacks.ModelCheckpoint(outdir, monitor="loss"),
           nnx.callbacks.CSVLogger(os.path.join(outdir, "log.csv"))]
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, loader, epochs=2, callbacks=cbs, metrics=["accuracy"],
                   quiet=True)
    logs = dist.all_gather_object(hist.history)
    assert logs[0] == logs[1], logs                      # averaged over ranks: the same everywhere
    w = dist.all_gather_object(nnx.to_numpy(model.module[0].weight.data))
    assert np.array_equal(w[0], w[1])
    print(f"rank {rank} fit OK", flush=True)
    return 0


if __name__ == "__main__":
    dist.init()
    if sys.argv[1] == "fit":
        sys.exit(fit(sys.argv[2]))
    if sys.argv[2:] == ["direct"]:   # force the in-place (unpacked) all-reduce of owned gradients
        nnx.parallel._DIRECT_BYTES = 0
    sys.exit({"mismatch": mismatch, "raise": fail, "misc": misc}[sys.argv[1]]())
