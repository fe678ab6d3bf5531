"""``Upsample``: resize the spatial dimensions (``torch.nn.Upsample``), over :func:`nnx.functional.interpolate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import functional as F
from ..module import Module


class Upsample(Module):
    """Resize ``(N, C, *spatial)`` to ``size`` or by ``scale_factor``.

    Args:
        size: output spatial size (an int or one per spatial dimension).
        scale_factor: multiplier (an int/float or one per spatial dimension).
        mode: ``"nearest"`` (1-3 spatial dimensions), ``"linear"`` (1) or ``"bilinear"`` (2).
        align_corners: for the linear modes, align the corner pixels (PyTorch's meaning).

    >>> import numpy as np
    >>> up = nnx.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    >>> tuple(up(nnx.asarray(np.ones((1, 3, 4, 5)))).shape)      # (N, C, H, W) -> (N, C, 2H, 2W)
    (1, 3, 8, 10)
    """

    def __init__(self, size: int | Sequence[int] | None = None, scale_factor: float | Sequence[float] | None = None,
                 mode: str = "nearest", align_corners: bool | None = None) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor")
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = F.interpolate_forward(x, self.size, self.scale_factor, self.mode, self.align_corners)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        extra = f", align_corners={self.align_corners}" if self.align_corners is not None else ""
        return f"{what}, mode={self.mode!r}{extra}"
