"""N-D MaxPool (with optional argmax indices) and AveragePool: per output element, a window
loop that skips taps outside the input."""

from __future__ import annotations

import math

from llvmlite import ir as ll

from .conv import window
from .elementwise import binary_op
from .emit import F32, I64, compute_type, row_extent
from .reduce import initial
from .rules import anchor


def _padded_end(node, spatial, kernel, begin) -> list[int]:
    """Padding after each spatial axis (what count_include_pad counts as part of the window)."""
    n = len(kernel)
    if node.attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        strides = node.attrs.get("strides", [1] * n)
        dilations = node.attrs.get("dilations", [1] * n)
        return [max(0, (-(-d // s) - 1) * s + (k - 1) * dl + 1 - d) - p
                for d, k, s, dl, p in zip(spatial, kernel, strides, dilations, begin)]
    return node.attrs.get("pads", [0] * (2 * n))[n:] if node.attrs.get("auto_pad", "NOTSET") == "NOTSET" else [0] * n


def _flat_index(k, b, n, c, pos, xs, column_major: bool):
    """MaxPool's index output: the tap's offset in the input, spatial dims row- or column-major."""
    spatial = xs[2:]
    order = range(len(spatial)) if column_major else reversed(range(len(spatial)))
    flat, step = k.i64(0), 1
    for i in order:
        flat = b.add(flat, b.mul(pos[i], k.i64(step)))
        step *= spatial[i]
    plane = math.prod(spatial)
    return b.add(flat, b.mul(b.add(b.mul(n, k.i64(xs[1])), c), k.i64(plane)))


@anchor("MaxPool", "AveragePool")
def pool(ctx, node):
    k, b = ctx.k, ctx.b
    x, out = node.inputs[0], node.outputs[0]
    indices = node.outputs[1] if len(node.outputs) > 1 else ""
    xs, ys, dtype = ctx.shape(x), ctx.shape(out), ctx.dtype(x)
    kernel = node.attrs["kernel_shape"]
    strides, dilations, begin = window(node, xs[2:], kernel)
    padded = [d + p + e for d, p, e in zip(xs[2:], begin, _padded_end(node, xs[2:], kernel, begin))]
    is_max = node.op_type == "MaxPool"
    include_pad = node.attrs.get("count_include_pad", 0)
    acc, count, where = k.alloca(compute_type(dtype), 1), k.alloca(F32, 1), k.alloca(I64, 1)
    one = ll.Constant(F32, 1.0)
    with k.parallel_rows(ys) as (n, c, *outs):
        b.store(initial(dtype, "lowest" if is_max else 0), acc)
        b.store(ll.Constant(F32, 0.0), count)
        b.store(k.i64(0), where)
        with k.nest(kernel, name="w") as taps:
            reach = [b.add(b.mul(o, k.i64(s)), b.mul(t, k.i64(d))) for o, t, s, d in zip(outs, taps, strides, dilations)]
            pos = [b.sub(r, k.i64(p)) for r, p in zip(reach, begin)]
            inside = ll.Constant(ll.IntType(1), 1)
            for p, size in zip(pos, xs[2:]):
                inside = b.and_(inside, b.icmp_unsigned("<", p, k.i64(size)))
            if include_pad and not is_max:
                counted = ll.Constant(ll.IntType(1), 1)
                for r, size in zip(reach, padded):
                    counted = b.and_(counted, b.icmp_signed("<", r, k.i64(size)))
                b.store(b.fadd(b.load(count), b.uitofp(counted, F32)), count)
            with b.if_then(inside):
                v = ctx.read(x, [n, c, *pos])
                if is_max:
                    wins = binary_op(ctx, "Greater", v, b.load(acc), dtype, {})
                    b.store(b.select(wins, v, b.load(acc)), acc)
                    if indices:
                        flat = _flat_index(k, b, n, c, pos, xs, node.attrs.get("storage_order", 0) == 1)
                        b.store(b.select(wins, flat, b.load(where)), where)
                else:
                    b.store(b.fadd(b.load(acc), v), acc)
                    if not include_pad:
                        b.store(b.fadd(b.load(count), one), count)
        result = b.load(acc) if is_max else b.fdiv(b.load(acc), b.load(count))
        ctx.write(out, [n, c, *outs], result)
        if indices:
            ctx.write(indices, [n, c, *outs], b.load(where))
    return row_extent(ys)
