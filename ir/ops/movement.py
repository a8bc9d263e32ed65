"""Data-movement and shape ops: they move or index elements and compute shapes.

Most also *propagate* values symbolically so shape arithmetic (Shape -> Gather -> Concat ->
Reshape) yields exact shapes before any input shape is bound.
"""

from __future__ import annotations

import numpy as np

from .. import symbolic
from ..dtypes import DType
from ..types import Dim, TensorType
from .common import axis, broadcast, per_output_element, same_as_input
from .registry import InferContext, Pattern, register

_NO_FLOPS = per_output_element(0)


def _passthrough(ctx: InferContext) -> list[np.ndarray | None]:
    return [ctx.value(0)] + [None] * (len(ctx.node.outputs) - 1)


# ------------------------------------------------------------------ shape ops
def _shape_slice(ctx: InferContext, rank: int) -> tuple[int, int]:
    start, end = ctx.attr("start", 0), ctx.attr("end", rank)
    return max(0, min(rank, start + rank if start < 0 else start)), max(0, min(rank, end + rank if end < 0 else end))


def _shape_value(ctx: InferContext) -> list[np.ndarray | None]:
    shape = ctx.shape(0)
    if shape is None:
        return [None]
    start, end = _shape_slice(ctx, len(shape))
    return [symbolic.sym_array(shape[start:end])]


@register("Shape", "shape", pattern=Pattern.SHAPE, propagate=_shape_value, flops=_NO_FLOPS)
def _shape(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if shape is None:
        return [TensorType(DType.INT64, (symbolic.fresh(ctx.node.name, "rank"),))]
    start, end = _shape_slice(ctx, len(shape))
    return [TensorType(DType.INT64, (max(0, end - start),))]


@register("Size", "shape", pattern=Pattern.SHAPE, propagate=lambda ctx: [None if ctx.shape(0) is None else
                                                  np.array(symbolic.product(ctx.shape(0)), dtype=object)],
          flops=_NO_FLOPS)
def _size(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.INT64, ())]


@register("Identity", "movement", pattern=Pattern.VIEW, propagate=_passthrough, flops=_NO_FLOPS)
@register("Dropout", "movement", pattern=Pattern.VIEW, propagate=_passthrough, flops=_NO_FLOPS, shape_operands=(1, 2))
def _identity(ctx: InferContext) -> list[TensorType]:
    out = [ctx.type(0)]
    if len(ctx.node.outputs) > 1:  # Dropout's mask
        out.append(TensorType(DType.BOOL, ctx.shape(0)))
    return out


@register("Constant", "shape", pattern=Pattern.SHAPE, flops=_NO_FLOPS)
def _constant(ctx: InferContext) -> list[TensorType]:
    value = constant_value(ctx.node.attrs)
    return [TensorType(DType.from_numpy(value.dtype), tuple(value.shape))]


def constant_value(attrs: dict) -> np.ndarray:
    """The tensor a Constant node holds, whichever attribute spells it."""
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64), ("value_string", object),
                       ("value_strings", object)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise ValueError("Constant node has no value attribute (sparse constants are not supported)")


# ---------------------------------------------------------------- reshaping
def _reshape_target(ctx: InferContext) -> list[Dim] | None:
    """The output shape: 0 copies the input dim (unless allowzero), -1 takes what is left."""
    target = ctx.value(1)
    if target is None:
        return None
    in_shape = ctx.shape(0)
    dims: list[Dim] = [symbolic.canonical(d) for d in target.reshape(-1)]
    if not ctx.attr("allowzero", 0):
        for i, d in enumerate(dims):
            if d == 0:
                if in_shape is None or i >= len(in_shape):
                    return None
                dims[i] = in_shape[i]
    if dims.count(-1) > 1:
        ctx.fail(f"the target shape {dims} has more than one -1")
    if -1 in dims:
        rest = dims.index(-1)
        if in_shape is None:
            dims[rest] = symbolic.fresh(ctx.node.name, f"d{rest}")
        else:
            dims[rest] = symbolic.floordiv(symbolic.product(in_shape), symbolic.product(d for d in dims if d != -1))
    return dims


