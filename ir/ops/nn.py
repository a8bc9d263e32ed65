"""Neural-network ops: convolution, pooling, normalizations, attention and rotary embedding."""

from __future__ import annotations

import math

from .. import symbolic
from ..dtypes import DType
from ..types import TensorType
from .common import axis, per_output_element, same_as_input
from .contraction import Contraction, Gemm, Operand
from .registry import InferContext, Pattern, numel, register


def _window_output(ctx: InferContext, spatial, kernel, *, ceil_mode: bool = False):
    """Spatial output dims of a sliding window (Conv, pools), honouring auto_pad and pads."""
    n = len(kernel)
    strides = ctx.attr("strides", [1] * n)
    dilations = ctx.attr("dilations", [1] * n)
    pads = ctx.attr("pads", [0] * (2 * n))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    out = []
    for i, d in enumerate(spatial):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(symbolic.ceildiv(d, strides[i]))
            continue
        begin, end = (0, 0) if auto_pad == "VALID" else (pads[i], pads[i + n])
        span = symbolic.sub(symbolic.add(d, begin + end), dilations[i] * (kernel[i] - 1) + 1)
        if symbolic.is_int(span) and span < 0:
            ctx.fail(f"window {kernel} does not fit input spatial dims {tuple(spatial)}")
        positions = (symbolic.ceildiv if ceil_mode else symbolic.floordiv)(span, strides[i])
        if ceil_mode and symbolic.is_int(positions) and positions * strides[i] >= symbolic.add(d, begin):
            positions -= 1  # the last window may not start in the end padding
        out.append(symbolic.add(positions, 1))
    return out


def _conv_flops(ctx: InferContext, outs: list[TensorType]) -> int:
    w = ctx.shape(1)
    macs_per_output = symbolic_product_int(w[1:])
    return 2 * numel(outs[0]) * macs_per_output + (numel(outs[0]) if ctx.has(2) else 0)


def symbolic_product_int(dims) -> int:
    total = 1
    for d in dims:
        total *= d if isinstance(d, int) else 0
    return total


