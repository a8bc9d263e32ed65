"""Normalizations: LayerNormalization, RMSNormalization, InstanceNormalization (row
statistics, then a normalizing write pass), BatchNormalization (pointwise at inference)
and LRN (a window sum over channels per element)."""

from __future__ import annotations

from llvmlite import ir as ll

from .elementwise import fconst
from .emit import CodegenError, row_extent
from .reduce import add, fold
from .rules import anchor, pointwise


def _row_norm(ctx, node, axis: int, center: bool, scale_at, bias_at, stats_outputs=()):
    """Normalize each row of the trailing axes from ``axis``: (x - mean?) / sqrt(var + eps)."""
    k, b = ctx.k, ctx.b
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    outer, inner_shape = shape[:axis], shape[axis:]
    axes = list(range(axis, len(shape)))
    n = 1
    for d in inner_shape:
        n *= d
    eps = node.attrs.get("epsilon", 1e-5)
    with k.parallel_rows(outer, inner=0) as idx:
        t = ll.FloatType()
        zero = ll.Constant(t, 0.0)
        mean = b.fdiv(fold(ctx, x, idx, axes, False, t, zero, lambda acc, v: add(ctx, acc, v)), fconst(zero, n)) \
            if center else zero
        var = b.fdiv(fold(ctx, x, idx, axes, False, t, zero,
                          lambda acc, v: add(ctx, acc, b.fmul(b.fsub(v, mean), b.fsub(v, mean)))), fconst(zero, n))
        inv = b.fdiv(fconst(zero, 1), k.intrinsic("llvm.sqrt", [b.fadd(var, fconst(zero, eps))]))
        for name, value in zip(stats_outputs, (mean, inv)):
            if name:
                ctx.write(name, idx + [k.i64(0)] * len(inner_shape), value)
        with k.nest(inner_shape, name="w") as inner:
            full = idx + inner
            y = b.fmul(b.fsub(ctx.read(x, full), mean), inv)
            y = b.fmul(y, scale_at(full)) if scale_at else y
            y = b.fadd(y, bias_at(full)) if bias_at else y
            ctx.write(out, full, y)
    return row_extent(outer, 0)


def _optional(ctx, node, i):
    name = node.inputs[i] if len(node.inputs) > i and node.inputs[i] else None
    return (lambda idx: ctx.read_bcast(name, idx)) if name else None


@anchor("LayerNormalization")
def layer_norm(ctx, node):
    axis = node.attrs.get("axis", -1) % len(ctx.shape(node.inputs[0]))
    return _row_norm(ctx, node, axis, True, _optional(ctx, node, 1), _optional(ctx, node, 2), node.outputs[1:])


@anchor("RMSNormalization")
def rms_norm(ctx, node):
    axis = node.attrs.get("axis", -1) % len(ctx.shape(node.inputs[0]))
    return _row_norm(ctx, node, axis, False, _optional(ctx, node, 1), None)


@anchor("InstanceNormalization")
def instance_norm(ctx, node):
    """Per (n, c) statistics over the spatial axes; scale and bias are per channel."""
    def per_channel(i):
        return lambda idx: ctx.read(node.inputs[i], [idx[1]])
    return _row_norm(ctx, node, 2, True, per_channel(1), per_channel(2))


@pointwise("BatchNormalization")
def batch_norm(ctx, node, idx):
    """Inference form: (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c]."""
    if node.attrs.get("training_mode", 0):
        raise CodegenError(f"{node.name}: training-mode BatchNormalization is not supported by CPU code generation")
    b, k = ctx.b, ctx.k
    x = ctx.read(node.inputs[0], idx)
    scale, bias, mean, var = (ctx.read(node.inputs[i], [idx[1]]) for i in (1, 2, 3, 4))
    inv = b.fdiv(scale, k.intrinsic("llvm.sqrt", [b.fadd(var, fconst(x, node.attrs.get("epsilon", 1e-5)))]))
    return b.fadd(b.fmul(b.fsub(x, mean), inv), bias)


@pointwise("LRN")
def lrn(ctx, node, idx):
    """x / (bias + alpha / size * sum of squares over a channel window) ** beta."""
    b, k = ctx.b, ctx.k
    x_name = node.inputs[0]
    channels = ctx.shape(x_name)[1]
    size = node.attrs["size"]
    lo_off, hi_off = (size - 1) // 2, size - 1 - (size - 1) // 2
    x = ctx.read(x_name, idx)
    acc = k.alloca(x.type, 1)
    b.store(fconst(x, 0), acc)
    lo = b.sub(idx[1], k.i64(lo_off))
    lo = b.select(b.icmp_signed("<", lo, k.i64(0)), k.i64(0), lo)
    hi = b.add(idx[1], k.i64(hi_off + 1))
    hi = b.select(b.icmp_signed(">", hi, k.i64(channels)), k.i64(channels), hi)
    with k.loop(lo, hi, name="lrn") as c:
        v = ctx.read(x_name, [idx[0], c, *idx[2:]])
        b.store(b.fadd(b.load(acc), b.fmul(v, v)), acc)
    alpha, beta, bias = node.attrs.get("alpha", 1e-4), node.attrs.get("beta", 0.75), node.attrs.get("bias", 1.0)
    base = b.fadd(fconst(x, bias), b.fmul(fconst(x, alpha / size), b.load(acc)))
    return b.fdiv(x, k.intrinsic("llvm.pow", [base, fconst(x, beta)]))
