"""Multi-process collectives on MPI (mpi4py), with a world of size 1 when MPI is absent.

Processes are started by ``mpiexec``/``srun``; this module wraps ``MPI.COMM_WORLD`` (or a
communicator given to :func:`init`). Collectives take and return *backend arrays*: the data is
copied to host memory, reduced by MPI and put back on the array's backend (on CuPy,
:mod:`nnx.parallel` reduces gradients with NCCL instead).

Each process started by ``mpiexec`` first calls ``dist.init()``; without that call, or without
mpi4py, the world has size 1 (rank 0) and every collective returns its input, as here:

>>> from nnx import distributed as dist
>>> dist.get_rank(), dist.get_world_size()
(0, 1)
>>> g = dist.all_reduce(nnx.asarray([1.0, 2.0]), op="mean")   # the mean over ranks, on every rank
>>> nnx.to_numpy(g).tolist()
[1.0, 2.0]

A rank that raises an uncaught exception after :func:`init` aborts the whole job
(``MPI_Abort``) with a message naming the rank and the error, so no other rank waits forever.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

import nnx_backends as backends

__all__ = ["init", "is_initialized", "is_available", "get_rank", "get_world_size", "get_local_rank",
           "barrier", "all_reduce", "broadcast", "all_gather", "broadcast_object", "all_gather_object",
           "all_reduce_scalars", "abort", "get_comm", "MirrorComm"]

_OPS = ("sum", "mean", "max", "min", "prod")
_state: dict[str, Any] = {"comm": None, "hook": None}


class MirrorComm:
    """A stand-in for an mpi4py communicator inside one process: ``size`` ranks that all hold this
    rank's data (this is rank 0; ``allgather`` returns ``size`` copies of this rank's object,
    ``Bcast`` leaves the buffer as it is). For single-process tests and benchmarks of multi-rank
    code, e.g. ``dist.init(comm=MirrorComm(), abort_on_exception=False)``; buffer all-reduces
    (``all_reduce_host``) need MPI, so such a test replaces that function.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = int(size)

    def Get_size(self) -> int:  # noqa: N802 - mpi4py's name
        return self.size

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def allgather(self, obj: Any) -> list[Any]:
        return [obj] * self.size

    def Bcast(self, buf: Any, root: int = 0) -> None:  # noqa: N802
        pass


def is_available() -> bool:
    """True when mpi4py can be imported (MPI collectives are possible)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init(comm: Any = None, *, abort_on_exception: bool = True) -> None:
    """Start using ``comm`` (default ``MPI.COMM_WORLD``; a world of size 1 without mpi4py).

    ``abort_on_exception`` installs a ``sys.excepthook`` that calls ``MPI_Abort`` on an uncaught
    exception when the world has more than one rank (the other ranks would otherwise block).
    """
    if comm is None:
        if not is_available():
            _state["comm"] = None
            return
        try:
            from mpi4py import MPI
        except (ImportError, RuntimeError, OSError) as exc:  # mpi4py without a loadable MPI library
            raise RuntimeError(
                f"distributed.init: mpi4py is installed but its MPI library cannot be loaded ({exc}); install "
                "one (pip install mpich, or your cluster's MPI module) or uninstall mpi4py to run as a world "
                "of size 1") from exc
        comm = MPI.COMM_WORLD
    _state["comm"] = comm
    if abort_on_exception and comm.Get_size() > 1 and _state["hook"] is None:
        _install_excepthook()


def is_initialized() -> bool:
    """True after :func:`init` found (or was given) an MPI communicator."""
    return _state["comm"] is not None


def get_comm() -> Any:
    """The communicator in use (None for the world of size 1 without MPI)."""
    return _state["comm"]


def get_rank() -> int:
    """This process's rank (0 when not initialized)."""
    comm = _state["comm"]
    return 0 if comm is None else comm.Get_rank()


def get_world_size() -> int:
    """Number of processes (1 when not initialized)."""
    comm = _state["comm"]
    return 1 if comm is None else comm.Get_size()


