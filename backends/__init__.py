"""The backend registry: the only place in nnx that knows concrete array libraries.

>>> import nnx_backends as backends
>>> backends.names()
['numpy', 'array_api_strict', 'torch', 'cupy', 'jax']
>>> backends.get("numpy").xp.__name__
'numpy'

A backend is registered by name with a factory ``factory(device) -> Backend`` and a ``probe()``
that returns None when it can run here, or a sentence saying why not. Third-party packages add
backends through the ``nnx.backends`` entry-point group; each entry point names a callable that
receives this module's :func:`register` (or is a ``(factory, probe)`` pair).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from .base import Array, Backend, BackendUnavailable, erf_standard

__all__ = [
    "Array",
    "Backend",
    "BackendUnavailable",
    "available",
    "backend_of",
    "device_of",
    "erf_standard",
    "get",
    "initial_seed",
    "names",
    "register",
    "seed_all",
]

_lock = threading.RLock()
_factories: dict[str, Callable[[Any], Backend]] = {}
_probes: dict[str, Callable[[], str | None]] = {}
_instances: dict[tuple[str, str], Backend] = {}
_entry_points_loaded = False


def register(name: str, factory: Callable[[Any], Backend], probe: Callable[[], str | None] | None = None) -> None:
    """Register a backend under ``name``; a later registration of the same name replaces it."""
    with _lock:
        _factories[name] = factory
        _probes[name] = probe or (lambda: None)
        for key in [k for k in _instances if k[0] == name]:
            del _instances[key]


def _lazy(module: str, cls: str) -> tuple[Callable[[Any], Backend], Callable[[], str | None]]:
    def factory(device: Any) -> Backend:
        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(device)

    def probe() -> str | None:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ImportError as exc:
            return f"adapter failed to import: {exc}"
        return mod.probe()

    return factory, probe


for _name, _module, _cls in (
    ("numpy", "numpy", "NumpyBackend"),
    ("array_api_strict", "array_api_strict", "ArrayApiStrictBackend"),
    ("torch", "torch", "TorchBackend"),
    ("cupy", "cupy", "CupyBackend"),
    ("jax", "jax", "JaxBackend"),
    ("dask", "dask", "DaskBackend"),
):
    register(_name, *_lazy(_module, _cls))


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="nnx.backends"):
        try:
            obj = ep.load()
            if isinstance(obj, tuple):
                register(ep.name, *obj)
            else:
                obj(register)
        except Exception as exc:  # a broken plug-in must not break nnx; it shows as unavailable
            register(ep.name, _broken(ep.name, exc), lambda exc=exc: f"entry point failed to load: {exc}")


def _broken(name: str, exc: Exception) -> Callable[[Any], Backend]:
    def factory(device: Any) -> Backend:
        raise BackendUnavailable(f"backend {name!r} failed to load: {exc}")

    return factory


def names() -> list[str]:
    """Registered backend names, built-in ones first."""
    _load_entry_points()
    return list(_factories)


def available() -> dict[str, bool | str]:
    """For every registered backend: True if it runs here, else the reason it does not."""
    out: dict[str, bool | str] = {}
    for name in names():
        try:
            reason = _probes[name]()
        except Exception as exc:
            reason = f"probe failed: {exc}"
        out[name] = True if reason is None else reason
    return out


def get(name: str, device: Any = None) -> Backend:
    """The backend ``name`` on ``device`` (created once, then cached).

    Raises ValueError for an unknown name and BackendUnavailable (with the reason) for a backend
    that cannot run here.
    """
    if isinstance(name, Backend):
        return name
    _load_entry_points()
    key = (name, str(device))
    with _lock:
        inst = _instances.get(key)
        if inst is not None:
            return inst
        if name not in _factories:
            raise ValueError(f"unknown backend {name!r}; registered backends are {sorted(_factories)}")
        reason = _probes[name]()
        if reason is not None:
            raise BackendUnavailable(f"backend {name!r} is not available: {reason}")
        inst = _factories[name](device)
        _check_mutability(name, inst)
        same = _instances.get((name, inst.device_name))
        if same is not None:  # the device given another way (a Device object): one instance, one RNG
            _instances[key] = same
            return same
        if _seed is not None:
            inst.manual_seed(_seed)
        _instances[key] = inst
        # the same backend asked for by its resolved device name shares the instance (and its RNG)
        _instances.setdefault((name, inst.device_name), inst)
        if device is None:
            _instances.setdefault((name, "None"), inst)
        return inst


def _check_mutability(name: str, inst: Backend) -> None:
    """Refuse a backend whose ``mutable`` claim is false: with a wrong claim, updates written in
    place would silently do nothing (immutable arrays) or copy for nothing (mutable ones)."""
    xp = inst.xp
    a = xp.zeros((1,), dtype=xp.float32, device=inst.device)
    b = a
    b += 1.0
    changed = bool(inst.to_numpy(a)[0] == 1.0)
    if changed != bool(inst.mutable):
        raise ValueError(
            f"backend {name!r} declares mutable={inst.mutable!r}, but `b = a; b += 1` "
            f"{'changed' if changed else 'did not change'} `a`: set the adapter's `mutable` attribute to {changed!r}")


def instances() -> list[Backend]:
    """Backends created so far in this process (used to seed and checkpoint every RNG)."""
    with _lock:
        seen: dict[int, Backend] = {}
        for inst in _instances.values():
            seen[id(inst)] = inst
        return list(seen.values())


_seed: int | None = None
_BUILTIN_BY_MODULE = {"numpy": "numpy", "torch": "torch", "cupy": "cupy", "array_api_strict": "array_api_strict",
                      "jax": "jax", "jaxlib": "jax", "dask": "dask"}


def seed_all(seed: int) -> None:
    """Seed every backend created so far, and every one created later, with ``seed``."""
    global _seed
    with _lock:
        _seed = seed
        for inst in instances():
            inst.manual_seed(seed)


def initial_seed() -> int | None:
    """The seed given to the latest :func:`seed_all` (``nnx.manual_seed``), or None if never seeded."""
    return _seed


_by_type: dict[type, Backend] = {}


def device_of(x: Any) -> Any:
    """The device of array ``x`` as its backend reports it (``Backend.device_of``): the one way nnx
    reads a device, so that libraries whose arrays carry no ``.device`` attribute work too."""
    return backend_of(x).device_of(x)


def backend_of(x: Any) -> Backend:
    """The backend whose library made ``x`` (on ``x``'s device). Fast: one dict lookup when cached.

    Raises TypeError for objects that are not arrays of any created backend.
    """
    t = type(x)
    b = _by_type.get(t)
    if b is not None and (b.name == "numpy" or b.device_of(x) == b.device):
        return b
    for inst in instances():
        if inst.owns(x):
            if inst.device_of(x) == inst.device:
                if t not in _by_type or _by_type[t].device_of(x) != _by_type[t].device:
                    _by_type[t] = inst
                return inst
    for inst in instances():
        if inst.owns(x):  # same library, a device not created yet: create it
            return get(inst.name, inst.device_of(x))
    root = t.__module__.split(".")[0]
    if root in _BUILTIN_BY_MODULE and _probes[_BUILTIN_BY_MODULE[root]]() is None:
        inst = get(_BUILTIN_BY_MODULE[root])  # first array of a built-in backend not created yet
        if inst.owns(x):
            return backend_of(x)
    raise TypeError(
        f"expected an array of an nnx backend, got {t.__module__}.{t.__name__}; "
        "use nnx.asarray(x) to put host data on the current backend"
    )
