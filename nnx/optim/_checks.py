"""Argument checks shared by the optimizers of this package (one error style for all)."""

from __future__ import annotations


def check_lr(name: str, lr: float) -> None:
    """Raise ``ValueError`` naming the optimizer unless ``lr`` is a non-negative number."""
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
        raise ValueError(f"{name}: lr must be a non-negative number, got {lr!r}")


def check_betas(name: str, betas: tuple[float, float]) -> None:
    """Raise ``ValueError`` unless both betas lie in [0, 1)."""
    if len(tuple(betas)) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas!r}")


def check_non_negative(name: str, **values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is negative."""
    for k, v in values.items():
        if not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"{name}: {k} must be a non-negative number, got {v!r}")
