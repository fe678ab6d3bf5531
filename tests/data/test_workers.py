"""DataLoader worker processes (num_workers > 0): order, seeding, errors, shutdown, spawn, resume, fit."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time

import numpy as np
import pytest

import nnx
import nnx_backends as backends
from nnx.data_workers import DataLoaderWorkerError, base_seed

from helpers import host

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="the worker tests use fork and POSIX signals"),
    # JAX (imported by other tests in the same process) warns at every fork; the suite turns RuntimeWarnings
    # into errors, and pytest keeps that "unraisable" error's frames (holding the loader) alive, which would
    # defeat the tests that workers stop when the loader is garbage-collected
    pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning"),
]


class Squares:
    """A per-sample dataset: ``(features, label)`` computed in ``__getitem__``."""

    def __init__(self, n: int = 23) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.array([i, i * i, -i], dtype=np.float64), i % 5


class WhoLoads:
    """Each sample says which process and worker loaded it, and what the worker's RNGs give."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        info = nnx.data.get_worker_info()
        return {"index": i, "pid": os.getpid(), "id": info.id, "num_workers": info.num_workers,
                "seed": info.seed, "is_me": info.dataset is self,
                "np_draw": np.random.randint(0, 2**31), "py_draw": random.randrange(2**31)}


class FailsAt:
    def __init__(self, bad: int, exc: type = ValueError) -> None:
        self.bad, self.exc = bad, exc

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        if i == self.bad:
            raise self.exc(f"sample {i} is corrupt")
        return np.zeros(2)


class CustomError(Exception):
    pass


class DiesAt(FailsAt):
    def __getitem__(self, i: int):
        if i == self.bad:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros(2)


class Slow(Squares):
    def __getitem__(self, i: int):
        time.sleep(5.0)
        return np.zeros(2)


