"""Transformer encoder/decoder layers and stacks (``torch.nn.Transformer*``) with explicit backward.

Each layer is a composite module: its ``backward`` calls the children's backward in reverse order
of the forward (attention, dropout, Linear, LayerNorm, activation each keep their own closure),
adding the residual gradients. Names, arguments and state_dict keys are torch's.
"""

from __future__ import annotations

import copy
from typing import Any

import nnx_backends as backends

from ..containers import ModuleList
from ..errors import check_positive_int, check_probability
from ..module import Module
from .activation import GELU, ReLU
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear, _fused_activation
from .normalization import LayerNorm

__all__ = ["TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer"]

Array = Any


def _activation(where: str, activation: str | Module) -> Module:
    if isinstance(activation, Module):
        return activation
    if activation == "relu":
        return ReLU()
    if activation == "gelu":
        return GELU()
    raise ValueError(f"{where}: activation must be 'relu', 'gelu' or an nnx Module; got {activation!r}")


class _FeedForward:
    """Mixin: the ``linear2(dropout(activation(linear1(x))))`` block and its backward."""

    # Position-wise: run on (tokens, d_model) so that each Linear is one 2-D GEMM. linear1 and a
    # ReLU/GELU activation run as one product and the adapter's bias-and-activation kernel (its
    # backward: the activation gradient and the bias sum in one kernel; on NumPy, ReLU's gradient is
    # one host-kernel pass instead of three); a custom activation Module runs on its own.
    def _ff(self, x: Array, drop: Dropout) -> Array:
        xp = backends.backend_of(x).xp
        x2 = xp.reshape(x, (-1, x.shape[-1]))
        act = _fused_activation(self.activation) if type(self.linear1) is Linear else None
        h = self.linear1._forward_activated(x2, act, self.activation) if act is not None \
            else self.activation(self.linear1(x2))
        return xp.reshape(drop(self.linear2(self.dropout(h))), x.shape)

    def _ff_backward(self, g: Array, drop: Dropout) -> Array:
        xp = backends.backend_of(g).xp
        shape = g.shape
        g = drop.backward(xp.reshape(g, (-1, shape[-1])))
        g = self.linear2.backward(g)
        g = self.dropout.backward(g)
        g = self.activation.backward(g)
        return xp.reshape(self.linear1.backward(g), shape)


def _self_attn_backward(attn: MultiheadAttention, drop: Dropout, g: Array, input_grad: bool = True) -> Array | None:
    # the same tensor was query, key and value; without input_grad the projection's input GEMM is skipped
    return attn._backward_self(drop.backward(g), input_grad=input_grad)


