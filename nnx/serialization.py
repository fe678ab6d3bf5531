"""Saving and loading weights and full training checkpoints, without pickle.

Two entry points:

* :func:`save` / :func:`load` — a model's ``state_dict`` (weights and persistent buffers).
* :func:`save_checkpoint` / :func:`load_checkpoint` — everything needed to resume training
  exactly: model, optimizer (moments, step counts, parameter groups), LR scheduler, the random
  generator state of every backend in use, the epoch and any ``extra`` JSON-able data.

**Format.** One file, a zip archive compatible with ``numpy.load(path, allow_pickle=False)``:
one ``.npy`` member per array plus the member ``__nnx_meta__.json`` holding the format version,
nnx version, backend and device it was written from, the dtype and shape of every array, and the
non-array part of the state (numbers, strings, nested dicts and lists, encoded as JSON with
explicit tags for tuples, non-string keys and non-finite floats). Loading runs no code: no pickle
is ever read, object arrays are refused, and every declared size is checked against the bytes
stored before any memory is allocated.

A path ending in ``.safetensors`` is written and read in the safetensors format instead (the
optional extra ``nnx-backprop[safetensors]``): the same arrays, the nnx metadata JSON in the
header's ``__metadata__``, the same checks and the same atomic write.

**Guarantees.**

* Saving is atomic: the file is written to a temporary file in the same directory, flushed,
  ``fsync``-ed and renamed over the target, and the directory is ``fsync``-ed. A crash or
  ``SIGKILL`` during a save leaves the previous file intact (a stray ``.<name>.*.tmp`` may remain).
* Loading is all-or-nothing: a truncated, corrupted or hand-crafted file, or one whose keys,
  shapes or dtypes do not fit the model, raises :class:`CheckpointError` (or ``RuntimeError`` /
  ``ValueError`` / ``TypeError`` from ``load_state_dict`` naming the key) before any weight,
  optimizer state, scheduler state or random generator changes.
* A file saved on one backend loads on any other: arrays are stored as host arrays and
  converted to the model's backend, device and dtype when loaded.

:func:`load` without a model returns an ordered dict of arrays **on the current backend** (or the
backend named by ``backend=``), with the dtypes as stored (float64 stays float64);
``model.load_state_dict`` then converts them to the model's dtype.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import nnx_backends as backends
from nnx_backends import host_io

from .backend import get_backend, to_numpy
from .errors import is_floating
from .module import Module, Parameter

__all__ = ["CheckpointError", "load", "load_checkpoint", "save", "save_checkpoint"]

FORMAT = "nnx"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: not an nnx/npz file, truncated, corrupted, hand-crafted,
    unsafe (object arrays, pickle) or of an unknown format version."""


# ------------------------------------------------------------------------------------ tree encoding
def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, type)


def _encode(obj: Any, path: str, arrays: dict[str, Any]) -> Any:
    """Turn a nested state (dicts, lists, tuples, numbers, strings, arrays) into JSON + named arrays."""
    if isinstance(obj, Parameter):
        obj = obj.data
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if _is_array(obj):
        if path in arrays:
            raise ValueError(f"save: two entries map to the same array name {path!r}")
        host = to_numpy(obj)
        if getattr(host, "ndim", 1) == 0 and not host_io.is_host_array(host):
            host = host_io.to_host(host)
        arrays[path] = host_io.to_host(host)
        return {"__array__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}/{k}" if path else k, arrays) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, f"{path}/key{i}", arrays), _encode(v, f"{path}/{k}" if path else str(k),
                                                                             arrays)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]}
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalar
        return _encode(obj.item(), path, arrays)
    raise TypeError(f"save: cannot store {type(obj).__name__} at {path or 'the top level'!r}; checkpoints hold "
                    "arrays, numbers, strings, None, and dicts/lists/tuples of them (no arbitrary objects)")


