"""Gradient recording switch: ``nnx.no_grad()``, ``nnx.enable_grad()``, ``nnx.is_grad_enabled()``.

When recording is off, layers keep no backward closure and so no activation stays alive; a
``backward`` call then fails with a message saying why. The switch is per thread and per asyncio
task (a ``contextvars.ContextVar``).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("nnx_grad_enabled", default=True)


def is_grad_enabled() -> bool:
    """True when layers record what backward needs (the default)."""
    return _enabled.get()


class _GradMode:
    mode = True

    def __new__(cls, fn: Callable | None = None) -> Any:
        self = super().__new__(cls)
        self._tokens = []
        return self(fn) if callable(fn) else self  # bare @nnx.no_grad decorates too, as torch

    def __enter__(self) -> None:
        self._tokens.append(_enabled.set(self.mode))  # a stack: one instance may be entered re-entrantly

    def __exit__(self, *exc: Any) -> None:
        _enabled.reset(self._tokens.pop())

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Context manager and decorator: run forward passes without recording anything for backward.

    >>> model = nnx.Linear(3, 2)
    >>> with nnx.no_grad():
    ...     logits = model(nnx.asarray([[1.0, 2.0, 3.0]]))   # nothing kept for backward
    >>> len(model._tape)
    0
    """

    mode = False


class enable_grad(_GradMode):
    """Context manager and decorator: turn recording back on inside a ``no_grad`` block."""

    mode = True
