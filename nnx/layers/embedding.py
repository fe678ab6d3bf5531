"""Embedding: a lookup table of vectors indexed by integer ids (``torch.nn.Embedding``)."""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

from .. import functional as F
from .. import init
from ..errors import check_positive_int, check_same_backend, describe
from ..module import Module, Parameter
from .linear import new_parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``, looked up by integer ids.

    Args:
        num_embeddings: size of the vocabulary (ids run from 0 to ``num_embeddings - 1``).
        embedding_dim: size of each vector.
        padding_idx: an id whose row starts at zero and never receives a gradient (negative values
            count from the end, as in PyTorch).
        max_norm: if given, every row looked up in a forward pass whose ``norm_type`` norm exceeds
            ``max_norm`` is rescaled in place to norm ``max_norm`` first (PyTorch's semantics).
        norm_type: the p of the norm for ``max_norm`` (default 2).
        scale_grad_by_freq: divide each row's gradient by how often its id occurs in the batch.
        sparse: not supported (nnx gradients are dense); must be False.
        dtype, backend, device: where the table is created (default float32 on the current backend).

    Shapes: input: integer array of any shape ``(*)``; output ``(*, embedding_dim)``; weight
    ``(num_embeddings, embedding_dim)`` initialised from N(0, 1) as in PyTorch.

    ``backward(dy)`` fills ``weight.grad`` by a scatter-add of ``dy``'s rows (repeated ids add up;
    the backend adapter's ``scatter_add``) and returns None: integer ids have no gradient.

    Ids are range-checked on every backend. Where arrays live in host memory (NumPy, PyTorch CPU,
    array-api-strict) an out-of-range id raises ``IndexError`` at once. On a GPU an immediate check
    would cost a device-to-host copy every step, so the check is deferred: each forward records on
    the device whether an id was out of range (one small reduction kernel, no synchronisation), and
    :meth:`nnx.Module.raise_deferred_errors` reads the flag and raises ``IndexError``. ``nnx.fit``
    calls it at every log step; a hand-written loop calls it whenever it reads the loss.

    >>> import nnx
    >>> xp = nnx.get_backend().xp
    >>> emb = nnx.Embedding(100, 16, padding_idx=0)
    >>> y = emb(nnx.asarray([[1, 2, 0]]))
    >>> y.shape
    (1, 3, 16)
    >>> _ = emb.backward(xp.ones((1, 3, 16), dtype=xp.float32))   # fills emb.weight.grad
    >>> emb.weight.grad.shape
    (100, 16)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Any = None, _freeze: bool = False, *, dtype: Any = None,
                 backend: Any = None, device: Any = None) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) or not (
                    -num_embeddings <= padding_idx < num_embeddings):
                raise ValueError(f"Embedding: padding_idx must be an integer in [{-num_embeddings}, "
                                 f"{num_embeddings - 1}] (within num_embeddings), got {padding_idx!r}")
            if padding_idx < 0:
                padding_idx += num_embeddings
        if sparse:
            raise ValueError("Embedding: sparse=True is not supported by nnx (gradients are dense arrays)")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"Embedding: max_norm must be positive, got {max_norm!r}")
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = False
        if _weight is None:
            self.weight = new_parameter((num_embeddings, embedding_dim), dtype, backend, device)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight must have shape ({num_embeddings}, {embedding_dim}), "
                                 f"got {tuple(_weight.shape)}")
            self.weight = Parameter(_weight)
        self.weight.requires_grad = not _freeze
        self._bad_ids: Any = None  # device flag of deferred id checks (GPU backends); not state

    def reset_parameters(self) -> None:
        """N(0, 1) entries; the padding row, if any, is zero."""
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self) -> None:
        if self.padding_idx is not None:
            w = self.weight.data
            self.weight.data = backends.backend_of(w).at_set(w, (self.padding_idx, ...), 0.0)

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None,
                        max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                        sparse: bool = False) -> Embedding:
        """An Embedding whose table is ``embeddings`` (2-D backend array), frozen unless ``freeze=False``."""
        if getattr(embeddings, "ndim", None) != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got {describe(embeddings)}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)

    def forward(self, input: Any) -> Any:
        self._check(input)
        if self.max_norm is not None:  # renormalise here so that the layer keeps the result
            self.weight.data = F.embedding_renorm_(self.weight.data, input, self.max_norm, self.norm_type)
        y, backward = F.embedding_forward(input, self.weight.data, self.padding_idx, None, self.norm_type,
                                          self.scale_grad_by_freq)
        return self.record(y, backward, params=("weight",))

    def _check(self, ids: Any) -> None:
        where = f"Embedding({self.num_embeddings}, {self.embedding_dim})"
        w = self.weight.data
        check_same_backend(where, ids, w)
        if not backends.backend_of(w).xp.isdtype(ids.dtype, "integral"):
            kind = backends.Backend.dtype_name(ids.dtype)
            raise TypeError(f"{where}: expected integer token ids, got dtype {kind}; "
                            "convert with nnx.asarray(ids) from integer data (e.g. np.int64)")
        b = backends.backend_of(w)
        if b.host_memory and ids.ndim > 0 and ids.shape[0] != 0 and all(s > 0 for s in ids.shape):
            xp = b.xp
            lo, hi = int(xp.min(ids)), int(xp.max(ids))
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                raise IndexError(f"{where}: token id {bad} is out of range; ids must be in "
                                 f"[0, {self.num_embeddings - 1}] (got min {lo}, max {hi})")
        elif b.host_memory and ids.ndim == 0:
            v = int(ids)
            if not 0 <= v < self.num_embeddings:
                raise IndexError(f"{where}: token id {v} is out of range; ids must be in "
                                 f"[0, {self.num_embeddings - 1}]")
        elif not b.host_memory and not b.tracing:  # record on the device; read by raise_deferred_errors()
            self._bad_ids = b.index_in_range(ids, 0, self.num_embeddings, self._bad_ids)

    def _raise_deferred(self) -> None:
        flag, self._bad_ids = self._bad_ids, None
        if flag is not None and int(backends.backend_of(flag).to_numpy(flag)) != 0:
            raise IndexError(f"Embedding({self.num_embeddings}, {self.embedding_dim}): a token id outside "
                             f"[0, {self.num_embeddings - 1}] was looked up since the last check (on a GPU "
                             "the lookup does not fail, so the outputs of that batch were wrong)")

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        return s
