"""``Parameter``: a trainable array of a module, with its gradient.

Split out of :mod:`nnx.module` (which re-exports it) so that modules, optimizers and serialization
share one small definition.
"""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

__all__ = ["Parameter"]


class Parameter:
    """A trainable array of a module: ``data`` (a backend array) and its gradient ``grad``.

    ``grad`` is None until a backward pass fills it; gradients of several backward passes add up
    until ``zero_grad``. ``requires_grad=False`` freezes the parameter (no gradient is stored and
    optimizers skip it).

    >>> import nnx
    >>> p = nnx.Parameter(nnx.asarray([[1.0, 2.0]]))
    >>> p.shape
    (1, 2)
    """

    __slots__ = ("data", "grad", "requires_grad", "__weakref__")

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Parameter):
            data = data.data
        self.data = data
        self.grad: Any = None
        self.requires_grad = requires_grad

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape as a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        """The array's dtype (the backend library's dtype object)."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.data.ndim

    @property
    def size(self) -> int:
        """Number of elements."""
        n = 1
        for s in self.data.shape:
            n *= s
        return n

    @property
    def backend(self) -> backends.Backend:
        """The backend (array library and device) the data lives on."""
        return backends.backend_of(self.data)

    def numel(self) -> int:
        """Number of elements (as ``torch.Tensor.numel``)."""
        return self.size

    def detach(self) -> Any:
        """The underlying backend array (``p.data``), without the gradient; as ``torch.Tensor.detach``
        it shares memory with the parameter (copy it before changing it)."""
        return self.data

    def numpy(self) -> Any:
        """A host NumPy copy of the values (``nnx.to_numpy(p)``); as ``p.detach().cpu().numpy()`` in torch."""
        from .backend import to_numpy

        return to_numpy(self.data)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        """``np.asarray(p)`` gives the values (a host copy for device backends), not a 0-d object array."""
        host = self.numpy()
        return host if dtype is None else host.astype(dtype)

    def accumulate_grad(self, g: Any) -> None:
        """Add ``g`` to ``grad`` (or set it when there is none). No-op for frozen parameters."""
        if not self.requires_grad or g is None:
            return
        self.grad = g if self.grad is None else self.grad + g

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={backends.Backend.dtype_name(self.dtype)})"
