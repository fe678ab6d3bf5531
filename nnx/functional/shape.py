"""Shape ops with a backward: ``unflatten``, ``pixel_shuffle`` and ``pixel_unshuffle`` (PyTorch's semantics).

Each ``*_forward`` returns ``(y, backward)`` with ``backward(dy, input_grad=True) -> (dx, ())``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._util import functional_form, namespace

__all__ = ["pixel_shuffle", "pixel_shuffle_forward", "pixel_unshuffle", "pixel_unshuffle_forward", "unflatten",
           "unflatten_forward"]

Array = Any


def unflatten_forward(x: Array, dim: int, sizes: Sequence[int]) -> tuple[Array, Callable]:
    """Split dimension ``dim`` into ``sizes`` (one entry may be -1), as ``torch.unflatten``."""
    xp = namespace(x)
    shape = tuple(x.shape)
    nd = len(shape)
    if not -nd <= dim < nd:
        raise ValueError(f"unflatten: dimension {dim} out of range for input of shape {shape}")
    d = dim % nd
    sizes = tuple(int(s) for s in sizes)
    known = 1
    for s in sizes:
        known *= s if s != -1 else 1
    if sizes.count(-1) > 1 or (-1 not in sizes and known != shape[d]) or (-1 in sizes and shape[d] % known):
        raise ValueError(f"unflatten: sizes {sizes} do not multiply to dimension {dim} of size {shape[d]}")
    sizes = tuple(shape[d] // known if s == -1 else s for s in sizes)
    y = xp.reshape(x, shape[:d] + sizes + shape[d + 1:])

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return xp.reshape(dy, shape), ()

    return y, backward


def _shuffle(xp: Any, x: Array, r: int) -> Array:
    *lead, c, h, w = x.shape
    y = xp.reshape(x, (-1, c // (r * r), r, r, h, w))
    y = xp.permute_dims(y, (0, 1, 4, 2, 5, 3))
    return xp.reshape(y, (*lead, c // (r * r), h * r, w * r))


def _unshuffle(xp: Any, x: Array, r: int) -> Array:
    *lead, c, h, w = x.shape
    y = xp.reshape(x, (-1, c, h // r, r, w // r, r))
    y = xp.permute_dims(y, (0, 1, 3, 5, 2, 4))
    return xp.reshape(y, (*lead, c * r * r, h // r, w // r))


def _check_factor(where: str, r: int) -> int:
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{where}: the factor must be a positive integer, got {r!r}")
    return r


def pixel_shuffle_forward(x: Array, upscale_factor: int) -> tuple[Array, Callable]:
    """``(*, C r^2, H, W) -> (*, C, H r, W r)`` (sub-pixel convolution's rearrangement), as ``F.pixel_shuffle``."""
    xp = namespace(x)
    r = _check_factor("pixel_shuffle", upscale_factor)
    if x.ndim < 3 or x.shape[-3] % (r * r):
        raise ValueError(f"pixel_shuffle: expected (*, C*{r * r}, H, W) with the channels divisible by "
                         f"upscale_factor**2 = {r * r}, got shape {tuple(x.shape)}")

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return _unshuffle(xp, dy, r), ()

    return _shuffle(xp, x, r), backward


def pixel_unshuffle_forward(x: Array, downscale_factor: int) -> tuple[Array, Callable]:
    """``(*, C, H r, W r) -> (*, C r^2, H, W)``, the inverse of :func:`pixel_shuffle_forward`."""
    xp = namespace(x)
    r = _check_factor("pixel_unshuffle", downscale_factor)
    if x.ndim < 3 or x.shape[-1] % r or x.shape[-2] % r:
        raise ValueError(f"pixel_unshuffle: expected (*, C, H, W) with H and W divisible by {r}, "
                         f"got shape {tuple(x.shape)}")

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return _shuffle(xp, dy, r), ()

    return _unshuffle(xp, x, r), backward


unflatten = functional_form(unflatten_forward)
pixel_shuffle = functional_form(pixel_shuffle_forward)
pixel_unshuffle = functional_form(pixel_unshuffle_forward)
