"""Worker processes of :class:`nnx.data.DataLoader` (``num_workers > 0``), with PyTorch's semantics.

How it works (see ``docs/data_workers.md``):

* The sampler runs in the main process. Batch ``i`` of an epoch (a host int64 array of sample
  indices) is sent to worker ``i % num_workers``; at most ``prefetch_factor`` batches per worker
  are in flight. Results are reordered in the main process, so batches come out in exactly the
  order of ``num_workers=0``.
* A worker indexes the dataset and sends back **plain host arrays** (NumPy arrays in tuples or
  dicts, floats already cast to the loader's dtype); the main process puts them on the backend.
  Nothing else crosses the process boundary: the main process sends index arrays, workers send
  host arrays or the text of an exception. A worker never touches GPU memory.
* Worker ``k`` seeds Python's ``random`` and NumPy's global RNG with ``base_seed + k``, where
  ``base_seed`` is a pure function of the loader's seed and the epoch (with persistent workers
  the seed is renewed at every epoch, so an epoch's augmentations do not depend on
  ``persistent_workers``).
* Errors in a worker are re-raised in the main process with the worker id, the first sample
  index of the batch and the worker's traceback; a worker that dies raises a RuntimeError; workers
  are shut down at the end, on error, on ``break`` and when the iterator is garbage-collected.
"""

from __future__ import annotations

import builtins
import hashlib
import multiprocessing
import os
import pickle
import queue
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

from nnx_backends import host_workers, threads

__all__ = ["DataLoaderWorkerError", "WorkerInfo", "get_worker_info"]

#: seconds between liveness checks of the workers while the main process waits for a batch
_POLL_S = 0.1
#: seconds a worker waits for work before checking that its parent is still alive
_WORKER_POLL_S = 1.0
#: seconds given to workers to exit by themselves at shutdown before they are terminated
_JOIN_S = 0.5