class TransformerEncoderLayer(_FeedForward, Module):
    """Self-attention + feed-forward block (``torch.nn.TransformerEncoderLayer``).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``; shapes ``(S, N, E)``
    (``(N, S, E)`` with ``batch_first``) or unbatched ``(S, E)``. Masks follow
    :class:`nnx.MultiheadAttention` (boolean True = not allowed, or additive float).
    ``backward(grad_output, *, input_grad=True)`` returns d src (nnx addition).

    >>> import numpy as np
    >>> layer = nnx.TransformerEncoderLayer(256, 4, batch_first=True)
    >>> x, dy = nnx.asarray(np.ones((2, 10, 256))), nnx.asarray(np.ones((2, 10, 256)))   # (N, S, E)
    >>> y = layer(x); dx = layer.backward(dy)
    >>> tuple(y.shape), tuple(dx.shape)
    ((2, 10, 256), (2, 10, 256))
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Module = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, *, dtype: Any = None, backend: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        where = "TransformerEncoderLayer"
        check_positive_int(where, "dim_feedforward", dim_feedforward)
        check_probability(where, "dropout", dropout)
        kw = dict(dtype=dtype, backend=backend, device=device)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(where, activation)

    def _sa(self, x: Array, mask: Array | None, kpm: Array | None, is_causal: bool) -> Array:
        y = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=kpm, need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(y)

    def forward(self, src: Array, src_mask: Array | None = None, src_key_padding_mask: Array | None = None,
                is_causal: bool = False) -> Array:
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x), self.dropout2)
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff(x, self.dropout2))

    def backward(self, grad_output: Array, *, input_grad: bool = True) -> Array | None:
        """Fill the parameter gradients; return d src (None when ``input_grad`` is False: the
        first layer of a model then skips the self-attention's input projection product and, in
        pre-norm, ``norm1``'s input gradient)."""
        g = grad_output
        if self.norm_first:
            g = g + self.norm2.backward(self._ff_backward(g, self.dropout2))
            dn = self.norm1.backward(_self_attn_backward(self.self_attn, self.dropout1, g), input_grad=input_grad)
            return g + dn if input_grad else None
        g = self.norm2.backward(g)
        g = g + self._ff_backward(g, self.dropout2)
        g = self.norm1.backward(g)
        da = _self_attn_backward(self.self_attn, self.dropout1, g, input_grad)
        return g + da if input_grad else None


class TransformerDecoderLayer(_FeedForward, Module):
    """Self-attention, cross-attention and feed-forward block (``torch.nn.TransformerDecoderLayer``).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``.
    ``backward(grad_output, *, input_grad=True)`` returns ``(d_tgt, d_memory)`` (nnx addition).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Module = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, *, dtype: Any = None, backend: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        where = "TransformerDecoderLayer"
        check_positive_int(where, "dim_feedforward", dim_feedforward)
        check_probability(where, "dropout", dropout)
        kw = dict(dtype=dtype, backend=backend, device=device)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(where, activation)

    def _sa(self, x: Array, mask: Array | None, kpm: Array | None, is_causal: bool) -> Array:
        y = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=kpm, need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(y)

    def _mha(self, x: Array, mem: Array, mask: Array | None, kpm: Array | None, is_causal: bool) -> Array:
        y = self.multihead_attn(x, mem, mem, attn_mask=mask, key_padding_mask=kpm, need_weights=False,
                                is_causal=is_causal)[0]
        return self.dropout2(y)

    def _mha_backward(self, g: Array) -> tuple[Array, Array]:
        dq, dk, dv = self.multihead_attn.backward(self.dropout2.backward(g))
        return dq, dk + dv

    def forward(self, tgt: Array, memory: Array, tgt_mask: Array | None = None, memory_mask: Array | None = None,
                tgt_key_padding_mask: Array | None = None, memory_key_padding_mask: Array | None = None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Array:
        x = tgt
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff(self.norm3(x), self.dropout3)
        x = self.norm1(x + self._sa(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff(x, self.dropout3))

    def backward(self, grad_output: Array, *, input_grad: bool = True) -> tuple[Array | None, Array]:
        """Fill the parameter gradients; return ``(d_tgt, d_memory)``. ``input_grad=False`` skips
        ``d_tgt`` (returned as None); ``d_memory`` is always returned (the encoder needs it)."""
        g = grad_output
        if self.norm_first:
            g = g + self.norm3.backward(self._ff_backward(g, self.dropout3))
            dx, dmem = self._mha_backward(g)
            g = g + self.norm2.backward(dx)
            dn = self.norm1.backward(_self_attn_backward(self.self_attn, self.dropout1, g), input_grad=input_grad)
            return (g + dn if input_grad else None), dmem
        g = self.norm3.backward(g)
        g = g + self._ff_backward(g, self.dropout3)
        g = self.norm2.backward(g)
        dx, dmem = self._mha_backward(g)
        g = self.norm1.backward(g + dx)
        da = _self_attn_backward(self.self_attn, self.dropout1, g, input_grad)
        return (g + da if input_grad else None), dmem


def _clones(where: str, layer: Module, num_layers: int) -> ModuleList:
    check_positive_int(where, "num_layers", num_layers)
    return ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])


class TransformerEncoder(Module):
    """A stack of ``num_layers`` copies of ``encoder_layer`` and an optional final ``norm``
    (``torch.nn.TransformerEncoder``); state_dict keys ``layers.0.self_attn.in_proj_weight`` ...

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``; ``backward`` returns d src
    (None with ``input_grad=False``: the first layer then skips its input-gradient products).
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None) -> None:
        super().__init__()
        self.layers = _clones("TransformerEncoder", encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src: Array, mask: Array | None = None, src_key_padding_mask: Array | None = None,
                is_causal: bool | None = None) -> Array:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x

    def backward(self, grad_output: Array, *, input_grad: bool = True) -> Array:
        g = self.norm.backward(grad_output) if self.norm is not None else grad_output
        layers = list(self.layers)
        for i in range(len(layers) - 1, -1, -1):
            g = layers[i].backward(g, input_grad=input_grad or i > 0)
        return g


class TransformerDecoder(Module):
    """A stack of ``num_layers`` copies of ``decoder_layer`` and an optional final ``norm``
    (``torch.nn.TransformerDecoder``). ``backward`` returns ``(d_tgt, d_memory)`` (memory gradients
    of every layer summed).
    """

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None) -> None:
        super().__init__()
        self.layers = _clones("TransformerDecoder", decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt: Array, memory: Array, tgt_mask: Array | None = None, memory_mask: Array | None = None,
                tgt_key_padding_mask: Array | None = None, memory_key_padding_mask: Array | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Array:
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                      memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x

    def backward(self, grad_output: Array, *, input_grad: bool = True) -> tuple[Array, Array]:
        g = self.norm.backward(grad_output) if self.norm is not None else grad_output
        dmem = None
        layers = list(self.layers)
        for i in range(len(layers) - 1, -1, -1):
            g, dm = layers[i].backward(g, input_grad=input_grad or i > 0)
            dmem = dm if dmem is None else dmem + dm
        return g, dmem
