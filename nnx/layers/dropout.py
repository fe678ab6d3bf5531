"""Dropout layers: Dropout (element-wise) and Dropout2d (whole channels), as ``torch.nn``.

Both use the inverted-dropout kernels of :mod:`nnx.functional.dropout`; they are the identity in
eval mode (``model.eval()``).
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..errors import check_probability
from ..functional._validation import check_array_input, rank_error
from ..module import Module

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """Randomly zero elements with probability ``p`` while training; scale the rest by 1/(1-p).

    >>> import nnx
    >>> drop = nnx.Dropout(0.5).eval()          # eval mode: the identity
    >>> nnx.to_numpy(drop(nnx.asarray([1.0, 2.0]))).tolist()
    [1.0, 2.0]
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_probability("Dropout", "p", p, inclusive_high=True)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = F.dropout_forward(x, self.p, self.training)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Module):
    """Channel dropout (``torch.nn.Dropout2d``): while training, zero each whole channel of
    each sample with probability ``p`` and scale the rest by ``1/(1-p)``. Input ``(N, C, H, W)``
    (or ``(N, C, L)``, channel-wise as PyTorch does for 3-D input).

    >>> import nnx
    >>> drop = nnx.Dropout2d(1.0)               # drops every channel
    >>> float(nnx.to_numpy(drop(nnx.asarray([[[[1.0, 2.0]]]]))).sum())
    0.0
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = check_probability("Dropout2d", "p", p, inclusive_high=True)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"Dropout2d(p={self.p})"
        check_array_input(where, x)
        if x.ndim not in (3, 4):
            raise rank_error(where, x, (3, 4), "(N, C, H, W)")
        y, backward = F.dropout2d_forward(x, self.p, self.training)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"p={self.p}"