def _conv_contractions(ctx: InferContext, outs: list[TensorType]) -> list[Contraction]:
    """im2col: each group multiplies (N*H'*W') x (C/g*kh*kw) patches by the (C/g*kh*kw) x
    (Cout/g) weights, which are W's rows of that group read transposed."""
    w, out = ctx.shape(1), outs[0].shape
    group = ctx.attr("group", 1)
    gemm = Gemm(group, out[0] * math.prod(out[2:]), w[0] // group, math.prod(w[1:]))
    return [Contraction(gemm, Operand(1, (group,), (gemm.n * gemm.k,), 1, gemm.k))]


@register("Conv", "conv", pattern=Pattern.CONTRACTION, flops=_conv_flops, contractions=_conv_contractions)
def _conv(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.shape(0), ctx.shape(1)
    if x is None or w is None:
        return [TensorType(ctx.dtype(0), None)]
    group = ctx.attr("group", 1)
    if symbolic.is_int(x[1]) and symbolic.is_int(w[1]) and x[1] != w[1] * group:
        ctx.fail(f"input has {x[1]} channels but the weight expects {w[1]} x group {group}")
    kernel = ctx.attr("kernel_shape", list(w[2:]))
    return [TensorType(ctx.dtype(0), (x[0], w[0], *_window_output(ctx, x[2:], kernel)))]


def _pool_flops(ctx: InferContext, outs: list[TensorType]) -> int:
    return numel(outs[0]) * symbolic_product_int(ctx.attr("kernel_shape", []))


@register(["MaxPool", "AveragePool", "LpPool"], "pool", pattern=Pattern.CONTRACTION, flops=_pool_flops)
def _pool(ctx: InferContext) -> list[TensorType]:
    x = ctx.shape(0)
    if x is None:
        return [TensorType(ctx.dtype(0), None)] * len(ctx.node.outputs)
    kernel = ctx.attr("kernel_shape")
    shape = (x[0], x[1], *_window_output(ctx, x[2:], kernel, ceil_mode=bool(ctx.attr("ceil_mode", 0))))
    out = [TensorType(ctx.dtype(0), shape)]
    if len(ctx.node.outputs) > 1:  # MaxPool indices
        out.append(TensorType(DType.INT64, shape))
    return out


@register(["GlobalAveragePool", "GlobalMaxPool"], "pool", pattern=Pattern.REDUCTION,
          flops=lambda ctx, outs: numel(ctx.type(0)))
def _global_pool(ctx: InferContext) -> list[TensorType]:
    x = ctx.shape(0)
    return [TensorType(ctx.dtype(0), None if x is None else (*x[:2], *([1] * (len(x) - 2))))]


@register("BatchNormalization", "norm", pattern=Pattern.BROADCAST, flops=per_output_element(4))
@register("InstanceNormalization", "norm", pattern=Pattern.REDUCTION, flops=per_output_element(4))
def _channel_norm(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx) + [ctx.type(1)] * (len(ctx.node.outputs) - 1)  # training-mode running stats


@register("LRN", "norm", pattern=Pattern.REDUCTION, flops=lambda ctx, outs: numel(outs[0]) * (ctx.attr("size", 1) + 4))
def _lrn(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


def _norm_stats(ctx: InferContext) -> list[TensorType]:
    """LayerNormalization's optional Mean and InvStdDev outputs: reduced over the norm axes."""
    x = ctx.shape(0)
    if x is None:
        return [TensorType(DType.FLOAT32, None)] * (len(ctx.node.outputs) - 1)
    a = axis(ctx, ctx.attr("axis", -1), len(x))
    stash = DType.from_onnx(ctx.attr("stash_type", 1))
    return [TensorType(stash, tuple(x[:a]) + (1,) * (len(x) - a))] * (len(ctx.node.outputs) - 1)


@register("LayerNormalization", "norm", pattern=Pattern.REDUCTION, flops=per_output_element(8))
def _layer_norm(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx) + _norm_stats(ctx)


@register("RMSNormalization", "norm", pattern=Pattern.REDUCTION, flops=per_output_element(4))
def _rms_norm(ctx: InferContext) -> list[TensorType]:
    x = ctx.shape(0)
    if x is not None:
        axis(ctx, ctx.attr("axis", -1), len(x))
    return same_as_input(ctx)


@register("GroupNormalization", "norm", pattern=Pattern.REDUCTION, flops=per_output_element(8))
def _group_norm(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


def _heads(ctx: InferContext, index: int, attr: str):
    """(batch, heads, seq, head_dim) of an Attention operand in its 3-D or 4-D layout."""
    s = ctx.shape(index)
    if s is None:
        return None
    if len(s) == 4:
        return s
    heads = ctx.attr(attr)
    if heads is None:
        ctx.fail(f"3-D attention inputs need the {attr} attribute")
    return (s[0], heads, s[1], symbolic.div(s[2], heads))


def _attention_flops(ctx: InferContext, outs: list[TensorType]) -> int:
    q, k, v = _heads(ctx, 0, "q_num_heads"), _heads(ctx, 1, "kv_num_heads"), _heads(ctx, 2, "kv_num_heads")
    dims = (*q[:3], k[2], q[3], v[3])
    if not all(isinstance(d, int) for d in dims):
        return 0
    b, h, sq, skv, d, dv = dims
    if ctx.has(4):  # past_key: total length includes the cache
        past = ctx.shape(4)[2]
        skv += past if isinstance(past, int) else 0
    scores = b * h * sq * skv
    return 2 * scores * d + 2 * scores * dv + 5 * scores


def _attention_contractions(ctx: InferContext, outs: list[TensorType]) -> list[Contraction]:
    """Scores Q·Kᵀ (sq x skv over d) and context P·V (sq x dv over skv), per batch and query
    head; K and V follow the past cache, so B is assembled inside the op."""
    (b, heads, sq, d), dv = _heads(ctx, 0, "q_num_heads"), _heads(ctx, 2, "kv_num_heads")[3]
    skv = _heads(ctx, 1, "kv_num_heads")[2] + (ctx.shape(4)[2] if ctx.has(4) else 0)
    return [Contraction(Gemm(b * heads, sq, skv, d)), Contraction(Gemm(b * heads, sq, dv, skv))]


@register("Attention", "attention", pattern=Pattern.OPAQUE, flops=_attention_flops, contractions=_attention_contractions)
def _attention(ctx: InferContext) -> list[TensorType]:
    """Scaled dot-product attention (ONNX opset 23), with grouped-query heads and a KV cache."""
    q, k, v = _heads(ctx, 0, "q_num_heads"), _heads(ctx, 1, "kv_num_heads"), _heads(ctx, 2, "kv_num_heads")
    if q is None or k is None or v is None:
        return [TensorType(ctx.dtype(0), None)] * len(ctx.node.outputs)
    if symbolic.is_int(q[1]) and symbolic.is_int(k[1]) and q[1] % k[1]:
        ctx.fail(f"{q[1]} query heads cannot be grouped over {k[1]} key/value heads")
    b, hq, sq, _ = q
    dv = v[3]
    y = (b, hq, sq, dv) if len(ctx.shape(0)) == 4 else (b, sq, symbolic.mul(hq, dv))
    outs = [TensorType(ctx.dtype(0), y)]
    total = k[2] if not ctx.has(4) else symbolic.add(ctx.shape(4)[2], k[2])
    extra = [TensorType(ctx.dtype(1), (b, k[1], total, k[3])), TensorType(ctx.dtype(2), (b, v[1], total, dv)),
             TensorType(ctx.dtype(0), (b, hq, sq, total))]
    return (outs + extra)[:len(ctx.node.outputs)]


@register("RotaryEmbedding", "elementwise", pattern=Pattern.INJECTIVE, flops=per_output_element(3))
def _rotary(ctx: InferContext) -> list[TensorType]:
    x = ctx.shape(0)
    if x is not None and len(x) not in (3, 4):
        ctx.fail(f"input must be 3-D or 4-D, got rank {len(x)}")
    return same_as_input(ctx)