def _reshape_value(ctx: InferContext) -> list[np.ndarray | None]:
    data, dims = ctx.value(0), _reshape_target(ctx)
    if data is None or dims is None or not all(map(symbolic.is_int, dims)):
        return [None]
    return [data.reshape(dims)]


@register("Reshape", "movement", pattern=Pattern.VIEW, propagate=_reshape_value, flops=_NO_FLOPS, shape_operands=(1,))
def _reshape(ctx: InferContext) -> list[TensorType]:
    dims = _reshape_target(ctx)
    if dims is None:
        rank = ctx.shape(1)
        return [TensorType(ctx.dtype(0), tuple(symbolic.fresh(ctx.node.name, f"d{i}") for i in range(rank[0]))
                           if rank and symbolic.is_int(rank[0]) else None)]
    in_shape = ctx.shape(0)
    out = tuple(dims)
    if in_shape is not None and symbolic.is_int(symbolic.product(in_shape)) \
            and symbolic.is_int(symbolic.product(out)) and symbolic.product(in_shape) != symbolic.product(out):
        ctx.fail(f"cannot reshape {tuple(in_shape)} into {out}")
    return [TensorType(ctx.dtype(0), out)]


@register("Flatten", "movement", pattern=Pattern.VIEW, flops=_NO_FLOPS)
def _flatten(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if shape is None:
        return [TensorType(ctx.dtype(0), None)]
    a = ctx.attr("axis", 1)
    if not -len(shape) <= a <= len(shape):
        ctx.fail(f"axis {a} is out of range for rank {len(shape)}")
    a += len(shape) if a < 0 else 0
    return [TensorType(ctx.dtype(0), (symbolic.product(shape[:a]), symbolic.product(shape[a:])))]


def _axes_input(ctx: InferContext, index: int) -> list[int] | None:
    """Axes given as an input (opset >= 13) or, for older graphs, as an attribute."""
    if ctx.has(index):
        return ctx.ints(index)
    return ctx.attr("axes")


def _squeeze_axes(ctx: InferContext) -> list[int] | None:
    shape = ctx.shape(0)
    axes = _axes_input(ctx, 1)
    if axes is None:  # all size-1 axes, unless an axes input exists whose contents are unknown
        return None if shape is None or ctx.has(1) else [i for i, d in enumerate(shape) if d == 1]
    return sorted(axis(ctx, a, len(shape)) for a in axes) if shape is not None else None


@register("Squeeze", "movement", pattern=Pattern.VIEW, shape_operands=(1,), flops=_NO_FLOPS,
          propagate=lambda ctx: [None if ctx.value(0) is None or _squeeze_axes(ctx) is None
                                 else ctx.value(0).reshape(_squeezed(ctx))])
def _squeeze(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if shape is None or _squeeze_axes(ctx) is None:
        return [TensorType(ctx.dtype(0), None)]
    return [TensorType(ctx.dtype(0), tuple(_squeezed(ctx)))]


def _squeezed(ctx: InferContext) -> list[Dim]:
    shape, axes = ctx.shape(0), _squeeze_axes(ctx)
    for a in axes:
        if symbolic.is_int(shape[a]) and shape[a] != 1:
            ctx.fail(f"cannot squeeze axis {a} of size {shape[a]}")
    return [d for i, d in enumerate(shape) if i not in axes]


def _unsqueezed(ctx: InferContext) -> list[Dim] | None:
    shape, axes = ctx.shape(0), _axes_input(ctx, 1)
    if shape is None or axes is None:
        return None
    rank = len(shape) + len(axes)
    axes = sorted(axis(ctx, a, rank) for a in axes)
    dims, rest = [], iter(shape)
    for i in range(rank):
        dims.append(1 if i in axes else next(rest))
    return dims


@register("Unsqueeze", "movement", pattern=Pattern.VIEW, shape_operands=(1,), flops=_NO_FLOPS,
          propagate=lambda ctx: [None if ctx.value(0) is None or _unsqueezed(ctx) is None
                                 else ctx.value(0).reshape(_unsqueezed(ctx))])
def _unsqueeze(ctx: InferContext) -> list[TensorType]:
    dims = _unsqueezed(ctx)
    return [TensorType(ctx.dtype(0), None if dims is None else tuple(dims))]


def _perm(ctx: InferContext) -> list[int] | None:
    shape = ctx.shape(0)
    if shape is None:
        return None
    return [axis(ctx, p, len(shape)) for p in ctx.attr("perm", list(range(len(shape)))[::-1])]


@register("Transpose", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS,
          propagate=lambda ctx: [None if ctx.value(0) is None else np.transpose(ctx.value(0), _perm(ctx))])
def _transpose(ctx: InferContext) -> list[TensorType]:
    perm, shape = _perm(ctx), ctx.shape(0)
    if perm is None:
        return [TensorType(ctx.dtype(0), None)]
    if sorted(perm) != list(range(len(shape))):
        ctx.fail(f"perm {perm} is not a permutation of rank {len(shape)}")
    return [TensorType(ctx.dtype(0), tuple(shape[p] for p in perm))]


def _concat_value(ctx: InferContext) -> list[np.ndarray | None]:
    parts = [ctx.value(i) for i in range(len(ctx.types)) if ctx.has(i)]
    if any(p is None for p in parts) or all(p.dtype != object for p in parts):
        return [None]
    return [np.concatenate([np.asarray(p, dtype=object) for p in parts], axis=ctx.attr("axis"))]


@register("Concat", "movement", pattern=Pattern.INJECTIVE, propagate=_concat_value, flops=_NO_FLOPS)
def _concat(ctx: InferContext) -> list[TensorType]:
    shapes = [ctx.shape(i) for i in range(len(ctx.types)) if ctx.has(i)]
    known = [s for s in shapes if s is not None]
    if len(known) < len(shapes):
        return [TensorType(ctx.dtype(0), None if not known else tuple(symbolic.fresh(ctx.node.name, f"d{i}")
                                                                         for i in range(len(known[0]))))]
    rank = len(known[0])
    a = axis(ctx, ctx.attr("axis"), rank)
    out = list(known[0])
    for s in known[1:]:
        if len(s) != rank:
            ctx.fail(f"inputs have different ranks {rank} and {len(s)}")
        out[a] = symbolic.add(out[a], s[a])
    for i in range(rank):
        if i != a:
            ints = {s[i] for s in known if symbolic.is_int(s[i])}
            if len(ints) > 1:
                ctx.fail(f"dim {i} differs between inputs: {sorted(ints)}")
            out[i] = ints.pop() if ints else known[0][i]
    return [TensorType(ctx.dtype(0), tuple(out))]


def _split_sizes(ctx: InferContext) -> list[Dim] | None:
    """Sizes from the ``split`` input, else equal parts (the last one smaller, as ``num_outputs`` allows)."""
    shape = ctx.shape(0)
    if shape is None:
        return None
    total = shape[axis(ctx, ctx.attr("axis", 0), len(shape))]
    n = len(ctx.node.outputs)
    if ctx.has(1):
        sizes = ctx.ints(1)
        if sizes is not None and symbolic.is_int(total) and sum(sizes) != total:
            ctx.fail(f"split sizes {sizes} do not add up to dim {total}")
        return sizes
    chunk = symbolic.ceildiv(total, n)
    return [chunk] * (n - 1) + [symbolic.sub(total, symbolic.mul(chunk, n - 1))]


@register("Split", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(1,))
def _split(ctx: InferContext) -> list[TensorType]:
    sizes, shape = _split_sizes(ctx), ctx.shape(0)
    if sizes is None:
        return [TensorType(ctx.dtype(0), None)] * len(ctx.node.outputs)
    a = axis(ctx, ctx.attr("axis", 0), len(shape))
    return [TensorType(ctx.dtype(0), shape[:a] + (s,) + shape[a + 1:]) for s in sizes]


# ------------------------------------------------------------------ indexing
def _gather_value(ctx: InferContext) -> list[np.ndarray | None]:
    data, idx = ctx.value(0), ctx.const(1)
    if data is None or idx is None or data.dtype != object:
        return [None]
    a = ctx.attr("axis", 0) % max(data.ndim, 1)
    return [np.take(data, idx.astype(np.int64), axis=a)]


@register("Gather", "movement", pattern=Pattern.INJECTIVE, propagate=_gather_value, flops=_NO_FLOPS, indexed=(0,))
def _gather(ctx: InferContext) -> list[TensorType]:
    data, idx = ctx.shape(0), ctx.shape(1)
    if data is None or idx is None:
        return [TensorType(ctx.dtype(0), None)]
    a = axis(ctx, ctx.attr("axis", 0), len(data))
    return [TensorType(ctx.dtype(0), data[:a] + idx + data[a + 1:])]


@register("GatherElements", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, indexed=(0,))
def _gather_elements(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(0), ctx.shape(1))]


@register("GatherND", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, indexed=(0,))
def _gather_nd(ctx: InferContext) -> list[TensorType]:
    data, idx, b = ctx.shape(0), ctx.shape(1), ctx.attr("batch_dims", 0)
    if data is None or idx is None or not symbolic.is_int(idx[-1]):
        return [TensorType(ctx.dtype(0), None)]
    return [TensorType(ctx.dtype(0), idx[:-1] + data[b + idx[-1]:])]


@register(["ScatterND", "ScatterElements"], "movement", pattern=Pattern.OPAQUE, flops=_NO_FLOPS)
def _scatter(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


@register("TensorScatter", "movement", pattern=Pattern.OPAQUE, flops=_NO_FLOPS, in_place=(0, 1))
def _tensor_scatter(ctx: InferContext) -> list[TensorType]:
    """ONNX opset 24: ``update`` written into ``past_cache`` along ``axis`` from each batch row's
    ``write_indices`` (a KV cache update); the result has the cache's shape."""
    cache, update = ctx.shape(0), ctx.shape(1)
    if cache is not None and update is not None:
        if len(cache) != len(update):
            ctx.fail(f"the update has rank {len(update)}, the cache {len(cache)}")
        a = axis(ctx, ctx.attr("axis", -2), len(cache))
        for i, (c, u) in enumerate(zip(cache, update)):
            if i != a and symbolic.is_int(c) and symbolic.is_int(u) and c != u:
                ctx.fail(f"update shape {tuple(update)} does not match cache shape {tuple(cache)} off axis {a}")
            if i == a and symbolic.is_int(c) and symbolic.is_int(u) and u > c:
                ctx.fail(f"an update of {u} positions does not fit a cache of {c}")
    if ctx.attr("mode", "linear") not in ("linear", "circular"):
        ctx.fail(f"unknown mode {ctx.attr('mode')!r}")
    return same_as_input(ctx)


BIG = 2 ** 31
"""Slice bounds at least this large mean "to the end" (exporters write INT64_MAX or INT32_MAX)."""


def _slice_params(ctx: InferContext):
    """(shape, starts, ends, axes, steps); starts and ends may hold dim symbols."""
    shape, starts, ends = ctx.shape(0), ctx.value(1), ctx.value(2)
    if shape is None or starts is None or ends is None:
        return None
    starts, ends = ([symbolic.canonical(i) for i in bounds.reshape(-1)] for bounds in (starts, ends))
    axes = ctx.ints(3) if ctx.has(3) else list(range(len(starts)))
    steps = ctx.ints(4) if ctx.has(4) else [1] * len(starts)
    if axes is None or steps is None:
        return None
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.fail(f"starts, ends, axes and steps differ in length: "
                 f"{len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}")
    if 0 in steps:
        ctx.fail("slice step cannot be 0")
    return shape, starts, ends, [axis(ctx, a, len(shape)) for a in axes], steps


def _clamp(index: Dim, dim: Dim, step: int) -> Dim:
    """ONNX's normalisation of one slice bound: negative counts from the end, then clamp into range."""
    lo, hi = (0, dim) if step > 0 else (-1, symbolic.sub(dim, 1))
    if symbolic.is_int(index) and index >= BIG:
        return hi
    if symbolic.is_int(index) and index <= -BIG:
        return lo
    if symbolic.is_int(index) and index < 0:
        return symbolic.sub(dim, symbolic.minimum(-index, symbolic.sub(dim, lo)))  # max(dim + index, lo)
    return symbolic.minimum(index, hi)


def _slice_dim(dim: Dim, start: Dim, end: Dim, step: int) -> Dim:
    if all(map(symbolic.is_int, (dim, start, end))):
        return len(range(*slice(start, end, step).indices(dim)))
    start, end = _clamp(start, dim, step), _clamp(end, dim, step)
    span = symbolic.sub(end, start) if step > 0 else symbolic.sub(start, end)
    return symbolic.maximum(symbolic.ceildiv(span, abs(step)), 0)


@register("Slice", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(1, 2, 3, 4), propagate=lambda ctx: [_slice_value(ctx)])
def _slice(ctx: InferContext) -> list[TensorType]:
    params = _slice_params(ctx)
    if params is None:
        shape = ctx.shape(0)
        return [TensorType(ctx.dtype(0), None if shape is None else
                           tuple(symbolic.fresh(ctx.node.name, f"d{i}") for i in range(len(shape))))]
    shape, starts, ends, axes, steps = params
    out = list(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        out[a] = _slice_dim(shape[a], s, e, st)
    return [TensorType(ctx.dtype(0), tuple(out))]


def _slice_value(ctx: InferContext) -> np.ndarray | None:
    data, params = ctx.value(0), _slice_params(ctx)
    if data is None or params is None or not all(map(symbolic.is_int, params[1] + params[2])):
        return None
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(*params[1:]):
        index[a] = slice(s, e, st)
    return data[tuple(index)]


def _expand_shape(ctx: InferContext):
    target = _shape_from_value(ctx, 1)
    return None if target is None else broadcast(ctx, [ctx.shape(0), target])


def _expand_value(ctx: InferContext) -> list[np.ndarray | None]:
    data, shape = ctx.value(0), _expand_shape(ctx)
    if data is None or shape is None or not all(map(symbolic.is_int, shape)):
        return [None]
    return [np.broadcast_to(data, shape)]


@register("Expand", "movement", pattern=Pattern.INJECTIVE, propagate=_expand_value, flops=_NO_FLOPS,
          shape_operands=(1,))
def _expand(ctx: InferContext) -> list[TensorType]:
    shape = _expand_shape(ctx)
    if shape is None and ctx.has(1) and ctx.shape(1) and symbolic.is_int(ctx.shape(1)[0]) and ctx.shape(0) is not None:
        rank = max(ctx.shape(1)[0], len(ctx.shape(0)))
        shape = tuple(symbolic.fresh(ctx.node.name, f"d{i}") for i in range(rank))
    return [TensorType(ctx.dtype(0), shape)]


@register("Tile", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(1,))
def _tile(ctx: InferContext) -> list[TensorType]:
    shape, reps = ctx.shape(0), ctx.value(1)
    if shape is None or reps is None:
        return [TensorType(ctx.dtype(0), None)]
    return [TensorType(ctx.dtype(0), tuple(symbolic.mul(d, symbolic.canonical(r))
                                          for d, r in zip(shape, reps.reshape(-1))))]


@register("Pad", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(1, 3))
def _pad(ctx: InferContext) -> list[TensorType]:
    shape, pads = ctx.shape(0), ctx.ints(1)
    if shape is None or pads is None:
        return [TensorType(ctx.dtype(0), None)]
    axes = ctx.ints(3) if ctx.has(3) else list(range(len(shape)))
    out = list(shape)
    for i, a in enumerate(axes):
        a = axis(ctx, a, len(shape))
        out[a] = symbolic.add(out[a], pads[i] + pads[i + len(axes)])
    return [TensorType(ctx.dtype(0), tuple(out))]


@register("Trilu", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(1,))
def _trilu(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


@register("CumSum", "reduce", pattern=Pattern.REDUCTION, flops=per_output_element(1), shape_operands=(1,))
def _cumsum(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


# ------------------------------------------------------------------ creation
def _shape_from_value(ctx: InferContext, index: int) -> tuple[Dim, ...] | None:
    v = ctx.value(index)
    return None if v is None else tuple(symbolic.canonical(d) for d in v.reshape(-1))


@register("ConstantOfShape", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(0,))
def _constant_of_shape(ctx: InferContext) -> list[TensorType]:
    value = ctx.attr("value")
    dtype = DType.FLOAT32 if value is None else DType.from_numpy(np.asarray(value).dtype)
    shape = _shape_from_value(ctx, 0)
    if shape is None and ctx.shape(0) is not None and symbolic.is_int(ctx.shape(0)[0]):
        shape = tuple(symbolic.fresh(ctx.node.name, f"d{i}") for i in range(ctx.shape(0)[0]))
    return [TensorType(dtype, shape)]


@register("Range", "movement", pattern=Pattern.INJECTIVE, flops=_NO_FLOPS, shape_operands=(0, 1, 2))
def _range(ctx: InferContext) -> list[TensorType]:
    """max(ceil((limit - start) / delta), 0) elements; symbolic when the bounds are shape values."""
    start, limit, delta = (ctx.value(i) for i in range(3))
    if start is None or limit is None or delta is None or delta.dtype == object:
        return [TensorType(ctx.dtype(0), (symbolic.fresh(ctx.node.name, "len"),))]
    if delta.item() == 0:
        ctx.fail("Range delta cannot be 0")
    if start.dtype != object and limit.dtype != object:
        n = int(max(np.ceil((limit.item() - start.item()) / delta.item()), 0))
        return [TensorType(ctx.dtype(0), (n,))]
    span, step = symbolic.sub(symbolic.canonical(limit.item()), symbolic.canonical(start.item())), int(delta.item())
    length = symbolic.ceildiv(span, step) if step > 0 else symbolic.ceildiv(symbolic.neg(span), -step)
    return [TensorType(ctx.dtype(0), (symbolic.maximum(length, 0),))]


@register(["RandomNormalLike", "RandomUniformLike"], "movement", pattern=Pattern.OPAQUE, flops=_NO_FLOPS,
          deterministic=False)
def _random_like(ctx: InferContext) -> list[TensorType]:
    dtype = ctx.attr("dtype")
    return [TensorType(DType.from_onnx(dtype) if dtype is not None else ctx.dtype(0), ctx.shape(0))]


@register(["RandomNormal", "RandomUniform"], "movement", pattern=Pattern.OPAQUE, flops=_NO_FLOPS,
          deterministic=False)
def _random(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.from_onnx(ctx.attr("dtype", DType.FLOAT32.onnx)), tuple(ctx.attr("shape")))]


@register(["EyeLike"], "movement", pattern=Pattern.SHAPE, flops=_NO_FLOPS)
def _eye_like(ctx: InferContext) -> list[TensorType]:
    dtype = ctx.attr("dtype")
    return [TensorType(DType.from_onnx(dtype) if dtype is not None else ctx.dtype(0), ctx.shape(0))]
