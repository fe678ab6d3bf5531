"""MultiheadAttention (``torch.nn.MultiheadAttention``) with an explicit backward."""

from __future__ import annotations

import math
from typing import Any

import nnx_backends as backends

from .. import init
from ..errors import check_positive_int, check_probability
from ..functional.attention import attention_forward
from ..functional.linear import linear_forward
from ..module import Module
from .linear import Linear, new_parameter

__all__ = ["MultiheadAttention"]

Array = Any


def _bool_bias(xp: Any, mask: Array, dtype: Any) -> Array:
    """Additive bias of a boolean "not allowed" mask: -inf where True, 0 elsewhere."""
    dev = getattr(mask, "device", None)
    return xp.where(mask, xp.full(mask.shape, -math.inf, dtype=dtype, device=dev),
                    xp.zeros(mask.shape, dtype=dtype, device=dev))


class _Ctx:
    """The geometry of one MultiheadAttention call and what its backward needs.

    ``bf``: tokens are in ``(N, T)`` order (batch_first inputs are used as they are, no transpose
    copy); ``sa``/``ba``: the sequence and batch axes; ``extra``: key slots appended by ``bias_k``
    and ``add_zero_attn``.
    """

    def __init__(self, xp: Any, m: MultiheadAttention, query: Array, key: Array, value: Array, unbatched: bool,
                 fused: bool, average: bool) -> None:
        self.xp, self.m, self.unbatched, self.fused, self.average = xp, m, unbatched, fused, average
        self.bf = m.batch_first and not unbatched
        self.sa, ba = (1, 0) if self.bf else (0, 1)
        self.L, self.N, self.E = query.shape[self.sa], query.shape[ba], query.shape[2]
        self.S = key.shape[self.sa]
        if key.shape[ba] != self.N or value.shape[ba] != self.N or value.shape[self.sa] != self.S:
            raise ValueError(f"{m._where()}: key and value must share the batch size of query and the same "
                             f"sequence length; got shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        self.extra = int(m.bias_k is not None) + int(bool(m.add_zero_attn))
        self.device = backends.device_of(query)
        self.proj_fn: Any = None
        self.attn_bwd: Any = None

    def backward(self, dout: Array, input_grad: bool = True, grad_weights: Array | None = None,
                 summed: bool = False) -> tuple:
        return self.m._backward_pass(self, dout, input_grad, grad_weights, summed)

    def tokens(self, t: Array, T: int) -> Array:
        """``(T*N or N*T, E)`` -> ``(T, N, E)`` or ``(N, T, E)``."""
        return self.xp.reshape(t, (self.N, T, self.E) if self.bf else (T, self.N, self.E))

    def heads(self, t: Array) -> Array:
        """-> ``(N, H, T, hd)``, a view."""
        xp, N, H, hd = self.xp, self.N, self.m.num_heads, self.m.head_dim
        T = t.shape[self.sa]
        if self.bf:
            return xp.permute_dims(xp.reshape(t, (N, T, H, hd)), (0, 2, 1, 3))
        return xp.permute_dims(xp.reshape(t, (T, N, H, hd)), (1, 2, 0, 3))

    def unheads(self, t: Array) -> Array:
        """``(N, H, T, hd)`` -> ``(N, T, H, hd)`` or ``(T, N, H, hd)``, a view."""
        return self.xp.permute_dims(t, (0, 2, 1, 3) if self.bf else (2, 0, 1, 3))

    def shape_back(self, t: Array, T: int) -> Array:
        t = self.xp.reshape(t, (self.N, T, -1) if self.bf else (T, self.N, -1))
        return t[:, 0, :] if self.unbatched else t


class MultiheadAttention(Module):
    """Multi-head attention with torch's parameters, masks and state_dict keys.

    Args:
        embed_dim, num_heads: model width and number of heads (``embed_dim % num_heads == 0``).
        dropout: dropout on the attention probabilities while training.
        bias: biases in the input and output projections.
        add_bias_kv: learn ``bias_k``/``bias_v`` appended to the key/value sequences.
        add_zero_attn: append a zero key/value position.
        kdim, vdim: key/value feature sizes (default ``embed_dim``); when they differ the projection
            weights are ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` (as torch).
        batch_first: inputs ``(N, L, E)`` instead of ``(L, N, E)``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(attn_output, attn_weights or None)``
    like torch, unbatched ``(L, E)`` inputs included. Masks: boolean True = *not allowed* (torch's MHA
    convention), or floating (added to the scores); ``attn_mask`` ``(L, S)`` or ``(N*num_heads, L, S)``,
    ``key_padding_mask`` ``(N, S)``. ``is_causal=True`` without ``attn_mask`` applies the causal mask.

    ``backward(grad_output, grad_weights=None, *, input_grad=True)`` (nnx addition) fills the
    parameter gradients and returns ``(d_query, d_key, d_value)`` (None when ``input_grad`` is False).
    For self-attention (the same tensor passed three times) the caller sums the three.

    Differences from torch: a query whose keys are all masked out gets output 0 (torch: NaN).

    >>> import numpy as np
    >>> mha = nnx.MultiheadAttention(64, 4, batch_first=True)
    >>> x, dy = nnx.asarray(np.ones((2, 10, 64))), nnx.asarray(np.ones((2, 10, 64)))   # (N, L, E)
    >>> y, w = mha(x, x, x); dq, dk, dv = mha.backward(dy)
    >>> tuple(y.shape), tuple(w.shape), tuple(dq.shape)
    ((2, 10, 64), (2, 10, 10), (2, 10, 64))
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, *, dtype: Any = None, backend: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        self.embed_dim = check_positive_int("MultiheadAttention", "embed_dim", embed_dim)
        self.num_heads = check_positive_int("MultiheadAttention", "num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim must be divisible by num_heads; got embed_dim="
                             f"{embed_dim}, num_heads={num_heads}")
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout = check_probability("MultiheadAttention", "dropout", dropout)
        self.batch_first = bool(batch_first)
        self.head_dim = embed_dim // num_heads
        self.add_zero_attn = bool(add_zero_attn)
        e = embed_dim

        def p(shape: tuple[int, ...]) -> Any:
            return new_parameter(shape, dtype, backend, device)

        if self._qkv_same_embed_dim:
            self.in_proj_weight = p((3 * e, e))
            for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(n, None)
        else:
            self.q_proj_weight = p((e, e))
            self.k_proj_weight = p((e, self.kdim))
            self.v_proj_weight = p((e, self.vdim))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = p((3 * e,))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bias, dtype=dtype, backend=backend, device=device)
        if add_bias_kv:
            self.bias_k = p((1, 1, e))
            self.bias_v = p((1, 1, e))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        for b in (self.in_proj_bias, self.out_proj.bias):
            if b is not None:
                init.zeros_(b)
        for b in (self.bias_k, self.bias_v):
            if b is not None:
                init.xavier_normal_(b)

    # ------------------------------------------------------------------ helpers
    def _where(self) -> str:
        return f"MultiheadAttention(embed_dim={self.embed_dim}, num_heads={self.num_heads})"

    def _weights(self) -> tuple[Array, Array, Array]:
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight.data
            e = self.embed_dim
            return w[:e, :], w[e:2 * e, :], w[2 * e:, :]
        return self.q_proj_weight.data, self.k_proj_weight.data, self.v_proj_weight.data

    def _biases(self) -> tuple[Array | None, Array | None, Array | None]:
        if self.in_proj_bias is None:
            return None, None, None
        b = self.in_proj_bias.data
        e = self.embed_dim
        return b[:e], b[e:2 * e], b[2 * e:]

    def _float_mask(self, xp: Any, mask: Array | None, name: str, shapes: list[tuple], dtype: Any) -> Array | None:
        if mask is None:
            return None
        if tuple(mask.shape) not in shapes:
            raise ValueError(f"{self._where()}: {name} must have shape {' or '.join(map(str, shapes))}; "
                             f"got {tuple(mask.shape)}")
        if mask.dtype == xp.bool:
            return _bool_bias(xp, mask, dtype)
        if not xp.isdtype(mask.dtype, "real floating"):
            raise TypeError(f"{self._where()}: {name} must be boolean (True = not allowed) or floating; got "
                            f"dtype {mask.dtype}")
        return xp.astype(mask, dtype)

    def _check_inputs(self, q: Array, k: Array, v: Array) -> None:
        if q.ndim not in (2, 3) or k.ndim != q.ndim or v.ndim != q.ndim:
            raise ValueError(f"{self._where()}: query, key, value must all be 3-D (batched) or 2-D (unbatched); "
                             f"got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        for name, x, d in (("query", q, self.embed_dim), ("key", k, self.kdim), ("value", v, self.vdim)):
            if x.shape[-1] != d:
                raise ValueError(f"{self._where()}: {name} must have {d} features in the last dimension; got "
                                 f"shape {tuple(x.shape)}")

    # ------------------------------------------------------------------ forward
    def _project(self, xp: Any, query: Array, key: Array, value: Array, fused: bool) -> tuple:
        """Input projections on (tokens, features) 2-D views: one GEMM each, or one for all three."""
        wq, wk, wv = self._weights()
        bq, bk, bv = self._biases()
        E = self.embed_dim
        if fused:  # self-attention: q, k, v in one GEMM against in_proj_weight (as torch)
            b = self.in_proj_bias.data if self.in_proj_bias is not None else None
            qkv, fn = linear_forward(xp.reshape(query, (-1, E)), self.in_proj_weight.data, b)
            return (qkv, None, None), fn
        q, bq_fn = linear_forward(xp.reshape(query, (-1, E)), wq, bq)
        k, bk_fn = linear_forward(xp.reshape(key, (-1, self.kdim)), wk, bk)
        v, bv_fn = linear_forward(xp.reshape(value, (-1, self.vdim)), wv, bv)
        return (q, k, v), (bq_fn, bk_fn, bv_fn)

    def forward(self, query: Array, key: Array, value: Array, key_padding_mask: Array | None = None,
                need_weights: bool = True, attn_mask: Array | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Array, Array | None]:
        self._check_inputs(query, key, value)
        xp = backends.backend_of(query).xp
        fused = self._qkv_same_embed_dim and self.bias_k is None and query is key and key is value
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = query[:, None, :], key[:, None, :], value[:, None, :]
            if key_padding_mask is not None:
                key_padding_mask = xp.reshape(key_padding_mask, (1, *key_padding_mask.shape))
        c = _Ctx(xp, self, query, key, value, unbatched, fused, average_attn_weights)
        mask = self._mask(c, attn_mask, key_padding_mask, is_causal, query.dtype)
        (q, k, v), c.proj_fn = self._project(xp, query, key, value, fused)
        qh, kh, vh = self._heads_of(c, q, k, v)
        p_drop = self.dropout if self.training else 0.0
        oh, probs, c.attn_bwd = attention_forward(qh, kh, vh, mask, p_drop, where=self._where())
        o = xp.reshape(xp.permute_dims(oh, (0, 2, 1, 3) if c.bf else (2, 0, 1, 3)), (c.L * c.N, c.E))
        out = xp.reshape(self.out_proj(o), (c.N, c.L, c.E) if c.bf else (c.L, c.N, c.E))
        weights = None
        if need_weights:
            weights = xp.mean(probs, axis=1) if average_attn_weights else probs
            if unbatched:
                weights = weights[0, ...]
        if unbatched:
            out = out[:, 0, :]
        self.record(out, c.backward)
        return out, weights

    def _mask(self, c: _Ctx, attn_mask: Array | None, key_padding_mask: Array | None, is_causal: bool,
              dt: Any) -> Array | None:
        """One additive mask ``(1 or N, 1 or H, L, S + extra)`` from the attention and padding masks."""
        xp, L, N, S, H = c.xp, c.L, c.N, c.S, self.num_heads
        am = self._float_mask(xp, attn_mask, "attn_mask", [(L, S), (N * H, L, S)], dt)
        kpm = self._float_mask(xp, key_padding_mask, "key_padding_mask", [(N, S)], dt)
        if is_causal and attn_mask is None:
            dev = c.device
            am = _bool_bias(xp, xp.arange(L, device=dev)[:, None] < xp.arange(S, device=dev)[None, :], dt)
        mask = None
        if am is not None:
            mask = xp.reshape(am, (1, 1, L, S)) if am.ndim == 2 else xp.reshape(am, (N, H, L, S))
        if kpm is not None:
            kp = xp.reshape(kpm, (N, 1, 1, S))
            mask = kp if mask is None else mask + kp
        if mask is not None and c.extra:
            mask = xp.concat([mask, xp.zeros((*mask.shape[:-1], c.extra), dtype=dt)], axis=-1)
        return mask

    def _heads_of(self, c: _Ctx, q: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
        """Projected tokens -> ``(N, H, T, hd)`` views, with ``bias_k``/``bias_v`` and the zero
        attention slot appended where asked."""
        xp, N, E, sa = c.xp, c.N, c.E, c.sa
        if c.fused:  # self-attention without bias_k: q, k, v are one (tokens, 3E) block
            qh, kh, vh = self._fused_heads(c, q)
        else:
            q, k, v = c.tokens(q, c.L), c.tokens(k, c.S), c.tokens(v, c.S)
            if self.bias_k is not None:
                bshape = (N, 1, E) if c.bf else (1, N, E)
                k = xp.concat([k, xp.broadcast_to(xp.reshape(self.bias_k.data, (1, 1, E)), bshape)], axis=sa)
                v = xp.concat([v, xp.broadcast_to(xp.reshape(self.bias_v.data, (1, 1, E)), bshape)], axis=sa)
            qh, kh, vh = c.heads(q), c.heads(k), c.heads(v)
        if self.add_zero_attn:
            z = xp.zeros((N, self.num_heads, 1, self.head_dim), dtype=qh.dtype)
            kh = xp.concat([kh, z], axis=2)
            vh = xp.concat([vh, z], axis=2)
        return qh, kh, vh

    def _fused_heads(self, c: _Ctx, qkv: Array) -> tuple[Array, Array, Array]:
        """``(tokens, 3E)`` of the one-GEMM projection -> q, k, v as contiguous ``(N, H, T, hd)``
        blocks, in one copy (the per-head products then run on dense matrices)."""
        xp, N, T, H, hd = c.xp, c.N, c.L, self.num_heads, self.head_dim
        t = xp.reshape(qkv, (N, T, 3, H, hd) if c.bf else (T, N, 3, H, hd))
        heads = xp.reshape(xp.permute_dims(t, (2, 0, 3, 1, 4) if c.bf else (2, 1, 3, 0, 4)), (3, N, H, T, hd))
        return heads[0, ...], heads[1, ...], heads[2, ...]

    def _backward_pass(self, c: _Ctx, dout: Array, input_grad: bool = True, grad_weights: Array | None = None,
                       summed: bool = False) -> tuple:
        """The recorded closure: ``(input gradients, {parameter name: gradient})``."""
        xp, L, N, E, H = c.xp, c.L, c.N, c.E, self.num_heads
        if c.unbatched:
            dout = dout[:, None, :]
        do = self.out_proj.backward(xp.reshape(dout, (L * N, E)))
        doh = xp.permute_dims(xp.reshape(do, (N, L, H, self.head_dim) if c.bf else (L, N, H, self.head_dim)),
                              (0, 2, 1, 3) if c.bf else (1, 2, 0, 3))
        gp = None
        if grad_weights is not None:
            gw = xp.reshape(grad_weights, (1, *grad_weights.shape)) if c.unbatched else grad_weights
            S2 = c.S + c.extra
            gp = (xp.broadcast_to(xp.reshape(gw, (N, 1, L, S2)), (N, H, L, S2)) / H) if c.average else gw
        out = self._fused_grad_buffer(c) if c.fused and not self.add_zero_attn else None
        dqh, (dkh, dvh) = c.attn_bwd(doh, True, gp, None if out is None else out[1])
        if out is not None and dqh is out[1][0]:  # the gradients are already in one (tokens, 3E) block
            return self._fused_backward(c, out[0], input_grad, summed)
        if self.add_zero_attn:
            dkh, dvh = dkh[:, :, :-1, :], dvh[:, :, :-1, :]
        if c.fused:
            return self._fused_backward(c, (dqh, dkh, dvh), input_grad, summed)
        return self._split_backward(c, (dqh, dkh, dvh), input_grad, summed)

    def _split_backward(self, c: _Ctx, dh: tuple, input_grad: bool, summed: bool) -> tuple:
        """Backward of three separate projections (cross-attention, kdim/vdim, bias_k)."""
        xp, L, N, E, S, bf = c.xp, c.L, c.N, c.E, c.S, c.bf
        dq, dk, dv = (xp.reshape(c.unheads(t), (*t.shape[:1], t.shape[2], E) if bf else (t.shape[2], N, E))
                      for t in dh)
        grads: dict[str, Array | None] = {}
        if self.bias_k is not None:
            for name, d in (("bias_k", dk), ("bias_v", dv)):
                grads[name] = xp.reshape(xp.sum(d[:, S:S + 1, :] if bf else d[S:S + 1, ...], axis=(0, 1)), (1, 1, E))
            dk, dv = (dk[:, :S, :], dv[:, :S, :]) if bf else (dk[:S, ...], dv[:S, ...])
        bq_fn, bk_fn, bv_fn = c.proj_fn
        dxq, (gwq, gbq) = bq_fn(xp.reshape(dq, (L * N, E)), input_grad)
        dxk, (gwk, gbk) = bk_fn(xp.reshape(dk, (S * N, E)), input_grad)
        dxv, (gwv, gbv) = bv_fn(xp.reshape(dv, (S * N, E)), input_grad)
        if self._qkv_same_embed_dim:
            grads["in_proj_weight"] = xp.concat([gwq, gwk, gwv], axis=0)
        else:
            grads.update(q_proj_weight=gwq, k_proj_weight=gwk, v_proj_weight=gwv)
        if self.in_proj_bias is not None:
            grads["in_proj_bias"] = xp.concat([gbq, gbk, gbv], axis=0)
        if not input_grad:
            return None, grads
        dx = (c.shape_back(dxq, L), c.shape_back(dxk, S), c.shape_back(dxv, S))
        if summed:
            return dx[0] + dx[1] + dx[2], grads
        return dx, grads

    def _fused_grad_buffer(self, c: _Ctx) -> tuple[Array, tuple] | None:
        """On mutable host libraries: a ``(tokens, 3E)`` buffer and its q, k, v head views
        ``(N, H, T, hd)``, laid out as the forward's projection, for the attention backward to write
        its products into (saves a stacking copy of the three gradients)."""
        b = backends.backend_of(self.in_proj_weight.data)
        if not (b.mutable and b.host_memory):
            return None
        xp, N, T, H, hd = c.xp, c.N, c.L, self.num_heads, self.head_dim
        shape = (N, T, 3, H, hd) if c.bf else (T, N, 3, H, hd)
        buf = xp.empty(shape, dtype=self.in_proj_weight.data.dtype, device=c.device)
        views = tuple(xp.permute_dims(buf[:, :, i, ...], (0, 2, 1, 3) if c.bf else (1, 2, 0, 3)) for i in range(3))
        return xp.reshape(buf, (T * N, 3 * self.embed_dim)), views

    def _fused_backward(self, c: _Ctx, dh: tuple | Array, input_grad: bool, summed: bool) -> tuple:
        """Backward of the one-GEMM self-attention projection: ``(N, H, T, hd)`` x3 -> ``(tokens, 3E)``
        in one copy (or already there), then one GEMM for the weight gradient and one for the input gradient."""
        xp, L, N, E = c.xp, c.L, c.N, c.E
        dqkv = dh if not isinstance(dh, tuple) else xp.reshape(xp.stack([c.unheads(t) for t in dh], axis=2),
                                                              (L * N, 3 * E))
        dx, (gw, gb) = c.proj_fn(dqkv, input_grad)
        grads: dict[str, Array | None] = {"in_proj_weight": gw}
        if self.in_proj_bias is not None:
            grads["in_proj_bias"] = gb
        if not input_grad:
            return None, grads
        dx = xp.reshape(dx, (N, L, E) if c.bf else (L, N, E))
        if c.unbatched:
            dx = dx[:, 0, :]
        if summed:
            return dx, grads
        return (dx, xp.zeros_like(dx), xp.zeros_like(dx)), grads

    def backward(self, grad_output: Array, grad_weights: Array | None = None, *,
                 input_grad: bool = True) -> tuple[Array, Array, Array] | None:
        """Fill parameter gradients; return ``(d_query, d_key, d_value)`` (None if not ``input_grad``).

        When one tensor was passed as query, key and value (self-attention), the projections ran as
        one GEMM and the whole input gradient is returned as ``d_query`` (``d_key``, ``d_value`` are
        zeros), so that the sum of the three is the gradient of that tensor either way.
        """
        fn, _, _ = self._pop_record()
        dx, grads = fn(grad_output, input_grad, grad_weights)
        self._accumulate(grads)
        return dx

    def _backward_self(self, grad_output: Array, *, input_grad: bool = True) -> Array | None:
        """Backward of self-attention (query is key is value): the summed input gradient."""
        fn, _, _ = self._pop_record()
        dx, grads = fn(grad_output, input_grad, None, True)
        self._accumulate(grads)
        return dx

    def _accumulate(self, grads: dict) -> None:
        for name, g in grads.items():
            self._parameters[name].accumulate_grad(g)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
