"""Composite ops: xpuc.SiLU and xpuc.SwiGLU (elementwise) and ONNX RotaryEmbedding.

FusedMatMul lives with the other products in :mod:`matmul`; Attention in :mod:`attention`.
"""

from __future__ import annotations

from .elementwise import FLOAT_UNARY
from .rules import pointwise


def silu(ctx, x):
    return ctx.b.fmul(x, FLOAT_UNARY["Sigmoid"](ctx.k, x, {}))


@pointwise("SiLU", domain="xpuc")
def silu_op(ctx, node, idx):
    return silu(ctx, ctx.read(node.inputs[0], idx))


@pointwise("SwiGLU", domain="xpuc")
def swiglu(ctx, node, idx):
    return ctx.b.fmul(silu(ctx, ctx.read_bcast(node.inputs[0], idx)), ctx.read_bcast(node.inputs[1], idx))


@pointwise("RotaryEmbedding")
def rotary(ctx, node, idx):
    """x[d] * cos[pos, i] -/+ x[partner] * sin[pos, i] on the rotated part of each head.

    Non-interleaved: d pairs with d +/- rot/2; interleaved: 2i pairs with 2i+1. Dims past
    ``rotary_embedding_dim`` pass through. For 3-D input the head dim is the hidden index
    modulo the head size.
    """
    b, k = ctx.b, ctx.k
    x_name, cos_name, sin_name = node.inputs[:3]
    pos_name = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
    shape = ctx.shape(x_name)
    half = ctx.shape(cos_name)[-1]
    head = shape[-1] if len(shape) == 4 else shape[-1] // node.attrs["num_heads"]
    rot = node.attrs.get("rotary_embedding_dim", 0) or head
    batch, seq = idx[0], (idx[2] if len(shape) == 4 else idx[1])
    d = b.urem(idx[-1], k.i64(head))
    if node.attrs.get("interleaved", 0):
        i = b.udiv(d, k.i64(2))
        second = b.icmp_unsigned("==", b.urem(d, k.i64(2)), k.i64(1))
        step = 1
    else:
        second = b.icmp_unsigned(">=", d, k.i64(half))
        i = b.select(second, b.sub(d, k.i64(half)), d)
        step = half
    rotated = b.icmp_unsigned("<", d, k.i64(rot))
    i = b.select(rotated, i, k.i64(0))
    delta = b.select(rotated, b.select(second, k.i64(-step), k.i64(step)), k.i64(0))
    x = ctx.read(x_name, idx)
    partner = ctx.read(x_name, idx[:-1] + [b.add(idx[-1], delta)])
    if pos_name:
        pos = ctx.read(pos_name, [batch, seq])
        pos = b.sext(pos, k.i64(0).type) if pos.type.width < 64 else pos
        cache_idx = [pos, i]
    else:
        cache_idx = [batch, seq, i]
    cos, sin = ctx.read(cos_name, cache_idx), ctx.read(sin_name, cache_idx)
    signed = b.select(second, partner, b.fneg(partner))
    y = b.fadd(b.fmul(x, cos), b.fmul(signed, sin))
    return b.select(rotated, y, x)
