"""Data movement: index-remapping pointwise ops; Concat, Split, ScatterND and Dropout as copy
kernels (Concat and Split parallel over rows); Shape and Size as compile-time constants.

An index-remapping op reads its input at an index computed from the output's (Transpose
permutes it, Slice scales and shifts it, Gather looks it up), so it fuses into whatever
loop evaluates it and costs no memory traffic of its own.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType
from ir.ops.movement import constant_value

from .elementwise import binary_op, convert
from .emit import I64, CodegenError, compute_type
from .rules import anchor, pointwise, static


def _norm_axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


@pointwise("Transpose")
def transpose(ctx, node, idx):
    rank = len(idx)
    perm = node.attrs.get("perm", list(range(rank))[::-1])
    src = [None] * rank
    for out_axis, in_axis in enumerate(perm):
        src[_norm_axis(in_axis, rank)] = idx[out_axis]
    return ctx.read(node.inputs[0], src)


@pointwise("Expand")
def expand(ctx, node, idx):
    return ctx.read_bcast(node.inputs[0], idx)


def slice_params(ctx, node):
    """(start, step) per input axis with onnx clamping rules, from the constant inputs."""
    shape = ctx.shape(node.inputs[0])
    starts, ends = (ctx.operand(node, i).tolist() for i in (1, 2))
    axes = np.asarray(ctx.operand(node, 3, range(len(starts)))).tolist()
    steps = np.asarray(ctx.operand(node, 4, [1] * len(starts))).tolist()
    params = [(0, 1)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _norm_axis(a, len(shape))
        params[a] = (slice(s, e, st).indices(shape[a])[0], st)
    return params


@pointwise("Slice")
def slice_(ctx, node, idx):
    b, k = ctx.b, ctx.k
    src = [i if (start, step) == (0, 1) else b.add(k.i64(start), b.mul(i, k.i64(step)))
           for i, (start, step) in zip(idx, slice_params(ctx, node))]
    return ctx.read(node.inputs[0], src)


def clamp_index(ctx, i: ll.Value, size: int) -> ll.Value:
    """A data-dependent index made safe: negatives count from the end, then clamp to [0, size)."""
    b, k = ctx.b, ctx.k
    i = b.select(b.icmp_signed("<", i, k.i64(0)), b.add(i, k.i64(size)), i)
    i = b.select(b.icmp_signed("<", i, k.i64(0)), k.i64(0), i)
    return b.select(b.icmp_signed(">=", i, k.i64(size)), k.i64(size - 1), i)


def as_index(ctx, v: ll.Value) -> ll.Value:
    return ctx.b.sext(v, I64) if v.type.width < 64 else v


@pointwise("Gather")
def gather(ctx, node, idx):
    data, indices = node.inputs[:2]
    shape = ctx.shape(data)
    a = _norm_axis(node.attrs.get("axis", 0), len(shape))
    r = len(ctx.shape(indices))
    which = clamp_index(ctx, as_index(ctx, ctx.read(indices, idx[a:a + r])), shape[a])
    return ctx.read(data, idx[:a] + [which] + idx[a + r:])


@pointwise("GatherElements")
def gather_elements(ctx, node, idx):
    data, indices = node.inputs[:2]
    shape = ctx.shape(data)
    a = _norm_axis(node.attrs.get("axis", 0), len(shape))
    which = clamp_index(ctx, as_index(ctx, ctx.read(indices, idx)), shape[a])
    return ctx.read(data, idx[:a] + [which] + idx[a + 1:])


@pointwise("Trilu")
def trilu(ctx, node, idx):
    b, k = ctx.b, ctx.k
    x = ctx.read(node.inputs[0], idx)
    diag = int(ctx.operand(node, 1, 0))
    row, col = idx[-2], idx[-1]
    shifted = b.add(row, k.i64(diag))
    keep = b.icmp_signed(">=", col, shifted) if node.attrs.get("upper", 1) else b.icmp_signed("<=", col, shifted)
    return b.select(keep, x, ll.Constant(x.type, None))


@pointwise("Tile")
def tile(ctx, node, idx):
    shape = ctx.shape(node.inputs[0])
    return ctx.read(node.inputs[0], [ctx.b.urem(i, ctx.k.i64(d)) if d != 1 else ctx.k.i64(0)
                                     for i, d in zip(idx, shape)])


@pointwise("Pad")
def pad(ctx, node, idx):
    """Constant, edge, wrap and reflect padding: out-of-range source indices are remapped or masked."""
    b, k = ctx.b, ctx.k
    shape = ctx.shape(node.inputs[0])
    pads = ctx.operand(node, 1).tolist()
    axes = np.asarray(ctx.operand(node, 3, range(len(shape)))).tolist()
    begin = [0] * len(shape)
    for n, a in enumerate(axes):
        begin[_norm_axis(a, len(shape))] = pads[n]
    mode = node.attrs.get("mode", "constant")
    inside, src = ll.Constant(ll.IntType(1), 1), []
    for i, d, p in zip(idx, shape, begin):
        j = b.sub(i, k.i64(p))
        if mode == "constant":
            inside = b.and_(inside, b.icmp_unsigned("<", j, k.i64(d)))
            j = clamp_index(ctx, j, d)
        elif mode == "edge":
            j = clamp_index(ctx, b.select(b.icmp_signed("<", j, k.i64(0)), k.i64(0), j), d)
        elif mode == "wrap":
            r = b.srem(j, k.i64(d))
            j = b.select(b.icmp_signed("<", r, k.i64(0)), b.add(r, k.i64(d)), r)
        else:  # reflect
            j = b.select(b.icmp_signed("<", j, k.i64(0)), b.neg(j), j)
            j = b.select(b.icmp_signed(">=", j, k.i64(d)), b.sub(k.i64(2 * d - 2), j), j)
            j = clamp_index(ctx, j, d)
        src.append(j)
    x = ctx.read(node.inputs[0], src)
    if mode != "constant":
        return x
    fill = ctx.read(node.inputs[2], []) if len(node.inputs) > 2 and node.inputs[2] else ll.Constant(x.type, None)
    return b.select(inside, x, fill)


def _by_pieces(ctx, shape, axis: int, pieces, copy) -> int:
    """A copy kernel over ``shape`` cut along ``axis`` into ``pieces`` (name, offset, size),
    parallel over its leading dims: up to and including ``axis`` (each row then lies in one
    piece and copies a contiguous run of the dims after it) or, when ``axis`` is the last
    dim, the dims before it (each row copies one run per piece). ``copy(name, whole_index,
    piece_index)`` moves one element. Returns the parallel extent."""
    k, b = ctx.k, ctx.b
    lead = axis + 1 if axis < len(shape) - 1 else axis
    with k.loop(k.begin, k.end, name="row") as row:
        idx = k.delinearize(row, shape[:lead])
        for name, offset, size in pieces:
            if axis < lead:
                at = idx[axis]
                inside = b.and_(b.icmp_signed(">=", at, k.i64(offset)), b.icmp_signed("<", at, k.i64(offset + size)))
                with b.if_then(inside), k.nest(shape[lead:], name="c") as rest:
                    copy(name, idx + rest, idx[:axis] + [b.sub(at, k.i64(offset))] + rest)
            else:
                with k.loop(0, size, name="c") as c:
                    copy(name, idx + [b.add(c, k.i64(offset))], idx + [c])
    return math.prod(shape[:lead])


def _pieces(ctx, names, axis: int):
    pieces, offset = [], 0
    for name in names:
        if name:
            pieces.append((name, offset, ctx.shape(name)[axis]))
            offset += ctx.shape(name)[axis]
    return pieces


@anchor("Concat")
def concat(ctx, node):
    out = node.outputs[0]
    shape = ctx.shape(out)
    axis = _norm_axis(node.attrs["axis"], len(shape))
    return _by_pieces(ctx, shape, axis, _pieces(ctx, node.inputs, axis),
                      lambda name, whole, part: ctx.write(out, whole, ctx.read(name, part)))


@anchor("Split")
def split(ctx, node):
    src = node.inputs[0]
    shape = ctx.shape(src)
    axis = _norm_axis(node.attrs.get("axis", 0), len(shape))
    return _by_pieces(ctx, shape, axis, _pieces(ctx, node.outputs, axis),
                      lambda name, whole, part: ctx.write(name, part, ctx.read(src, whole)))


@pointwise("Concat")
def concat_element(ctx, node, idx):
    """One element of a Concat computed in its reader's loop: a branch per input, so only the
    input whose slab along the axis holds the index is read (and computed, when inlined)."""
    out = node.outputs[0]
    axis = _norm_axis(node.attrs["axis"], len(ctx.shape(out)))
    parts, offset = [], 0
    for name in node.inputs:
        if name and ctx.shape(name)[axis]:
            parts.append((name, offset))
            offset += ctx.shape(name)[axis]
    slot = ctx.k.alloca(compute_type(ctx.dtype(out)), 1)

    def choose(parts):
        (name, start), rest = parts[0], parts[1:]
        shifted = idx[:axis] + [ctx.b.sub(idx[axis], ctx.k.i64(start))] + idx[axis + 1:]
        if not rest:
            ctx.b.store(ctx.read(name, shifted), slot)
            return
        with ctx.b.if_else(ctx.b.icmp_signed("<", idx[axis], ctx.k.i64(rest[0][1]))) as (inside, after):
            with inside:
                ctx.b.store(ctx.read(name, shifted), slot)
            with after:
                choose(rest)

    choose(parts)
    return ctx.b.load(slot)


@pointwise("Split")
def split_first(ctx, node, idx):
    """Output 0 of a Split (the slab at the start of the axis), for a Split with that output only."""
    return ctx.read(node.inputs[0], idx)


@pointwise("ConstantOfShape")
def constant_of_shape(ctx, node, idx):
    value = node.attrs.get("value")
    fill = 0 if value is None else np.asarray(value).reshape(-1)[0].item()
    return ctx.k.const(compute_type(ctx.dtype(node.outputs[0])), fill)


@pointwise("Range")
def range_(ctx, node, idx):
    dtype = ctx.dtype(node.outputs[0])
    start, delta = ctx.read(node.inputs[0], []), ctx.read(node.inputs[2], [])
    step = binary_op(ctx, "Mul", convert(ctx, idx[0], DType.INT64, dtype), delta, dtype, {})
    return binary_op(ctx, "Add", start, step, dtype, {})


@static("Dropout")
def dropout_mask(graph, node):
    """Inference Dropout that survived simplification (its mask is read) is a view of its input
    and an all-true mask. Training mode with a nonzero ratio draws random numbers, which
    compiled code does not."""
    ratio, training = (graph.const_data(node.inputs[i]) if len(node.inputs) > i and node.inputs[i] else None
                       for i in (1, 2))
    for i, data in ((1, ratio), (2, training)):
        if data is None and len(node.inputs) > i and node.inputs[i]:
            raise CodegenError(f"{node.name}: input {i} ({node.inputs[i]!r}) of Dropout must be a constant "
                               "for CPU code generation")
    if training is not None and bool(training) and (ratio is None or float(ratio) > 0):
        raise CodegenError(f"{node.name}: training-mode Dropout is random and not supported by CPU code generation")
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    return [None, np.ones(graph.type_of(mask).shape, bool) if mask else None]


@static("Constant")
def constant(graph, node):
    return [constant_value(node.attrs)]


@static("Shape")
def shape_of(graph, node):
    shape = graph.type_of(node.inputs[0]).shape
    return [np.array(shape[node.attrs.get("start", 0):node.attrs.get("end", len(shape))], np.int64)]


@static("Size")
def size_of(graph, node):
    return [np.array(math.prod(graph.type_of(node.inputs[0]).shape), np.int64)]


def _nd_lookup(ctx, indices: str, prefix, data_shape, batch: int) -> list:
    """The data index a GatherND/ScatterND index row names: ``indices[prefix, j]`` for each
    of its k entries, each made safe like any data-dependent index."""
    k = ctx.shape(indices)[-1]
    return [clamp_index(ctx, as_index(ctx, ctx.read(indices, prefix + [ctx.k.i64(j)])), data_shape[batch + j])
            for j in range(k)]


@anchor("TensorScatter")
def tensor_scatter(ctx, node):
    """One parallel iteration per cache row (the dims before ``axis``): a copy of the row
    unless the output shares the cache's buffer (``Lowered.aliases``: a cache updated in
    place), then the update's positions written from the row's write index."""
    k, b = ctx.k, ctx.b
    cache, update = node.inputs[:2]
    indices = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    out, shape = node.outputs[0], ctx.shape(cache)
    a = _norm_axis(node.attrs.get("axis", -2), len(shape))
    length, steps = shape[a], ctx.shape(update)[a]
    circular = node.attrs.get("mode", "linear") == "circular"
    with k.loop(k.begin, k.end, name="row") as row:
        prefix = k.delinearize(row, shape[:a])
        if ctx.lowering.aliases.get(out) != cache:
            with k.nest(shape[a:], name="c") as rest:
                ctx.write(out, prefix + rest, ctx.read(cache, prefix + rest))
        start = as_index(ctx, ctx.read(indices, prefix[:1])) if indices else k.i64(0)
        with k.loop(0, steps, name="s") as step:
            at = b.add(start, step)
            at = b.urem(at, k.i64(length)) if circular else clamp_index(ctx, at, length)
            with k.nest(shape[a + 1:], name="u") as rest:
                ctx.write(out, prefix + [at] + rest, ctx.read(update, prefix + [step] + rest))
    return math.prod(shape[:a])


@pointwise("GatherND")
def gather_nd(ctx, node, idx):
    data, indices = node.inputs[:2]
    batch = node.attrs.get("batch_dims", 0)
    prefix = idx[:len(ctx.shape(indices)) - 1]
    target = _nd_lookup(ctx, indices, prefix, ctx.shape(data), batch)
    return ctx.read(data, idx[:batch] + target + idx[len(prefix):])


@anchor("ScatterND")
def scatter_nd(ctx, node):
    """A copy of data, then each update row applied in order (later rows win, as in the reference)."""
    k = ctx.k
    data, indices, updates = node.inputs[:3]
    out, shape, dtype = node.outputs[0], ctx.shape(data), ctx.dtype(data)
    rows = ctx.shape(indices)[:-1]
    reduction = node.attrs.get("reduction", "none")
    combine = {"add": "Add", "mul": "Mul", "max": "Max", "min": "Min"}.get(reduction)
    with k.loop(k.begin, k.end, name="once"):
        with k.nest(shape, name="c") as idx:
            ctx.write(out, idx, ctx.read(data, idx))
        with k.nest(rows, name="u") as row:
            target = _nd_lookup(ctx, indices, row, shape, 0)
            with k.nest(shape[len(target):], name="s") as rest:
                at, value = target + rest, ctx.read(updates, row + rest)
                if combine:
                    value = binary_op(ctx, combine, ctx.k.load(ctx.buffer(out), at), value, dtype, {})
                ctx.write(out, at, value)
    return 1

