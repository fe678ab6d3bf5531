"""Data-parallel training on MPI: multi-process checks launched with ``mpiexec -n 2`` (skipped when
mpi4py or mpiexec is absent) and single-process unit tests of the sampler, SyncBatchNorm and the
NCCL reducer (with a mocked communicator)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx import distributed as dist
from nnx.parallel import DistributedDataParallel, _NcclReducer

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install mpich mpi4py)")
    exe = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    return exe


def _launch(script: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NNX_BACKEND="numpy", PYTHONPATH=str(ROOT))
    cmd = [_mpiexec(), "-n", "2", sys.executable, str(HERE / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))


def test_two_ranks_equal_one_rank_on_the_whole_batch():
    """MLP, CNN+SyncBatchNorm, LSTM x SGD, Adam x float32 (1e-6), float64 (1e-12); grads bit-identical."""
    r = _launch("ddp_equivalence_script.py")
    checks = [line for line in r.stdout.splitlines() if line.startswith("CHECK")]
    assert r.returncode == 0 and len(checks) == 12, r.stdout + r.stderr
    assert all(" OK " in c for c in checks), "\n".join(checks)


def test_two_ranks_equal_one_rank_with_gradients_reduced_in_place():
    """As above with every owned gradient all-reduced in place as its own message (no bucket)."""
    r = _launch("ddp_equivalence_script.py", "direct")
    checks = [line for line in r.stdout.splitlines() if line.startswith("CHECK")]
    assert r.returncode == 0 and len(checks) == 12, r.stdout + r.stderr
    assert all(" OK " in c for c in checks), "\n".join(checks)


@pytest.mark.parametrize("mode", [(), ("direct",)], ids=["buckets", "in-place"])
def test_collectives_no_sync_sampler_and_loader_on_two_ranks(mode):
    r = _launch("ddp_checks_script.py", "misc", *mode)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0 misc OK" in r.stdout and "rank 1 misc OK" in r.stdout


def test_mismatched_models_are_refused_on_every_rank():
    r = _launch("ddp_checks_script.py", "mismatch", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        assert f"rank {rank} refused: DistributedDataParallel: the model differs" in r.stdout, r.stdout


def test_a_rank_that_raises_ends_the_job_with_a_message():
    r = _launch("ddp_checks_script.py", "raise", timeout=60)   # a hang would raise TimeoutExpired
    assert r.returncode != 0
    assert "rank 1 of 2 failed with ValueError: boom on purpose" in r.stderr, r.stderr


def test_fit_on_two_ranks_writes_on_rank_0_and_resumes_on_one(tmp_path):
    r = _launch("ddp_checks_script.py", "fit", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0 fit OK" in r.stdout and "rank 1 fit OK" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.nnx", "last.nnx", "log.csv"]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3     # header + 2 epochs, written once
    # resume the 2-rank checkpoint in this single process (a world of size 1)
    sys.path.insert(0, str(HERE))
    try:
        from ddp_checks_script import build_fit
    finally:
        sys.path.remove(str(HERE))
    model, opt, loader = build_fit()
    hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, loader, epochs=3, resume_from=tmp_path / "last.nnx",
                   quiet=True)
    assert len(hist.history["loss"]) == 3
    saved = nnx.load_checkpoint(tmp_path / "last.nnx", model=build_fit()[0])
    assert saved["epoch"] == 1


# ------------------------------------------------------------------ single process
def _shards(n, world, **kw):
    return [list(nnx.data.DistributedSampler(range(n), num_replicas=world, rank=r, **kw)) for r in range(world)]


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (5, 2), (2, 4)])
def test_sampler_shards_disjoint_complete_and_padded(n, world):
    shards = _shards(n, world, shuffle=True, seed=5)
    assert len({len(s) for s in shards}) == 1
    flat = sum(shards, [])
    assert set(flat) == set(range(n))
    assert len(flat) == -(-n // world) * world
    if n % world == 0:
        assert sorted(flat) == list(range(n))      # disjoint when no padding is needed


def test_sampler_drop_last_and_order():
    shards = _shards(10, 3, shuffle=False, drop_last=True)
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert _shards(10, 3, shuffle=False) == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]   # PyTorch's padding


def test_sampler_deterministic_per_seed_and_epoch():
    s = nnx.data.DistributedSampler(range(50), num_replicas=2, rank=1, seed=7)
    a = list(s)
    assert a == list(nnx.data.DistributedSampler(range(50), num_replicas=2, rank=1, seed=7))
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    assert list(s) == a


def test_sampler_bad_arguments():
    with pytest.raises(ValueError, match="DistributedSampler: rank"):
        nnx.data.DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="sampler is mutually exclusive"):
        nnx.data.DataLoader(np.zeros((4, 1)), sampler=[0, 1], shuffle=True)


def test_world_of_one_without_init():
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
    x = nnx.asarray([1.0, 2.0])
    assert dist.all_reduce(x, "mean") is x and dist.all_gather(x) == [x]
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(x, "avg")


def test_ddp_world_of_one_is_the_model(backend):
    nnx.manual_seed(0)
    model = nnx.Sequential(nnx.Linear(3, 2))
    ddp = DistributedDataParallel(model)
    x = nnx.asarray(np.ones((2, 3)))
    y = ddp(x)
    ddp.backward(nnx.get_backend().xp.ones_like(y))
    assert model[0].weight.grad is not None
    assert list(ddp.state_dict()) == ["module.0.weight", "module.0.bias"]


def test_syncbatchnorm_world_of_one_matches_batchnorm(backend):
    nnx.manual_seed(0)
    m = nnx.Sequential(nnx.Conv2d(2, 3, 3), nnx.BatchNorm2d(3))
    ref_out = nnx.to_numpy(m(nnx.asarray(np.arange(50.0).reshape(1, 2, 5, 5) / 50)))
    m.clear_tape()
    conv = nnx.SyncBatchNorm.convert_sync_batchnorm(m)
    assert isinstance(conv[1], nnx.SyncBatchNorm) and conv[1].weight is m[1].weight
    out = nnx.to_numpy(conv(nnx.asarray(np.arange(50.0).reshape(1, 2, 5, 5) / 50)))
    np.testing.assert_allclose(out, ref_out, rtol=1e-6)


def test_nccl_reducer_with_a_mocked_communicator():
    calls = []

    class Comm:
        def __init__(self, n, uid, rank):
            calls.append(("init", n, uid, rank))

        def allReduce(self, send, recv, count, dtype, op, stream):   # noqa: N802 (NCCL's name)
            calls.append(("allReduce", send, recv, count, dtype, op, stream))

    nccl = types.SimpleNamespace(get_unique_id=lambda: "uid", NcclCommunicator=Comm, NCCL_FLOAT32=7,
                                 NCCL_FLOAT64=8, NCCL_FLOAT16=6, NCCL_SUM=0)
    fake_backend = types.SimpleNamespace(current_stream_ptr=lambda: 99)
    red = _NcclReducer(nccl, fake_backend)
    flat = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1234), size=6, dtype=np.dtype("float64"))
    assert red(flat) is flat
    assert calls == [("init", 1, "uid", 0), ("allReduce", 1234, 1234, 6, 8, 0, 99)]


def test_ddp_uses_a_custom_reducer_in_buckets(backend):
    seen = []
    nnx.manual_seed(0)
    model = nnx.Sequential(nnx.Linear(4, 4), nnx.Linear(4, 2))

    def reducer(flat):
        seen.append(flat.shape[0])
        return flat * 2   # a "world" where the other rank had the same gradient

    ddp = DistributedDataParallel(model, bucket_cap_mb=20 * 4 / 2**20, reducer=reducer)
    ddp.backward(nnx.get_backend().xp.ones_like(ddp(nnx.asarray(np.ones((3, 4))))))
    assert sum(seen) == 4 * 4 + 4 + 4 * 2 + 2 and len(seen) >= 2 and ddp.last_messages == len(seen)


def test_init_names_a_missing_mpi_library(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "mpi4py" and fromlist and "MPI" in fromlist:
            raise RuntimeError("cannot load MPI library")
        if name == "mpi4py":
            return object()
        return real_import(name, globals, locals, fromlist, level)

    before = dist.get_comm()
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(RuntimeError, match="distributed.init: mpi4py is installed but its MPI library"):
        dist.init()
    assert dist.get_comm() is before                    # nothing half-initialised