def _decode(node: Any, arrays: dict[str, Any], used: set[str], where: str) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, arrays, used, where) for v in node]
    if isinstance(node, dict):
        if len(node) == 1:
            (tag, value), = node.items()
            if tag in _TAGS:
                return _TAGS[tag](value, arrays, used, where)
        if any(isinstance(k, str) and k.startswith("__") for k in node):
            raise CheckpointError(f"{where}: unknown tag in the metadata: {sorted(node)}")
        return {k: _decode(v, arrays, used, where) for k, v in node.items()}
    raise CheckpointError(f"{where}: unexpected value of type {type(node).__name__} in the metadata")


def _decode_array(value: Any, arrays: dict[str, Any], used: set[str], where: str) -> Any:
    if not isinstance(value, str) or value not in arrays:
        raise CheckpointError(f"{where}: the metadata refers to array {value!r}, which is not stored")
    used.add(value)
    return arrays[value]


def _decode_float(value: Any, arrays: dict[str, Any], used: set[str], where: str) -> float:
    if value not in ("nan", "inf", "-inf"):
        raise CheckpointError(f"{where}: bad float tag {value!r}")
    return float(value)


def _decode_tuple(value: Any, arrays: dict[str, Any], used: set[str], where: str) -> tuple:
    if not isinstance(value, list):
        raise CheckpointError(f"{where}: bad tuple tag")
    return tuple(_decode(v, arrays, used, where) for v in value)


def _decode_dict(value: Any, arrays: dict[str, Any], used: set[str], where: str) -> dict:
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise CheckpointError(f"{where}: bad dict tag")
    out = {}
    for k, v in value:
        k = _decode(k, arrays, used, where)
        if isinstance(k, (list, dict)):
            raise CheckpointError(f"{where}: unhashable dict key in the metadata")
        out[k] = _decode(v, arrays, used, where)
    return out


#: the tagged values of the metadata tree (one-key dicts), decoded by their own function
_TAGS: dict[str, Callable[[Any, dict, set, str], Any]] = {
    "__array__": _decode_array, "__float__": _decode_float, "__tuple__": _decode_tuple, "__dict__": _decode_dict,
}


# ------------------------------------------------------------------------------------ file level
def _nnx_version() -> str:
    from . import __version__

    return __version__


def _write(path: str | os.PathLike, kind: str, tree: dict[str, Any]) -> None:
    arrays: dict[str, Any] = {}
    encoded = _encode(tree, "", arrays)
    b = get_backend()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnx_version": _nnx_version(),
        "kind": kind,
        "backend": b.name,
        "device": b.device_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
        "tree": encoded,
    }
    host_io.write_archive(path, arrays, meta)