def get_local_rank() -> int:
    """Rank among the processes of this machine (picks the GPU): env vars, else an MPI split."""
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MPI_LOCAL_RANK", "SLURM_LOCALID",
                "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    comm = _state["comm"]
    if comm is None:
        return 0
    from mpi4py import MPI
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return local.Get_rank()
    finally:
        local.Free()


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if _state["comm"] is not None:
        _state["comm"].Barrier()


#: Seconds between writing the message and ``MPI_Abort``: the launcher forwards each rank's stderr
#: through its own processes, which the abort tears down; without a pause the message was lost in
#: about one job in ten on a loaded machine.
ABORT_GRACE_S = 1.0


def abort(message: str, code: int = 1) -> None:
    """Print ``message`` to stderr and end every rank of the job (``MPI_Abort``)."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    comm = _state["comm"]
    if comm is not None and comm.Get_size() > 1:
        time.sleep(ABORT_GRACE_S)
        comm.Abort(code)
    raise SystemExit(code)


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        abort(f"nnx.distributed: rank {get_rank()} of {get_world_size()} failed with "
              f"{exc_type.__name__}: {exc}; aborting the job.\n{text}")
        previous(exc_type, exc, tb)  # pragma: no cover (abort does not return)

    _state["hook"] = hook
    sys.excepthook = hook


def _check_op(where: str, op: str) -> None:
    if op not in _OPS:
        raise ValueError(f"nnx.distributed.{where}: op must be one of {_OPS}, got {op!r}")


def _mpi_op(op: str) -> Any:
    from mpi4py import MPI
    return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}[op]


def all_reduce_host(buf: Any, op: str = "sum") -> Any:
    """In-place all-reduce of a writable host buffer (a NumPy array from an adapter)."""
    comm = _state["comm"]
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI
        comm.Allreduce(MPI.IN_PLACE, buf, op=_mpi_op(op))
    return buf


def all_reduce(x: Any, op: str = "sum") -> Any:
    """Reduce ``x`` element-wise over all ranks; every rank gets the result (a new array).

    ``op``: "sum", "mean", "max", "min" or "prod". The result has ``x``'s backend and dtype.
    """
    _check_op("all_reduce", op)
    if get_world_size() == 1:
        return x
    b = backends.backend_of(x)
    host = b.to_numpy(x).copy()
    all_reduce_host(host, op)
    out = b.asarray(host)
    if op == "mean":
        out = out / get_world_size()
    return out


def broadcast(x: Any, src: int = 0) -> Any:
    """Every rank gets rank ``src``'s ``x`` (same shape and dtype on every rank)."""
    if get_world_size() == 1:
        return x
    b = backends.backend_of(x)
    host = b.to_numpy(x).copy()
    _state["comm"].Bcast(host, root=src)
    return b.asarray(host)


def all_gather(x: Any) -> list[Any]:
    """The list of every rank's ``x`` (ranks may differ in shape), on ``x``'s backend."""
    if get_world_size() == 1:
        return [x]
    b = backends.backend_of(x)
    return [b.asarray(h) for h in _state["comm"].allgather(b.to_numpy(x))]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    comm = _state["comm"]
    return obj if comm is None else comm.bcast(obj, root=src)


def all_gather_object(obj: Any) -> list[Any]:
    """The list of every rank's picklable ``obj``."""
    comm = _state["comm"]
    return [obj] if comm is None else comm.allgather(obj)


def all_reduce_scalars(values: dict[str, float], op: str = "mean") -> dict[str, float]:
    """Reduce a dict of Python floats over ranks (for logged loss and metrics)."""
    _check_op("all_reduce_scalars", op)
    comm = _state["comm"]
    if comm is None or comm.Get_size() == 1:
        return dict(values)
    keys = sorted(values)
    gathered = comm.allgather([float(values[k]) for k in keys])
    out = {}
    for i, k in enumerate(keys):
        col = [g[i] for g in gathered]
        if op in ("sum", "mean"):
            s = sum(col)
            out[k] = s / len(col) if op == "mean" else s
        elif op == "max":
            out[k] = max(col)
        elif op == "min":
            out[k] = min(col)
        else:
            p = 1.0
            for c in col:
                p *= c
            out[k] = p
    return out