@dataclass(frozen=True)
class WorkerInfo:
    """What :func:`get_worker_info` returns inside a worker process (``torch.utils.data.WorkerInfo``).

    Attributes: ``id`` (0 .. num_workers-1), ``num_workers``, ``seed`` (this worker's seed for the
    current epoch: Python's ``random`` and NumPy's global RNG were seeded with it) and ``dataset``
    (this process's copy of the dataset).
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """The :class:`WorkerInfo` of the current DataLoader worker process; None in the main process.

    >>> nnx.data.get_worker_info() is None      # in the main process
    True
    """
    return _worker_info


class DataLoaderWorkerError(RuntimeError):
    """An exception raised in a DataLoader worker, re-raised in the main process (when its type is
    not a built-in exception that can be rebuilt from a message)."""


def base_seed(seed: int, epoch: int) -> int:
    """The base seed of the workers in ``epoch``: a pure function of the loader's seed and the epoch."""
    digest = hashlib.blake2b(f"nnx.DataLoader.workers:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2  # room for + worker_id below 2**63


# ------------------------------------------------------------------------------------------ worker side
def _fetch(dataset: Any, index: Any, float_dtype: str, raw: bool) -> Any:
    if raw:  # collate_fn runs in the main process: send the samples as the dataset returns them
        return [dataset[int(i)] for i in index]
    gather = getattr(dataset, "_gather_host", None)
    if gather is not None:
        batch = gather(index, float_dtype)
        if batch is not None:
            return batch
    return host_workers.collate_host([dataset[int(i)] for i in index], float_dtype)


def _check_sendable(samples: Any) -> None:
    try:
        pickle.dumps(samples)
    except Exception as exc:
        raise TypeError(f"the samples cannot be pickled to be sent to the main process, where collate_fn runs "
                        f"({exc}); return plain data (arrays, numbers, strings) from the dataset") from None


def _error_message(exc: BaseException, tb: str, worker_id: int, first: Any, during: str) -> dict[str, Any]:
    return {"type": type(exc).__name__, "module": type(exc).__module__, "worker_id": worker_id,
            "first_index": first, "during": during, "message": str(exc), "traceback": tb}


def _worker_loop(dataset: Any, worker_id: int, num_workers: int, seed: int, gen: int, init_fn: Any,
                 index_queue: Any, result_queue: Any, current: Any, parent_pid: int) -> None:
    """Body of a worker process: take ``(gen, task, seed, index, dtype, raw)`` tasks, send back results."""
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    # one compute thread per worker (the workers are the parallelism, as torch's workers do); this also
    # drops a thread pool inherited through fork, whose threads do not exist in this process
    threads.set_num_threads(1)
    host_workers.seed_host_rngs(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_error = None
    if init_fn is not None:
        try:
            init_fn(worker_id)
        except Exception as exc:  # reported with the first batch this worker is asked for
            init_error = (exc, traceback.format_exc())
    seeded_gen = gen
    while True:
        try:
            task = index_queue.get(timeout=_WORKER_POLL_S)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the main process is gone
                break
            continue
        if task is None:
            break
        task_gen, task_id, task_seed, index, float_dtype, raw = task
        if task_gen != current.value:  # from an abandoned iteration (persistent workers): skip
            continue
        if task_gen != seeded_gen:  # a new epoch on a persistent worker: its own seed
            host_workers.seed_host_rngs(task_seed + worker_id)
            _worker_info = WorkerInfo(worker_id, num_workers, task_seed + worker_id, dataset)
            seeded_gen = task_gen
        first = int(index[0]) if len(index) else None
        if init_error is not None:
            msg = _error_message(init_error[0], init_error[1], worker_id, first, "running worker_init_fn")
            result_queue.put((task_gen, task_id, None, msg))
            continue
        try:
            batch = _fetch(dataset, index, float_dtype, raw)
            if raw:  # arbitrary samples: a pickling error here, not silently in the queue's feeder thread
                _check_sendable(batch)
        except Exception as exc:
            result_queue.put((task_gen, task_id, None, _error_message(exc, traceback.format_exc(), worker_id, first,
                                                                       "loading a batch")))
            continue
        result_queue.put((task_gen, task_id, batch, None))
    result_queue.cancel_join_thread()  # the main process no longer reads: do not block on exit


# ------------------------------------------------------------------------------------------ main side
def resolve_context(multiprocessing_context: Any) -> Any:
    """A multiprocessing context from None (the platform's default), a start-method name or a context."""
    if multiprocessing_context is None:
        return multiprocessing.get_context()
    if isinstance(multiprocessing_context, str):
        methods = multiprocessing.get_all_start_methods()
        if multiprocessing_context not in methods:
            raise ValueError(f"DataLoader: multiprocessing_context must be one of {methods} (or a multiprocessing "
                             f"context), got {multiprocessing_context!r}")
        return multiprocessing.get_context(multiprocessing_context)
    if hasattr(multiprocessing_context, "Process") and hasattr(multiprocessing_context, "get_start_method"):
        return multiprocessing_context
    raise TypeError(f"DataLoader: multiprocessing_context must be a start-method name or a multiprocessing "
                    f"context, got {type(multiprocessing_context).__name__}")


def _check_picklable(ctx: Any, dataset: Any, init_fn: Any) -> None:
    if ctx.get_start_method() == "fork":
        return
    for what, obj in (("dataset", dataset), ("worker_init_fn", init_fn)):
        try:
            pickle.dumps(obj)
        except Exception as exc:
            raise TypeError(
                f"DataLoader: multiprocessing_context={ctx.get_start_method()!r} pickles the {what} to start each "
                f"worker process, but this {what} ({type(obj).__name__}) cannot be pickled: {exc}. Define it at "
                f"module level with picklable attributes, or use the 'fork' start method") from None


class WorkerPool:
    """``num_workers`` processes with one task queue each and a shared result queue."""

    def __init__(self, dataset: Any, num_workers: int, ctx: Any, init_fn: Any, seed: int, gen: int) -> None:
        _check_picklable(ctx, dataset, init_fn)
        self.num_workers = num_workers
        self.result_queue = ctx.Queue()
        self.index_queues = [ctx.Queue() for _ in range(num_workers)]
        self.current = ctx.Value("q", gen, lock=False)  # the generation workers serve; -1: shutting down
        self.processes = []
        self.closed = False
        try:
            for wid in range(num_workers):
                p = ctx.Process(target=_worker_loop, daemon=True, name=f"nnx-DataLoader-worker-{wid}",
                                args=(dataset, wid, num_workers, seed + wid, gen, init_fn, self.index_queues[wid],
                                      self.result_queue, self.current, os.getpid()))
                p.start()
                self.processes.append(p)
        except BaseException:
            self.shutdown()
            raise

    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [p.pid for p in self.processes]

    def check_alive(self) -> None:
        """Raise a RuntimeError if a worker has exited."""
        for wid, p in enumerate(self.processes):
            code = p.exitcode
            if code is not None:
                how = f"exit code {code}"
                if code < 0:
                    try:
                        how = f"signal {signal.Signals(-code).name}"
                    except ValueError:
                        how = f"signal {-code}"
                self.shutdown()
                raise RuntimeError(f"DataLoader worker {wid} (pid {p.pid}) exited unexpectedly ({how}); a worker "
                                   f"killed by the system (out of memory?) or crashed in native code (segfault)")

    def shutdown(self) -> None:
        """Stop every worker (asking first, then terminating) and reap them: no zombie is left."""
        if self.closed:
            return
        self.closed = True
        self.current.value = -1
        for q in self.index_queues:
            try:
                q.put(None)
            except Exception:  # a closed or broken queue: the worker is terminated below
                pass
        deadline = time.monotonic() + _JOIN_S
        for p in self.processes:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.is_alive():
                p.terminate()
                p.join(1.0)
            if p.is_alive():
                p.kill()
                p.join()
        for q in [*self.index_queues, self.result_queue]:
            q.cancel_join_thread()
            q.close()

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:
            pass


def _raise_worker_error(msg: dict[str, Any]) -> None:
    name = msg["type"] if msg["module"] == "builtins" else f"{msg['module']}.{msg['type']}"
    text = (f"DataLoader worker {msg['worker_id']} raised {name} while {msg['during']} (the batch starting at "
            f"sample index {msg['first_index']}): {msg['message']}\nOriginal traceback in the worker process:\n"
            f"{msg['traceback']}")
    exc_type = getattr(builtins, msg["type"], None) if msg["module"] == "builtins" else None
    exc: BaseException | None = None
    if isinstance(exc_type, type) and issubclass(exc_type, Exception):
        try:
            exc = exc_type(text)
        except Exception:
            exc = None
    raise (exc if exc is not None else DataLoaderWorkerError(text))


class WorkerIterator:
    """One epoch over a DataLoader with worker processes: batches in the order of ``num_workers=0``."""

    def __init__(self, pool: WorkerPool, batches: list[Any], gen: int, seed: int, float_dtype: str, raw: bool,
                 place: Any, prefetch_factor: int, timeout: float, persistent: bool) -> None:
        self._pool, self._batches, self._gen, self._seed = pool, batches, gen, seed
        self._float_dtype, self._raw, self._place = float_dtype, raw, place
        self._limit = prefetch_factor * pool.num_workers
        self._timeout, self._persistent = timeout, persistent
        self._sent = self._yielded = 0
        self._buffer: dict[int, Any] = {}
        self._done = False
        pool.current.value = gen
        while self._sent < len(batches) and self._sent < self._limit:
            self._send()

    def __iter__(self) -> WorkerIterator:
        return self

    def __len__(self) -> int:
        return len(self._batches)

    def _send(self) -> None:
        i = self._sent
        task = (self._gen, i, self._seed, self._batches[i], self._float_dtype, self._raw)
        self._pool.index_queues[i % self._pool.num_workers].put(task)
        self._sent += 1

    def __next__(self) -> Any:
        if self._done or self._yielded >= len(self._batches):
            self._finish()
            raise StopIteration
        if self._pool.closed or self._pool.current.value != self._gen:
            self._done = True
            raise RuntimeError("DataLoader: this iterator was abandoned (a newer iteration over the same loader "
                               "with persistent_workers=True started, or its workers were shut down)")
        try:
            while self._yielded not in self._buffer:
                self._receive()
        except BaseException:
            self._done = True
            self._pool.shutdown()
            raise
        batch, err = self._buffer.pop(self._yielded)
        if err is not None:
            self._done = True
            self._pool.shutdown()
            _raise_worker_error(err)
        self._yielded += 1
        if self._sent < len(self._batches):
            self._send()
        return self._place(batch)

    def _receive(self) -> None:
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = _POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds waiting for batch "
                                       f"{self._yielded} from worker {self._yielded % self._pool.num_workers}")
                wait = min(wait, left)
            try:
                gen, task_id, batch, err = self._pool.result_queue.get(timeout=wait)
            except queue.Empty:
                self._pool.check_alive()
                continue
            if gen != self._gen:
                continue  # a late result of an abandoned iteration (persistent workers)
            self._buffer[task_id] = (batch, err)  # an error is raised in its batch's turn, as the batch would be
            return

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if not self._persistent:
                self._pool.shutdown()

    def __del__(self) -> None:
        try:
            if not self._persistent:
                self._pool.shutdown()
        except Exception:
            pass


def check_worker_args(num_workers: Any, prefetch_factor: Any, persistent_workers: Any, timeout: Any,
                      worker_init_fn: Any, multiprocessing_context: Any) -> int:
    """Validate DataLoader's worker arguments as PyTorch does; the effective prefetch factor."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int):
        raise TypeError(f"DataLoader: num_workers must be an int, got {type(num_workers).__name__}")
    if num_workers < 0:
        raise ValueError(f"DataLoader: num_workers must be non-negative (0 loads in the main process), "
                         f"got {num_workers}")
    if prefetch_factor is not None:
        if num_workers == 0:
            raise ValueError("DataLoader: prefetch_factor can only be given with worker processes (num_workers > 0); "
                             "leave it None with num_workers=0")
        if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, int) or prefetch_factor < 1:
            raise ValueError(f"DataLoader: prefetch_factor must be a positive int, got {prefetch_factor!r}")
    if persistent_workers and num_workers == 0:
        raise ValueError("DataLoader: persistent_workers=True needs worker processes (num_workers > 0)")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"DataLoader: timeout must be a non-negative number of seconds, got {timeout!r}")
    if worker_init_fn is not None and not callable(worker_init_fn):
        raise TypeError(f"DataLoader: worker_init_fn must be callable, got {type(worker_init_fn).__name__}")
    if multiprocessing_context is not None:
        if num_workers == 0:
            raise ValueError("DataLoader: multiprocessing_context can only be used with worker processes "
                             "(num_workers > 0), got num_workers=0")
        resolve_context(multiprocessing_context)
    return 2 if prefetch_factor is None else prefetch_factor