def batches(loader):
    """Every batch as nested host arrays (tuples stay tuples, dicts stay dicts)."""
    def conv(b):
        if isinstance(b, tuple):
            return tuple(conv(v) for v in b)
        if isinstance(b, dict):
            return {k: conv(v) for k, v in b.items()}
        return host(b)
    return [conv(b) for b in loader]


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, tuple):
            assert isinstance(g, tuple) and len(g) == len(w)
            for gg, ww in zip(g, w):
                assert gg.dtype == ww.dtype and gg.shape == ww.shape
                np.testing.assert_array_equal(gg, ww)
        else:
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def is_my_child(pid: int) -> bool:
    """True while ``pid`` is a child of this process, running or zombie (not yet reaped).

    Asks for the parent, not only whether the pid exists: pids are reused quickly on a busy machine."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: a reaped pid answers ProcessLookupError (a zombie would not)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()


def assert_reaped(pids):
    """Every worker is gone and reaped: no child of ours, running or zombie, has these pids."""
    assert pids
    assert not [pid for pid in pids if is_my_child(pid)]
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("nnx-DataLoader")]


def tensor_data(n=29):
    rng = np.random.default_rng(0)
    return rng.random((n, 3)), rng.integers(0, 4, n)


@pytest.mark.parametrize("num_workers,batch_size,shuffle,drop_last",
                         [(1, 4, False, False), (2, 5, True, False), (3, 4, True, True), (2, 1, True, False),
                          (4, 8, False, True)])
def test_order_equals_main_process(num_workers, batch_size, shuffle, drop_last):
    for dataset in (Squares(), nnx.data.TensorDataset(*tensor_data())):
        kw = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=3)
        ref = nnx.data.DataLoader(dataset, **kw)
        par = nnx.data.DataLoader(dataset, num_workers=num_workers, prefetch_factor=1 + num_workers % 2, **kw)
        assert len(par) == len(ref)
        for _ in range(2):  # two epochs: the second has its own (equal) order
            assert_same(batches(par), batches(ref))
        assert par.epoch == ref.epoch == 2


def test_single_array_subset_dict_and_collate_fn():
    X, y = tensor_data()
    assert_same(batches(nnx.data.DataLoader(X, batch_size=6, shuffle=True, seed=1, num_workers=2)),
                batches(nnx.data.DataLoader(X, batch_size=6, shuffle=True, seed=1)))
    sub = nnx.data.random_split((X, y), [20, 9], seed=0)[0]
    assert_same(batches(nnx.data.DataLoader(sub, batch_size=6, num_workers=2)),
                batches(nnx.data.DataLoader(sub, batch_size=6)))
    got = batches(nnx.data.DataLoader(WhoLoads(), batch_size=5, num_workers=2))
    assert [b["index"].tolist() for b in got] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15]]
    # collate_fn runs in the main process on the samples the workers send back
    seen_pids = []

    def collate(samples):
        seen_pids.append(os.getpid())
        return [s["pid"] for s in samples]
    out = list(nnx.data.DataLoader(WhoLoads(), batch_size=8, num_workers=2, collate_fn=collate))
    assert seen_pids == [os.getpid()] * 2
    assert os.getpid() not in out[0] + out[1] and len(set(out[0])) == 1 and out[0][0] != out[1][0]


def test_batches_placed_on_backend_in_main_process(backend):
    X, y = tensor_data()
    ref = nnx.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=2)
    par = nnx.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=2, num_workers=2)
    for xb, yb in par:
        assert backends.backend_of(xb) is backend and backends.backend_of(yb) is backend
        assert backends.Backend.dtype_name(xb.dtype) == "float32"
        assert backends.Backend.dtype_name(yb.dtype) == "int64"
    par.set_epoch(0)
    assert_same(batches(par), batches(ref))


def test_worker_info_and_seeds():
    assert nnx.data.get_worker_info() is None
    loader = nnx.data.DataLoader(WhoLoads(), batch_size=2, num_workers=3, seed=11)
    epoch0 = batches(loader)
    for i, b in enumerate(epoch0):  # batch i is loaded by worker i % 3
        assert set(b["id"].tolist()) == {i % 3} and set(b["num_workers"].tolist()) == {3}
        assert b["is_me"].all()
        assert set(b["seed"].tolist()) == {base_seed(11, 0) + i % 3}
    pids = {int(b["pid"][0]) for b in epoch0}
    assert len(pids) == 3 and os.getpid() not in pids
    # seeds distinct per worker, random draws distinct per worker, deterministic given seed and epoch
    draws = [b["np_draw"].tolist() + b["py_draw"].tolist() for b in epoch0]
    assert draws[0] != draws[1] != draws[2]
    again = nnx.data.DataLoader(WhoLoads(), batch_size=2, num_workers=3, seed=11)
    assert [b["np_draw"].tolist() + b["py_draw"].tolist() for b in batches(again)] == draws
    epoch1 = batches(loader)  # a new epoch: new seeds, new draws
    assert {int(b["seed"][0]) for b in epoch1} == {base_seed(11, 1) + k for k in range(3)}
    assert [b["np_draw"].tolist() for b in epoch1] != [b["np_draw"].tolist() for b in epoch0]
    # persistent workers: same per-epoch randomness as fresh workers
    pers = nnx.data.DataLoader(WhoLoads(), batch_size=2, num_workers=3, seed=11, persistent_workers=True)
    for want in (epoch0, epoch1):
        got = batches(pers)
        assert [b["np_draw"].tolist() for b in got] == [b["np_draw"].tolist() for b in want]
        assert [b["seed"].tolist() for b in got] == [b["seed"].tolist() for b in want]
    pers_pids = pers._pool.pids()
    del pers
    assert_reaped(pers_pids)


def test_worker_init_fn_once_per_worker(tmp_path):
    log = tmp_path / "init.txt"

    def init(worker_id):
        info = nnx.data.get_worker_info()
        with open(log, "a") as f:
            f.write(f"{worker_id} {info.id} {os.getpid()}\n")
    loader = nnx.data.DataLoader(Squares(30), batch_size=2, num_workers=3, worker_init_fn=init,
                                 persistent_workers=True)
    for _ in range(2):
        list(loader)
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2]     # once per worker, over two epochs
    assert all(r[0] == r[1] for r in rows) and len({r[2] for r in rows}) == 3


@pytest.mark.parametrize("exc,raised", [(ValueError, ValueError), (CustomError, DataLoaderWorkerError)])
def test_worker_exception_reraised_with_worker_and_traceback(exc, raised):
    loader = nnx.data.DataLoader(FailsAt(7, exc), batch_size=2, num_workers=2)
    with pytest.raises(raised) as info:  # sample 7 is in batch 3 [6, 7]: worker 1
        list(loader)
    text = str(info.value)
    assert "DataLoader worker 1" in text and "sample index 6" in text and "sample 7 is corrupt" in text
    assert "Traceback" in text and "__getitem__" in text and exc.__name__ in text
    assert not multiprocessing.active_children()


def test_worker_init_fn_error_is_reported():
    def init(worker_id):
        raise RuntimeError(f"cannot open the data in worker {worker_id}")
    with pytest.raises(RuntimeError, match=r"(?s)worker_init_fn.*cannot open the data in worker 0"):
        list(nnx.data.DataLoader(Squares(), batch_size=4, num_workers=2, worker_init_fn=init))


def test_killed_worker_raises_instead_of_hanging():
    loader = nnx.data.DataLoader(DiesAt(5), batch_size=2, num_workers=2, timeout=20)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader worker 0 \(pid \d+\) exited unexpectedly \(signal SIGKILL\)"):
        list(loader)
    assert time.monotonic() - t0 < 10  # reported by the liveness check, long before the timeout
    assert not multiprocessing.active_children()


def test_timeout():
    loader = nnx.data.DataLoader(Slow(4), batch_size=2, num_workers=1, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.3 seconds"):
        next(iter(loader))
    assert time.monotonic() - t0 < 4
    assert not multiprocessing.active_children()


def test_break_and_del_shut_workers_down():
    loader = nnx.data.DataLoader(WhoLoads(), batch_size=2, num_workers=2)
    pids = set()
    for i, b in enumerate(loader):
        pids.add(int(host(b["pid"])[0]))
        if i == 1:
            break
    assert len(pids) == 2
    assert_reaped(pids)
    it = iter(loader)
    pids = {int(host(next(it)["pid"])[0]), int(host(next(it)["pid"])[0])}
    del it
    assert_reaped(pids)


def test_persistent_workers_reuse_processes_and_keep_order():
    X, y = tensor_data(40)
    ref = nnx.data.DataLoader((X, y), batch_size=6, shuffle=True, seed=5)
    par = nnx.data.DataLoader((X, y), batch_size=6, shuffle=True, seed=5, num_workers=2, persistent_workers=True)
    assert_same(batches(par), batches(ref))
    pids = par._pool.pids()
    for i, _ in enumerate(par):  # epoch 1 abandoned halfway: the workers stay
        if i == 2:
            break
    assert par._pool.pids() == pids and all(p.is_alive() for p in par._pool.processes)
    list(ref)
    assert_same(batches(par), batches(ref))  # epoch 2: right order, no stale batch of epoch 1
    assert par._pool.pids() == pids
    stale = iter(par)
    next(stale)
    fresh = iter(par)
    with pytest.raises(RuntimeError, match="abandoned"):
        next(stale)
    next(fresh)
    del stale, fresh, par
    assert_reaped(pids)


def test_spawn_context(tmp_path, monkeypatch):
    (tmp_path / "spawn_ds_module.py").write_text(
        "import numpy as np\nimport nnx\n\n"
        "class Tagged:\n"
        "    def __len__(self):\n        return 10\n"
        "    def __getitem__(self, i):\n"
        "        info = nnx.data.get_worker_info()\n"
        "        return np.full(2, float(i)), info.id\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import spawn_ds_module

    X, y = tensor_data(12)
    kw = dict(batch_size=5, shuffle=True, seed=4)
    got = batches(nnx.data.DataLoader((X, y), num_workers=2, multiprocessing_context="spawn", **kw))
    assert_same(got, batches(nnx.data.DataLoader((X, y), **kw)))
    tagged = batches(nnx.data.DataLoader(spawn_ds_module.Tagged(), batch_size=3, num_workers=2,
                                         multiprocessing_context=multiprocessing.get_context("spawn")))
    assert [b[1].tolist() for b in tagged] == [[0, 0, 0], [1, 1, 1], [0, 0, 0], [1]]
    assert not multiprocessing.active_children() or all(
        not p.name.startswith("nnx-DataLoader") for p in multiprocessing.active_children())


def test_spawn_unpicklable_dataset_is_a_clear_error():
    ds = Squares()
    ds.transform = lambda v: v  # a lambda cannot be pickled
    loader = nnx.data.DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    with pytest.raises(TypeError, match=r"DataLoader: multiprocessing_context='spawn' pickles the dataset"):
        list(loader)


def test_resume_from_state_dict_gives_same_remaining_batches():
    X, y = tensor_data(30)
    a = nnx.data.DataLoader((X, y), batch_size=4, shuffle=True, seed=9, num_workers=2)
    list(a)
    state = a.state_dict()
    rest_a = [batches(a) for _ in range(2)]
    b = nnx.data.DataLoader((X, y), batch_size=4, shuffle=True, seed=123, num_workers=2, persistent_workers=True)
    b.load_state_dict(state)
    for want in rest_a:
        assert_same(batches(b), want)


def test_distributed_sampler_with_workers():
    X, y = tensor_data(21)
    for rank in range(2):
        sampler = nnx.data.DistributedSampler(range(21), num_replicas=2, rank=rank, shuffle=True, seed=1)
        ref = nnx.data.DataLoader((X, y), batch_size=4, sampler=sampler)
        par = nnx.data.DataLoader((X, y), batch_size=4, num_workers=2, sampler=sampler)
        for epoch in range(2):
            ref.set_epoch(epoch)
            par.set_epoch(epoch)
            assert_same(batches(par), batches(ref))


def test_fit_with_worker_loader():
    X, y = tensor_data(64)
    X = X.astype(np.float32)

    def train(num_workers):
        nnx.manual_seed(0)
        model = nnx.Sequential(nnx.Linear(3, 8), nnx.ReLU(), nnx.Linear(8, 4))
        opt = nnx.optim.SGD(model.parameters(), lr=0.1)
        loader = nnx.data.DataLoader((X, y), batch_size=16, shuffle=True, seed=0, num_workers=num_workers)
        hist = nnx.fit(model, nnx.CrossEntropyLoss(), opt, loader, epochs=2, quiet=True)
        return hist.history["loss"], host(model[0].weight)
    loss0, w0 = train(0)
    loss2, w2 = train(2)
    assert loss0 == loss2 and len(loss2) == 2
    np.testing.assert_array_equal(w0, w2)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(num_workers=-1), ValueError, "num_workers must be non-negative"),
    (dict(num_workers=1.5), TypeError, "num_workers must be an int"),
    (dict(num_workers=True), TypeError, "num_workers must be an int"),
    (dict(prefetch_factor=2), ValueError, "prefetch_factor can only be given with worker processes"),
    (dict(num_workers=1, prefetch_factor=0), ValueError, "prefetch_factor must be a positive int"),
    (dict(num_workers=1, timeout=-1), ValueError, "timeout must be a non-negative"),
    (dict(persistent_workers=True), ValueError, "persistent_workers=True needs worker processes"),
    (dict(num_workers=1, worker_init_fn=3), TypeError, "worker_init_fn must be callable"),
    (dict(multiprocessing_context="fork"), ValueError, "multiprocessing_context can only be used"),
    (dict(num_workers=1, multiprocessing_context="teleport"), ValueError, "multiprocessing_context must be one of"),
])
def test_bad_worker_arguments(kwargs, err, match):
    with pytest.raises(err, match="DataLoader: " + match):
        nnx.data.DataLoader(Squares(), batch_size=2, **kwargs)


def test_device_arrays_refused_with_workers():
    torch = pytest.importorskip("torch", reason="needs torch for backend-array data")
    ds = nnx.data.TensorDataset(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="DataLoader: num_workers > 0 needs host"):
        nnx.data.DataLoader(ds, batch_size=2, num_workers=1)


class ThreadsInWorker:
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return np.array([nnx.get_num_threads(), os.getpid()])


def test_workers_compute_on_one_thread():
    previous = nnx.get_num_threads()
    nnx.set_num_threads(2)
    try:
        nnx.ReLU()(nnx.asarray(np.ones(1 << 20)))  # the main process may have a live thread pool when it forks
        out = batches(nnx.data.DataLoader(ThreadsInWorker(), batch_size=2, num_workers=2))
    finally:
        nnx.set_num_threads(previous)
    assert [b[:, 0].tolist() for b in out] == [[1, 1], [1, 1]]
    assert nnx.get_num_threads() == previous


class ReturnsLambdas(Squares):
    def __getitem__(self, i: int):
        return lambda: i


def test_unpicklable_samples_for_collate_fn_are_an_error_not_a_hang():
    loader = nnx.data.DataLoader(ReturnsLambdas(4), batch_size=2, num_workers=1, collate_fn=list, timeout=10)
    with pytest.raises(TypeError, match=r"(?s)DataLoader worker 0 raised TypeError.*cannot be pickled"):
        list(loader)
