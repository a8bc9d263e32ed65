"""Reductions, arg-reductions, the softmax family and global pooling.

Every output element (every row, for softmax) is one parallel iteration; the reduced axes
loop inside it. A reduction is a row of the ``REDUCTIONS`` table: its initial value, how an
element enters the accumulator, how it combines, and how the result is finished.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType

from . import vmath
from .elementwise import binary_op, fconst
from .emit import I64, compute_type, is_float, row_extent
from .rules import anchor

REASSOC = ("reassoc", "nsz")
"""Fast-math flags on accumulations so LLVM may vectorize them (sums are then reordered)."""


def add(ctx, acc, x, dtype=None):
    return ctx.b.fadd(acc, x, flags=REASSOC) if is_float(x.type) else ctx.b.add(acc, x)


def _mul(ctx, acc, x, dtype=None):
    return ctx.b.fmul(acc, x, flags=REASSOC) if is_float(x.type) else ctx.b.mul(acc, x)


def _abs(ctx, x):
    return ctx.k.intrinsic("llvm.fabs", [x]) if is_float(x.type) else \
        ctx.b.select(ctx.b.icmp_signed("<", x, ll.Constant(x.type, 0)), ctx.b.neg(x), x)


def _mean(ctx, acc, n):
    return ctx.b.fdiv(acc, fconst(acc, n)) if is_float(acc.type) else ctx.b.sdiv(acc, ll.Constant(acc.type, n))


REDUCTIONS = {
    # op: (initial value, enter(ctx, x) or None, combine(ctx, acc, x, dtype), finish(ctx, acc, count) or None)
    "ReduceSum": (0, None, add, None),
    "ReduceMean": (0, None, add, _mean),
    "ReduceMax": ("lowest", None, lambda ctx, acc, x, d: binary_op(ctx, "Max", acc, x, d, {}), None),
    "ReduceMin": ("highest", None, lambda ctx, acc, x, d: binary_op(ctx, "Min", acc, x, d, {}), None),
    "ReduceProd": (1, None, _mul, None),
    "ReduceL1": (0, _abs, add, None),
    "ReduceL2": (0, lambda ctx, x: _mul(ctx, x, x), add, lambda ctx, acc, n: ctx.k.intrinsic("llvm.sqrt", [acc])),
    "ReduceSumSquare": (0, lambda ctx, x: _mul(ctx, x, x), add, None),
    "ReduceLogSum": (0, None, add, lambda ctx, acc, n: vmath.log(ctx.k, acc)),
    "ReduceLogSumExp": (0, lambda ctx, x: vmath.exp(ctx.k, x), add,
                        lambda ctx, acc, n: vmath.log(ctx.k, acc)),
}


def initial(dtype: DType, spec) -> ll.Constant:
    """A reduction's starting value in ``dtype``'s compute type; "lowest"/"highest" are its range ends."""
    t = compute_type(dtype)
    if spec in ("lowest", "highest"):
        if is_float(t):
            return ll.Constant(t, -math.inf if spec == "lowest" else math.inf)
        if dtype is DType.BOOL:
            return ll.Constant(t, int(spec == "highest"))
        info = np.iinfo(dtype.numpy)
        return ll.Constant(t, int(info.min if spec == "lowest" else info.max))
    return ll.Constant(t, float(spec) if is_float(t) else int(spec))


def reduce_axes(ctx, node) -> list[int]:
    """Normalized reduced axes (empty for a no-op reduction)."""
    rank = len(ctx.shape(node.inputs[0]))
    axes = np.asarray(ctx.operand(node, 1, node.attrs.get("axes") or [])).reshape(-1).tolist()
    if not axes:
        return [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes)


def source_index(out_idx, rank, axes, keepdims, inner):
    """Input index from an output index (with or without kept dims) and the reduced-axis indices."""
    src, o, r = [], 0, iter(inner)
    for d in range(rank):
        if d in axes:
            src.append(next(r))
            o += keepdims
        else:
            src.append(out_idx[o])
            o += 1
    return src


def fold(ctx, x: str, out_idx, axes, keepdims, t, init, step):
    """Fold ``step(acc, element)`` over the reduced axes of ``x`` at one output position."""
    k, b = ctx.k, ctx.b
    shape = ctx.shape(x)
    acc = k.alloca(t, 1)
    b.store(init, acc)
    with k.nest([shape[a] for a in axes], name="r") as inner:
        b.store(step(b.load(acc), ctx.read(x, source_index(out_idx, len(shape), axes, keepdims, inner))), acc)
    return b.load(acc)


@anchor(*REDUCTIONS)
def reduce(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    dtype, shape, out_shape = ctx.dtype(x), ctx.shape(x), ctx.shape(out)
    axes = reduce_axes(ctx, node)
    init, enter, combine, finish = REDUCTIONS[node.op_type]
    t = compute_type(dtype)
    with ctx.k.parallel_rows(out_shape, inner=0) as idx:
        acc = fold(ctx, x, idx, axes, bool(node.attrs.get("keepdims", 1)), t, initial(dtype, init),
                   lambda acc, v: combine(ctx, acc, enter(ctx, v) if enter else v, dtype))
        if finish:
            acc = finish(ctx, acc, math.prod(shape[a] for a in axes))
        ctx.write(out, idx, acc)
    return row_extent(out_shape, 0)


@anchor("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    shape, dtype = ctx.shape(x), ctx.dtype(x)
    axes = list(range(2, len(shape)))
    t = compute_type(dtype)
    is_max = node.op_type == "GlobalMaxPool"
    with ctx.k.parallel_rows(ctx.shape(out), inner=0) as idx:
        acc = fold(ctx, x, idx, axes, True, t, initial(dtype, "lowest" if is_max else 0),
                   (lambda acc, v: binary_op(ctx, "Max", acc, v, dtype, {})) if is_max else (lambda acc, v: add(ctx, acc, v)))
        ctx.write(out, idx, acc if is_max else _mean(ctx, acc, math.prod(shape[2:])))
    return row_extent(ctx.shape(out), 0)


@anchor("ArgMax", "ArgMin")
def arg_reduce(ctx, node):
    k, b = ctx.k, ctx.b
    x, out = node.inputs[0], node.outputs[0]
    shape, dtype = ctx.shape(x), ctx.dtype(x)
    axis = node.attrs.get("axis", 0) % len(shape)
    better = ("Greater" if node.op_type == "ArgMax" else "Less") + \
        ("OrEqual" if node.attrs.get("select_last_index", 0) else "")
    keepdims = bool(node.attrs.get("keepdims", 1))
    with k.parallel_rows(ctx.shape(out), inner=0) as idx:
        where = k.alloca(I64, 1)
        b.store(k.i64(0), where)
        with k.loop(0, shape[axis], name="r") as r:
            at = lambda i: source_index(idx, len(shape), [axis], keepdims, [i])  # noqa: E731
            # the best value is read again at its index, not carried beside it: on a carried
            # (value, index) pair LLVM 22's loop vectorizer never returns when the row loop
            # around it reads the same input every row (a single row, or a broadcast input)
            wins = binary_op(ctx, better, ctx.read(x, at(r)), ctx.read(x, at(b.load(where))), dtype, {})
            b.store(b.select(wins, r, b.load(where)), where)
        ctx.write(out, idx, b.load(where))
    return row_extent(ctx.shape(out), 0)


@anchor("Softmax", "LogSoftmax")
def softmax(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axis = node.attrs.get("axis", -1) % len(shape)
    outer = [d for i, d in enumerate(shape) if i != axis]
    k, b = ctx.k, ctx.b
    with k.parallel_rows(outer, inner=0) as idx:
        at = lambda r: idx[:axis] + [r] + idx[axis:]  # noqa: E731
        t = compute_type(ctx.dtype(x))
        top = fold(ctx, x, idx, [axis], False, t, initial(ctx.dtype(x), "lowest"),
                   lambda acc, v: binary_op(ctx, "Max", acc, v, ctx.dtype(x), {}))
        total = fold(ctx, x, idx, [axis], False, t, initial(ctx.dtype(x), 0),
                     lambda acc, v: add(ctx, acc, vmath.exp(k, b.fsub(v, top))))
        log_total = vmath.log(k, total) if node.op_type == "LogSoftmax" else None
        with k.loop(0, shape[axis], name="w") as r:
            shifted = b.fsub(ctx.read(x, at(r)), top)
            y = b.fsub(shifted, log_total) if log_total is not None else \
                b.fdiv(vmath.exp(k, shifted), total)
            ctx.write(out, at(r), y)
    return row_extent(outer, 0)


@anchor("CumSum")
def cumsum(ctx, node):
    """Running sums along one axis: each row of that axis is one sequential loop."""
    k, b = ctx.k, ctx.b
    x, out = node.inputs[0], node.outputs[0]
    shape, dtype = ctx.shape(x), ctx.dtype(x)
    axis = int(ctx.operand(node, 1)) % len(shape)
    n = shape[axis]
    outer = [d for i, d in enumerate(shape) if i != axis]
    exclusive, reverse = node.attrs.get("exclusive", 0), node.attrs.get("reverse", 0)
    with k.parallel_rows(outer, inner=0) as idx:
        acc = k.alloca(compute_type(dtype), 1)
        b.store(initial(dtype, 0), acc)
        with k.loop(0, n, name="scan") as r:
            at = idx[:axis] + [b.sub(k.i64(n - 1), r) if reverse else r] + idx[axis:]
            before = b.load(acc)
            total = binary_op(ctx, "Add", before, ctx.read(x, at), dtype, {})
            b.store(total, acc)
            ctx.write(out, at, before if exclusive else total)
    return row_extent(outer, 0)