def _read(path: str | os.PathLike, max_bytes: int | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read and fully validate a file; returns (decoded tree, meta) or (plain arrays, None) for a plain npz."""
    where = f"nnx.load({os.fspath(path)!r})"
    try:
        arrays, meta = host_io.read_archive(path, max_bytes=max_bytes)
    except host_io.ArchiveError as exc:
        raise CheckpointError(str(exc)) from None
    if meta is None:
        return dict(arrays), None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an nnx file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: written in format version {version} by nnx {meta.get('nnx_version')}; "
                              f"this nnx ({_nnx_version()}) reads versions up to {FORMAT_VERSION}: upgrade nnx")
    declared = meta.get("arrays")
    if not isinstance(declared, dict):
        raise CheckpointError(f"{where}: the metadata lacks the table of arrays")
    if set(declared) != set(arrays):
        missing, extra = sorted(set(declared) - set(arrays)), sorted(set(arrays) - set(declared))
        raise CheckpointError(f"{where}: arrays declared but not stored {missing}, stored but not declared {extra}")
    for k, arr in arrays.items():
        d = declared[k]
        if not isinstance(d, dict) or d.get("dtype") != str(arr.dtype) or d.get("shape") != list(arr.shape):
            raise CheckpointError(f"{where}: array {k!r} is {arr.dtype} {list(arr.shape)} but the metadata says "
                                  f"{d.get('dtype') if isinstance(d, dict) else d} "
                                  f"{d.get('shape') if isinstance(d, dict) else ''}")
    used: set[str] = set()
    tree = _decode(meta.get("tree"), arrays, used, where)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{where}: the metadata tree must be an object")
    if used != set(arrays):
        raise CheckpointError(f"{where}: arrays stored but not referenced: {sorted(set(arrays) - used)}")
    return tree, meta


def _state_of(obj: Module | dict[str, Any], fn: str) -> OrderedDict[str, Any]:
    if isinstance(obj, Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        out: OrderedDict[str, Any] = OrderedDict()
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"nnx.{fn}: state dict keys must be strings, got {k!r}")
            if isinstance(v, Parameter):
                v = v.data
            if not _is_array(v):
                raise TypeError(f"nnx.{fn}: state dict entry {k!r} is a {type(v).__name__}, not an array")
            out[k] = v
        return out
    raise TypeError(f"nnx.{fn}: expected a Module or a state dict (dict of arrays), got {type(obj).__name__}")


# ------------------------------------------------------------------------------------ weights
def save(obj: Module | dict[str, Any], path: str | os.PathLike) -> None:
    """Save a model's weights (or a ``state_dict``) to ``path``, atomically and without pickle.

    >>> import os, tempfile
    >>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     nnx.save(model, os.path.join(tmp, "model.nnx"))
    ...     model.load_state_dict(nnx.load(os.path.join(tmp, "model.nnx")))
    IncompatibleKeys(missing_keys=[], unexpected_keys=[])

    Arrays are copied to the host once (one device-to-host copy per array) and stored with their
    dtype and shape; see the module docstring for the format and its guarantees.
    """
    state = _state_of(obj, "save")
    _write(path, "state_dict", {"model": state})


def _bound_for(model: Module | None, copies: int, max_bytes: int | None) -> int | None:
    """The most bytes a file meant for ``model`` can sensibly unpack to: ``copies`` copies of its state
    (weights, optimizer moments), each up to 8 bytes an element (float64 weights for a float16 model),
    plus 16 MiB for metadata and small entries. None (the archive reader's default) without a model."""
    if max_bytes is not None or model is None:
        return max_bytes
    elements = sum(math.prod(tuple(v.shape)) for v in model.state_dict().values())
    return copies * 8 * elements + 16 * 2**20


def load(path: str | os.PathLike, model: Module | None = None, *, strict: bool = True,
         backend: str | backends.Backend | None = None, device: Any = None, max_bytes: int | None = None) -> Any:
    """Load weights saved by :func:`save` (or the model part of a :func:`save_checkpoint` file).

    Without ``model``: returns an ordered ``state_dict`` of arrays on the current backend (or
    ``backend``/``device``), dtypes as stored. With ``model``: loads into it with
    ``model.load_state_dict(..., strict=strict)`` (arrays go straight to the model's backend,
    device and dtype) and returns the model; nothing changes if anything does not fit.

    A plain ``numpy.savez`` file (a converted PyTorch ``state_dict``, say) loads too.

    ``max_bytes`` bounds what the file may unpack to, checked before anything is decompressed (zip
    bombs). Default: with ``model``, what that model's state can take (8 bytes an element, plus
    16 MiB); without, the file's size plus 4 GiB (``nnx_backends.host_io.DEFAULT_MAX_BYTES``).

    Raises :class:`CheckpointError` for an unusable file, ``FileNotFoundError`` if it is absent.
    """
    if model is not None and not isinstance(model, Module):
        raise TypeError(f"nnx.load: model must be an nnx.Module, got {type(model).__name__}")
    tree, meta = _read(path, _bound_for(model, 1, max_bytes))
    if meta is None:
        state = tree
    else:
        state = tree.get("model")
        if not isinstance(state, dict) or not all(_is_array(v) for v in state.values()):
            raise CheckpointError(f"nnx.load({os.fspath(path)!r}): the file holds no model weights")
    if model is not None:
        if not isinstance(model, Module):
            raise TypeError(f"nnx.load: model must be an nnx.Module, got {type(model).__name__}")
        model.load_state_dict(state, strict=strict)
        return model
    b = get_backend() if backend is None and device is None else backends.get(
        backend if backend is not None else get_backend().name, device)
    return OrderedDict((k, b.asarray(v, dtype=b.dtype(str(v.dtype)))) for k, v in state.items())


# ------------------------------------------------------------------------------------ checkpoints
def _rng_states() -> dict[str, Any]:
    return {f"{b.name}:{b.device_name}": b.get_rng_state() for b in backends.instances()}


def save_checkpoint(path: str | os.PathLike, *, model: Module | None = None, optimizer: Any = None,
                    scheduler: Any = None, epoch: int | None = None, extra: dict[str, Any] | None = None,
                    rng: bool = True) -> None:
    """Save a full training checkpoint to ``path`` (atomic, no pickle).

    Holds the model's ``state_dict``, the optimizer's ``state_dict`` (arrays stored as arrays,
    numbers and hyper-parameters as JSON), the scheduler's ``state_dict``, ``epoch``, ``extra``
    (any JSON-able dict, arrays allowed) and, with ``rng=True``, the random generator state of
    every backend created in this process (``backends.instances()``), so that a resumed run
    draws the same dropout masks as an uninterrupted one.

    >>> import os, tempfile
    >>> model = nnx.Linear(4, 2)
    >>> opt = nnx.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "ckpt.nnx")
    ...     nnx.save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, epoch=5)
    ...     info = nnx.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched)
    >>> start = info["epoch"] + 1
    >>> start
    6
    """
    tree: dict[str, Any] = {}
    if model is not None:
        tree["model"] = _state_of(model, "save_checkpoint")
    if optimizer is not None:
        tree["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        tree["scheduler"] = scheduler.state_dict()
    if epoch is not None:
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"nnx.save_checkpoint: epoch must be an int, got {type(epoch).__name__}")
        tree["epoch"] = epoch
    if extra is not None:
        if not isinstance(extra, dict):
            raise TypeError(f"nnx.save_checkpoint: extra must be a dict, got {type(extra).__name__}")
        tree["extra"] = extra
    if rng:
        tree["rng"] = _rng_states()
    _write(path, "checkpoint", tree)


class StateSnapshot:
    """What load_checkpoint may change (model, optimizer, scheduler state), kept by reference so that a
    failure can undo everything: ``snap = StateSnapshot(model, opt, sched)``, then ``snap.restore()``."""

    def __init__(self, model: Module | None, optimizer: Any, scheduler: Any) -> None:
        self.model_items = []
        if model is not None:
            for _, m, name, kind in model._state_items():
                arr = m._parameters[name].data if kind == "param" else m._buffers[name]
                self.model_items.append((m, name, kind, arr))
        self.optimizer = optimizer
        if optimizer is not None:
            self.groups = optimizer.param_groups
            self.group_copies = [dict(g) for g in optimizer.param_groups]
            self.opt_state = optimizer.state
        self.scheduler = scheduler
        if scheduler is not None:
            self.sched_dict = dict(scheduler.__dict__)
        self.rng = [(b, b.get_rng_state()) for b in backends.instances()]

    def restore(self) -> None:
        for m, name, kind, arr in self.model_items:
            if kind == "param":
                m._parameters[name].data = arr
            else:
                m._buffers[name] = arr
        if self.optimizer is not None:
            for g, saved in zip(self.groups, self.group_copies, strict=True):
                g.clear()
                g.update(saved)
            self.optimizer.param_groups = self.groups
            self.optimizer.state = self.opt_state
        if self.scheduler is not None:
            self.scheduler.__dict__.clear()
            self.scheduler.__dict__.update(self.sched_dict)
        for b, st in self.rng:
            try:
                b.set_rng_state(st)
            except Exception:
                pass


def _check_optimizer_state(optimizer: Any, state: Any, where: str) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list) or \
            not isinstance(state.get("state", {}), dict):
        raise CheckpointError(f"{where}: the optimizer state is malformed")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for key, st in state.get("state", {}).items():
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(params):
            raise CheckpointError(f"{where}: optimizer state for parameter {key!r}, but the optimizer has "
                                  f"{len(params)} parameters")
        if not isinstance(st, dict):
            raise CheckpointError(f"{where}: optimizer state of parameter {key} is not a dict")
        _check_parameter_state(params[key], key, st, where)
    if len(state["param_groups"]) != len(optimizer.param_groups):
        raise CheckpointError(f"{where}: the checkpoint has {len(state['param_groups'])} optimizer parameter groups, "
                              f"the optimizer {len(optimizer.param_groups)}")
    for mine, theirs in zip(optimizer.param_groups, state["param_groups"], strict=True):
        if not isinstance(theirs, dict):
            raise CheckpointError(f"{where}: an optimizer parameter group is not a dict")
        for k, v in theirs.items():
            if k == "params":
                continue
            if k in mine and mine[k] is not None and v is not None and \
                    isinstance(mine[k], (int, float)) != isinstance(v, (int, float)):
                raise CheckpointError(f"{where}: optimizer hyper-parameter {k!r} is a {type(v).__name__}, "
                                      f"expected a {type(mine[k]).__name__}")


def _check_parameter_state(p: Any, key: int, st: dict, where: str) -> None:
    """One parameter's optimizer state from a checkpoint: arrays of its shape (floating where the
    parameter is), numbers or small containers otherwise."""
    p_float = is_floating(p.data)
    for name, v in st.items():
        if _is_array(v):
            if tuple(v.shape) != p.shape:
                raise CheckpointError(f"{where}: optimizer state {name!r} of parameter {key} has shape "
                                      f"{tuple(v.shape)}, the parameter has {p.shape}")
            if p_float and not is_floating(v):
                raise CheckpointError(f"{where}: optimizer state {name!r} of parameter {key} has dtype "
                                      f"{v.dtype}, expected a floating dtype")
        elif not isinstance(v, (int, float, bool, type(None), list, tuple)):
            raise CheckpointError(f"{where}: optimizer state {name!r} has unexpected type {type(v).__name__}")


def _check_scheduler_state(scheduler: Any, state: Any, where: str) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: the scheduler state is malformed")
    mine = scheduler.state_dict()
    unknown = sorted(set(state) - set(mine))
    if unknown:
        raise CheckpointError(f"{where}: the scheduler state has entries {unknown} that a "
                              f"{type(scheduler).__name__} does not have (a checkpoint of another scheduler?)")
    for k, v in state.items():
        a, b = mine[k], v
        num = (int, float)
        if isinstance(a, num) and not isinstance(a, bool):
            ok = isinstance(b, num) and not isinstance(b, bool)
        else:
            ok = a is None or b is None or type(a) is type(b) or (isinstance(a, (list, tuple))
                                                                 and isinstance(b, (list, tuple)))
        if not ok:
            raise CheckpointError(f"{where}: scheduler entry {k!r} is a {type(b).__name__}, expected "
                                  f"{type(a).__name__}")


def _check_rng(states: Any, where: str) -> None:
    """Try every random generator state of the file on its backend and put the current one back:
    a malformed state is refused here, before anything is loaded."""
    if not isinstance(states, dict):
        raise CheckpointError(f"{where}: the random generator states are malformed (expected a dict, got "
                              f"{type(states).__name__})")
    avail = backends.available()
    for key, st in states.items():
        name, _, device = str(key).partition(":")
        if avail.get(name) is not True:
            continue
        try:
            b = backends.get(name, device or None)
        except Exception:
            continue
        current = b.get_rng_state()
        try:
            if not isinstance(st, dict):
                raise TypeError(f"expected a dict, got {type(st).__name__}")
            b.set_rng_state(st)
        except Exception as e:
            raise CheckpointError(f"{where}: the random generator state of backend {key!r} is malformed "
                                  f"({type(e).__name__}: {e})") from None
        finally:
            b.set_rng_state(current)


def _restore_rng(states: Any, where: str) -> list[str]:
    if not isinstance(states, dict):
        raise CheckpointError(f"{where}: the random generator states are malformed")
    skipped = []
    avail = backends.available()
    for key, st in states.items():
        name, _, device = str(key).partition(":")
        if avail.get(name) is not True:
            skipped.append(key)
            continue
        try:
            b = backends.get(name, device or None)
        except Exception:
            skipped.append(key)
            continue
        b.set_rng_state(st)
    return skipped


def _check_checkpoint(tree: dict[str, Any], meta: dict | None, where: str, model: Module | None, optimizer: Any,
                      scheduler: Any, rng: bool) -> int | None:
    """Everything :func:`load_checkpoint` checks before it changes anything; returns the epoch."""
    if meta is None or meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{where}: this is a weights file, not a training checkpoint; use nnx.load"
                              if meta is not None else f"{where}: a plain .npz file, not an nnx checkpoint")
    for part, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and part not in tree:
            raise CheckpointError(f"{where}: the checkpoint holds no {part} state")
    if optimizer is not None:
        _check_optimizer_state(optimizer, tree["optimizer"], where)
    if scheduler is not None:
        _check_scheduler_state(scheduler, tree["scheduler"], where)
    epoch = tree.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise CheckpointError(f"{where}: epoch must be an int >= 0, got {epoch!r}")
    if rng and "rng" in tree:
        _check_rng(tree["rng"], where)
    return epoch


