"""DLPack exchange: arrays move between array libraries on one device without a copy.

:func:`from_dlpack` puts any object with ``__dlpack__`` (a NumPy array, a torch tensor, a CuPy
array, a JAX array, ...) on an nnx backend through the standard's ``xp.from_dlpack``: on the same
device the result *shares memory* with the source (writing through one is seen through the
other). :meth:`nnx.Module.to` uses the same path, so moving a model between backends on one
device (NumPy <-> torch CPU, CuPy <-> torch CUDA) moves no bytes.

A copy is unavoidable, and made only when ``copy`` is not False, when:

* the source and the backend are on different devices (CPU <-> GPU, two GPUs): the copy goes
  through the host with the adapters (``to_numpy`` then ``asarray``);
* the source is read-only (a NumPy array with ``flags.writeable`` False, e.g. a memory-mapped
  file opened read-only): DLPack consumers such as torch would otherwise hand out a writable
  view of read-only memory;
* the producer refuses to export (a ``BufferError``: e.g. NumPy refuses arrays it cannot
  describe) or the consumer cannot import it.

``copy=False`` turns each of these into an error that says why; ``copy=True`` always copies.
"""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

from .backend import get_backend, to_numpy

__all__ = ["dlpack_device", "from_dlpack", "shares_memory_possible"]

_KIND = {1: "CPU", 2: "CUDA", 3: "CUDA host", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 10: "ROCm", 14: "oneAPI"}


def _as_pair(dev: Any) -> tuple[int, int]:
    kind, index = dev
    return int(kind), int(index)


def dlpack_device(obj: Any) -> tuple[int, int]:
    """The DLPack ``(device_type, device_id)`` of an array (``(1, 0)`` is the CPU, ``(2, i)`` CUDA i).

    Raises TypeError, naming the type, for an object without ``__dlpack_device__``.
    """
    fn = getattr(obj, "__dlpack_device__", None)
    if fn is None or not hasattr(obj, "__dlpack__"):
        raise TypeError(f"nnx.from_dlpack: expected an object with __dlpack__ and __dlpack_device__ (an array of an "
                        f"Array API library), got {type(obj).__module__}.{type(obj).__name__}")
    return _as_pair(fn())


_BACKEND_DEVICES: dict[int, tuple[int, int]] = {}


def _backend_device(b: Any) -> tuple[int, int]:
    """The DLPack device of backend ``b`` (asked of an empty array it makes, then cached)."""
    key = id(b)
    if key not in _BACKEND_DEVICES:
        _BACKEND_DEVICES[key] = _as_pair(b.xp.empty((0,), device=b.device).__dlpack_device__())
    return _BACKEND_DEVICES[key]


def _describe(dev: tuple[int, int]) -> str:
    return f"{_KIND.get(dev[0], f'device type {dev[0]}')}:{dev[1]}"


def _read_only(obj: Any) -> bool:
    flags = getattr(obj, "flags", None)
    return flags is not None and getattr(flags, "writeable", True) is False


def shares_memory_possible(obj: Any, backend: Any = None) -> str | None:
    """None when ``obj`` can enter ``backend`` (default: the current one) without a copy, else why not."""
    b = get_backend() if backend is None else (backend if isinstance(backend, backends.Backend)
                                                else backends.get(backend))
    src, dst = dlpack_device(obj), _backend_device(b)
    if src != dst:
        return f"the array is on {_describe(src)} and backend {b.name!r} on {_describe(dst)}"
    if _read_only(obj):
        return "the array is read-only (a writable view of it would let writes through)"
    return None


def _copy_in(obj: Any, b: Any) -> Any:
    try:
        owner = backends.backend_of(obj)
    except TypeError:  # a library nnx has no adapter for: through DLPack onto the host (its CPU arrays)
        host = backends.get("numpy").xp.from_dlpack(obj)
    else:
        host = to_numpy(obj) if owner is not b else obj
    return b.asarray(host, copy=True)


def from_dlpack(obj: Any, *, backend: Any = None, device: Any = None, copy: bool | None = None) -> Any:
    """Put ``obj`` (anything with ``__dlpack__``) on an nnx backend, without a copy where possible.

    Args:
        obj: a NumPy array, torch tensor, CuPy array, ... (any DLPack producer).
        backend, device: the target (default: the current backend, as :func:`nnx.asarray`).
        copy: None (default) shares memory when the devices match and the source is writable,
            else copies; False never copies (raises BufferError saying why a copy would be
            needed); True always copies.

    The dtype is kept (unlike :func:`nnx.asarray`, float64 stays float64). Not in PyTorch under
    this name with these targets: torch's ``torch.from_dlpack`` is the torch-only form.

    >>> import pytest; torch = pytest.importorskip("torch")   # the example's source of a tensor
    >>> t = torch.zeros(3)
    >>> with nnx.use_backend("numpy"):
    ...     a = nnx.from_dlpack(t); a[0] = 1.0               # t[0] is 1.0 too: one buffer
    >>> t.tolist()
    [1.0, 0.0, 0.0]
    """
    if isinstance(backend, backends.Backend) and device is None:
        b = backend
    elif backend is None and device is None:
        b = get_backend()
    else:
        b = backends.get(backend if backend is not None else get_backend().name, device)
    reason = shares_memory_possible(obj, b)
    if copy is True or (reason is not None and copy is None):
        return _copy_in(obj, b)
    if reason is not None:
        raise BufferError(f"nnx.from_dlpack(copy=False): cannot share memory with backend {b.name!r}: {reason}; "
                          "pass copy=None (copy when needed) or copy=True")
    try:
        out = b.xp.from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        if copy is False:
            raise BufferError(f"nnx.from_dlpack(copy=False): backend {b.name!r} could not import a "
                              f"{type(obj).__module__}.{type(obj).__name__} through DLPack: {exc}") from exc
        return _copy_in(obj, b)
    if b.device_of(out) != b.device:  # one physical device, two logical ones (array_api_strict's device1)
        if copy is False:
            raise BufferError(f"nnx.from_dlpack(copy=False): the array lands on {b.device_of(out)!r}, not on "
                              f"backend {b.name!r}'s device {b.device!r}; moving it there is a copy")
        return _copy_in(obj, b)
    return out
