"""Shape layers: ``Unflatten``, ``PixelShuffle``, ``PixelUnshuffle`` (``torch.nn`` names and arguments)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import functional as F
from ..module import Module


class Unflatten(Module):
    """Split dimension ``dim`` into ``unflattened_size`` (the inverse of ``Flatten``).

    >>> import numpy as np
    >>> x = nnx.asarray(np.zeros((3, 10)))
    >>> tuple(nnx.Unflatten(1, (2, 5))(x).shape)   # x: (N, 10) -> (N, 2, 5)
    (3, 2, 5)
    """

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = F.unflatten_forward(x, self.dim, self.unflattened_size)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class PixelShuffle(Module):
    """``(*, C r^2, H, W) -> (*, C, H r, W r)`` with ``r = upscale_factor`` (sub-pixel upsampling)."""

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = F.pixel_shuffle_forward(x, self.upscale_factor)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """``(*, C, H r, W r) -> (*, C r^2, H, W)`` with ``r = downscale_factor`` (inverse of PixelShuffle)."""

    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = F.pixel_unshuffle_forward(x, self.downscale_factor)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"