def load_checkpoint(path: str | os.PathLike, *, model: Module | None = None, optimizer: Any = None,
                    scheduler: Any = None, rng: bool = True, strict: bool = True,
                    max_bytes: int | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into the objects given, all or nothing.

    Restores the model weights, the optimizer state, the scheduler state and (``rng=True``) the
    random generator state of every backend in the file that is available here (a checkpoint of a
    CUDA run resumed on a CPU restores what it can; ``"rng_skipped"`` lists the rest). If any part
    does not fit (missing keys, wrong shapes or dtypes, another optimizer or scheduler), nothing
    is changed and the error says what.

    Returns a dict with ``"epoch"``, ``"extra"``, ``"meta"`` (the file's metadata: versions,
    backend, dtypes), ``"rng_skipped"`` and the raw ``"model"``, ``"optimizer"`` and ``"scheduler"``
    states (host arrays) for parts that were not given an object to load into.

    ``max_bytes`` as in :func:`load`; with ``model`` the default allows the weights and three
    optimizer moments per element (Adam with AMSGrad).
    """
    where = f"nnx.load_checkpoint({os.fspath(path)!r})"
    if model is not None and not isinstance(model, Module):
        raise TypeError(f"nnx.load_checkpoint: model must be an nnx.Module, got {type(model).__name__}")
    tree, meta = _read(path, _bound_for(model, 4, max_bytes))
    epoch = _check_checkpoint(tree, meta, where, model, optimizer, scheduler, rng)
    snap = StateSnapshot(model, optimizer, scheduler)
    skipped: list[str] = []
    try:
        if model is not None:
            model.load_state_dict(tree["model"], strict=strict)
        if optimizer is not None:
            optimizer.load_state_dict(copy.copy(tree["optimizer"]))
        if scheduler is not None:
            scheduler.load_state_dict(dict(tree["scheduler"]))
        if rng and "rng" in tree:
            skipped = _restore_rng(tree["rng"], where)
    except BaseException:
        snap.restore()
        raise
    info = {k: v for k, v in meta.items() if k != "tree"}
    out: dict[str, Any] = {"epoch": epoch, "extra": tree.get("extra"), "meta": info, "rng_skipped": skipped}
    for part, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None and part in tree:
            out[part] = tree[part]
    return out
