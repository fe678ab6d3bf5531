"""ONNX converters of MultiheadAttention and the Transformer layers and stacks (eval mode).

Attention is decomposed into MatMul/Softmax nodes (ONNX's Attention op needs opset 23), in the
batch-first layout ``(N, H, L, head_dim)``. A causal mask (``is_causal=True``, as
``examples/tiny_gpt.py`` uses) is built from the runtime sequence lengths with ``Trilu``, so the
batch size and the sequence length may both be dynamic axes. Explicit ``attn_mask`` /
``key_padding_mask`` arrays, ``add_bias_kv`` and ``add_zero_attn`` are refused with
:class:`UnsupportedLayerError`.
"""

from __future__ import annotations

import math
from typing import Any

from ..layers import (
    MultiheadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from .builder import GraphBuilder, UnsupportedLayerError, register_converter


def _refuse_masks(where: str, masks: dict[str, Any]) -> None:
    given = sorted(k for k, v in masks.items() if v is not None)
    if given:
        raise UnsupportedLayerError(f"nnx.onnx.export: {where} with {', '.join(given)} is not supported (only "
                                    "is_causal=True masks are exported); export a model that takes no mask")


def _project(g: GraphBuilder, x: str, weight: str, bias: str | None) -> str:
    y = g.node("MatMul", [x, g.node("Transpose", [weight], perm=[1, 0])])
    return g.node("Add", [y, bias]) if bias else y


def _in_projections(g: GraphBuilder, m: MultiheadAttention) -> tuple[list[str], list[str | None]]:
    e = m.embed_dim
    if m._qkv_same_embed_dim:
        weights = g.node("Split", [g.param(m, "in_proj_weight"), g.ints([e, e, e])], n_outputs=3, axis=0)
    else:
        weights = [g.param(m, n) for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
    biases: list[str | None] = [None, None, None]
    if m.in_proj_bias is not None:
        biases = g.node("Split", [g.param(m, "in_proj_bias"), g.ints([e, e, e])], n_outputs=3, axis=0)
    return weights, biases


def _reduce_mean(g: GraphBuilder, x: str, axis: int) -> str:
    if g.opset_version >= 18:  # axes became an input in opset 18
        return g.node("ReduceMean", [x, g.ints([axis], hint="axes")], keepdims=0)
    return g.node("ReduceMean", [x], axes=[axis], keepdims=0)


def _causal_bias(g: GraphBuilder, scores: str, like: str) -> str:
    """``-inf`` above the diagonal of the runtime ``(L, S)``, 0 elsewhere (nnx's ``is_causal``)."""
    if g.opset_version < 14:
        raise UnsupportedLayerError("nnx.onnx.export: a causal attention mask needs opset_version >= 14 (Trilu)")
    ls = g.node("Slice", [g.node("Shape", [scores]), g.ints([2]), g.ints([4])])
    fill = g.onnx.helper.make_tensor("value", g.elem_type(g.dtype_name(like)), [1], [-math.inf])
    full = g.node("ConstantOfShape", [ls], value=fill)
    g._dtypes[full] = g.dtype_name(like)
    return g.node("Trilu", [full, g.ints([1], hint="k")], upper=1)


def attention(g: GraphBuilder, m: MultiheadAttention, q: str, k: str, v: str, is_causal: bool,
              need_weights: bool, average: bool) -> tuple[str, str | None]:
    """The nodes of ``m(q, k, v)`` in eval mode; returns ``(output, weights or None)``."""
    if m.bias_k is not None or m.add_zero_attn:
        raise UnsupportedLayerError("nnx.onnx.export: MultiheadAttention with add_bias_kv or add_zero_attn is "
                                    "not supported")
    unbatched = g.rank(q) == 2
    if unbatched:  # (L, E) -> (L, 1, E), sequence first as nnx does
        axes = g.ints([1], hint="axes")
        q, k, v = (g.node("Unsqueeze", [t, axes]) for t in (q, k, v))
    if unbatched or not m.batch_first:  # -> (N, T, E)
        q, k, v = (g.node("Transpose", [t], perm=[1, 0, 2]) for t in (q, k, v))
    h, hd, e = m.num_heads, m.head_dim, m.embed_dim
    (wq, wk, wv), (bq, bk, bv) = _in_projections(g, m)
    heads = g.ints([0, 0, h, hd])
    qh = g.node("Transpose", [g.node("Reshape", [_project(g, q, wq, bq), heads])], perm=[0, 2, 1, 3])
    kt = g.node("Transpose", [g.node("Reshape", [_project(g, k, wk, bk), heads])], perm=[0, 2, 3, 1])
    vh = g.node("Transpose", [g.node("Reshape", [_project(g, v, wv, bv), heads])], perm=[0, 2, 1, 3])
    scores = g.node("MatMul", [g.node("Mul", [qh, g.const(1.0 / math.sqrt(hd), like=q)]), kt])  # (N, H, L, S)
    if is_causal:
        scores = g.node("Add", [scores, _causal_bias(g, scores, q)])
    probs = g.node("Softmax", [scores], axis=-1)
    o = g.node("Reshape", [g.node("Transpose", [g.node("MatMul", [probs, vh])], perm=[0, 2, 1, 3]),
                           g.ints([0, 0, e])])
    out_bias = g.param(m.out_proj, "bias") if m.out_proj.bias is not None else None
    out = _project(g, o, g.param(m.out_proj, "weight"), out_bias)
    if unbatched:
        out = g.node("Squeeze", [out, g.ints([0], hint="axes")])
    elif not m.batch_first:
        out = g.node("Transpose", [out], perm=[1, 0, 2])
    if not need_weights:
        return out, None
    weights = _reduce_mean(g, probs, 1) if average else probs
    if unbatched:
        weights = g.node("Squeeze", [weights, g.ints([0], hint="axes")])
    return out, weights


@register_converter(MultiheadAttention)
def multihead_attention(g: GraphBuilder, module: MultiheadAttention, inputs: list[str],
                        key_padding_mask: Any = None, need_weights: bool = True, attn_mask: Any = None,
                        average_attn_weights: bool = True, is_causal: bool = False) -> Any:
    """``(attn_output, attn_weights)`` of ``forward(query, key, value)`` (weights averaged over heads
    unless ``average_attn_weights=False``); ``is_causal=True`` is supported, explicit masks are not."""
    if len(inputs) != 3:
        raise UnsupportedLayerError(f"nnx.onnx.export: MultiheadAttention is exported with (query, key, value) "
                                    f"and no key_padding_mask; got {len(inputs)} inputs")
    _refuse_masks("MultiheadAttention", {"key_padding_mask": key_padding_mask, "attn_mask": attn_mask})
    out, weights = attention(g, module, *inputs, is_causal=is_causal and attn_mask is None,
                             need_weights=need_weights, average=average_attn_weights)
    return (out, weights) if weights is not None else (out, None)


def _sub(g: GraphBuilder, child: Any, x: str, like: str) -> str:
    """``child(x)`` for an intermediate value ``x`` of the same shape as ``like``."""
    if x not in g.values:
        g.placeholder(x, g.shape(like), like)
    return g.convert(child, [x])


def _feed_forward(g: GraphBuilder, m: Any, x: str, like: str) -> str:
    h = g.convert(m.activation, [_sub(g, m.linear1, x, like)])
    return g.convert(m.linear2, [h])


def _self_attention(g: GraphBuilder, m: Any, x: str, is_causal: bool) -> str:
    return attention(g, m.self_attn, x, x, x, is_causal, need_weights=False, average=True)[0]


@register_converter(TransformerEncoderLayer)
def encoder_layer(g: GraphBuilder, m: TransformerEncoderLayer, inputs: list[str], src_mask: Any = None,
                  src_key_padding_mask: Any = None, is_causal: bool = False) -> str:
    """Post-norm or pre-norm (``norm_first``) self-attention + feed-forward block."""
    if len(inputs) != 1:
        raise UnsupportedLayerError("nnx.onnx.export: TransformerEncoderLayer is exported with src only (no mask "
                                    f"arrays); got {len(inputs)} inputs")
    _refuse_masks("TransformerEncoderLayer", {"src_mask": src_mask, "src_key_padding_mask": src_key_padding_mask})
    x = src = inputs[0]
    causal = bool(is_causal) and src_mask is None
    if m.norm_first:
        x = g.node("Add", [x, _self_attention(g, m, _sub(g, m.norm1, x, src), causal)])
        return g.node("Add", [x, _feed_forward(g, m, _sub(g, m.norm2, x, src), src)])
    x = _sub(g, m.norm1, g.node("Add", [x, _self_attention(g, m, x, causal)]), src)
    return _sub(g, m.norm2, g.node("Add", [x, _feed_forward(g, m, x, src)]), src)


@register_converter(TransformerDecoderLayer)
def decoder_layer(g: GraphBuilder, m: TransformerDecoderLayer, inputs: list[str], tgt_mask: Any = None,
                  memory_mask: Any = None, tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                  tgt_is_causal: bool = False, memory_is_causal: bool = False) -> str:
    """Self-attention, cross-attention on ``memory`` and feed-forward (post- or pre-norm)."""
    if len(inputs) != 2:
        raise UnsupportedLayerError("nnx.onnx.export: TransformerDecoderLayer is exported with (tgt, memory) "
                                    f"only (no mask arrays); got {len(inputs)} inputs")
    _refuse_masks("TransformerDecoderLayer", {"tgt_mask": tgt_mask, "memory_mask": memory_mask,
                                              "tgt_key_padding_mask": tgt_key_padding_mask,
                                              "memory_key_padding_mask": memory_key_padding_mask})
    x = tgt = inputs[0]
    mem = inputs[1]

    def cross(y: str) -> str:
        return attention(g, m.multihead_attn, y, mem, mem, bool(memory_is_causal), need_weights=False,
                         average=True)[0]
    if m.norm_first:
        x = g.node("Add", [x, _self_attention(g, m, _sub(g, m.norm1, x, tgt), bool(tgt_is_causal))])
        x = g.node("Add", [x, cross(_sub(g, m.norm2, x, tgt))])
        return g.node("Add", [x, _feed_forward(g, m, _sub(g, m.norm3, x, tgt), tgt)])
    x = _sub(g, m.norm1, g.node("Add", [x, _self_attention(g, m, x, bool(tgt_is_causal))]), tgt)
    x = _sub(g, m.norm2, g.node("Add", [x, cross(x)]), tgt)
    return _sub(g, m.norm3, g.node("Add", [x, _feed_forward(g, m, x, tgt)]), tgt)


@register_converter(TransformerEncoder)
def encoder(g: GraphBuilder, m: TransformerEncoder, inputs: list[str], mask: Any = None,
            src_key_padding_mask: Any = None, is_causal: bool | None = None) -> str:
    """Each layer in turn (``is_causal`` passed on), then the optional final norm."""
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"nnx.onnx.export: TransformerEncoder is exported with src only; got "
                                    f"{len(inputs)} inputs")
    _refuse_masks("TransformerEncoder", {"mask": mask, "src_key_padding_mask": src_key_padding_mask})
    x = src = inputs[0]
    for layer in m.layers:
        if x not in g.values:
            g.placeholder(x, g.shape(src), src)
        x = g.convert(layer, [x], is_causal=bool(is_causal))
    return _sub(g, m.norm, x, src) if m.norm is not None else x


@register_converter(TransformerDecoder)
def decoder(g: GraphBuilder, m: TransformerDecoder, inputs: list[str], tgt_mask: Any = None,
            memory_mask: Any = None, tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
            tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> str:
    """Each layer on ``(x, memory)`` in turn, then the optional final norm."""
    if len(inputs) != 2:
        raise UnsupportedLayerError(f"nnx.onnx.export: TransformerDecoder is exported with (tgt, memory) only; "
                                    f"got {len(inputs)} inputs")
    _refuse_masks("TransformerDecoder", {"tgt_mask": tgt_mask, "memory_mask": memory_mask,
                                         "tgt_key_padding_mask": tgt_key_padding_mask,
                                         "memory_key_padding_mask": memory_key_padding_mask})
    x = tgt = inputs[0]
    for layer in m.layers:
        if x not in g.values:
            g.placeholder(x, g.shape(tgt), tgt)
        x = g.convert(layer, [x, inputs[1]], tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
    return _sub(g, m.norm, x, tgt) if m.norm is not None else x
