"""Movement and shape ops: layouts, indexing, and the Shape -> Gather -> Concat -> Reshape
arithmetic that dynamic exports compute their shapes with.

Values pass through unchanged, so outputs keep their input's interval and exactness.
Symbolic dims are only sliced, tiled or concatenated whole; a dim made of several (a
Flatten over a symbol) becomes a new dim named after its factors, which only matches itself.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper

from .build import Builder, Dim, Tensor

BIG = np.iinfo(np.int64).max


def _merged(b: Builder, dims) -> Dim:
    """One dim standing for the product of ``dims``."""
    static = math.prod(d for d in dims if isinstance(d, int))
    symbols = sorted(d for d in dims if isinstance(d, str))
    if not symbols:
        return static
    name = "*".join(([str(static)] if static != 1 else []) + symbols)
    if len(symbols) == 1 and static == 1:
        return symbols[0]
    b.sizes[name] = static * math.prod(b.sizes[s] for s in symbols)
    return name


def _moved(b: Builder, x: Tensor, op: str, inputs, shape, **attrs) -> Tensor:
    out, = b.node(op, [x, *inputs], [b.result(x, shape=tuple(shape))], **attrs)
    return out


def _any(b: Builder, ok=lambda t: True) -> Tensor:
    """Any tensor (float, integer or bool) from the pool, else a new float input."""
    return b.pick(lambda t: t.rank >= 1 and ok(t)) or b.leaf(b.shape())


def transpose(b: Builder) -> bool:
    x = _any(b, lambda t: t.rank >= 2)
    if x.rank < 2:
        return False
    perm = [int(p) for p in b.rng.permutation(x.rank)]
    if b.rng.random() < 0.2:
        _moved(b, x, "Transpose", [], x.shape[::-1])
    else:
        _moved(b, x, "Transpose", [], [x.shape[p] for p in perm], perm=perm)
    return True


def reshape(b: Builder) -> bool:
    """To a random factorization of the static part; symbolic dims kept in place by 0, or,
    as exporters do, a target computed from the input's Shape."""
    x = _any(b)
    keep = [i for i, d in enumerate(x.shape) if isinstance(d, str)]
    lead = keep[-1] + 1 if keep else 0
    rest = b.numel(x.shape[lead:])
    dims = _factor(b, rest)
    shape = list(x.shape[:lead]) + dims
    if keep and b.rng.random() < 0.5:
        target = _shape_of(b, x, list(range(lead)), dims)
    else:
        spelled = [0 if isinstance(d, str) or i < lead and b.rng.random() < 0.8 else d for i, d in enumerate(shape)]
        if b.rng.random() < 0.4 and lead < len(spelled):
            spelled[int(b.rng.integers(lead, len(spelled)))] = -1
        if any(isinstance(d, str) for d in spelled):
            return False
        target = b.ints(spelled)
    if b.rng.random() < 0.05 and not keep:  # a target fed at run time: compiled per value
        fed = b.input((len(shape),), np.int64, 0, 0)
        b.pool.remove(fed)
        b.feeds[fed.name] = np.asarray(b.concrete(shape), np.int64)
        target = fed.name
    _moved(b, x, "Reshape", [target], shape)
    return True


def _factor(b: Builder, n: int) -> list[int]:
    dims = []
    for _ in range(int(b.rng.integers(0, 3))):
        divisors = [d for d in range(2, n + 1) if n % d == 0]
        if not divisors:
            break
        d = b.choice(divisors)
        dims.append(d)
        n //= d
    dims.append(n)
    b.rng.shuffle(dims)
    return [int(d) for d in dims]


def _shape_of(b: Builder, x: Tensor, axes: list[int], tail: list[int]) -> str:
    """``Concat(Unsqueeze(Gather(Shape(x), i)) for i in axes, tail)``: a run-time shape."""
    shape = b.node("Shape", [x], [b.result(shape=(x.rank,), dtype=np.dtype(np.int64), lo=0, hi=64, exact=True)])[0]
    parts = []
    for i in axes:
        d, = b.node("Gather", [shape, b.ints(i)], [b.result(shape=(), dtype=np.dtype(np.int64), lo=0, hi=64)], axis=0)
        u, = b.node("Unsqueeze", [d, b.ints([0])], [b.result(d, shape=(1,))])
        parts.append(u.name)
    parts.append(b.ints(tail))
    out, = b.node("Concat", parts, [b.result(shape=(len(axes) + len(tail),), dtype=np.dtype(np.int64), lo=0,
                                              hi=64)], axis=0)
    b.pool.remove(out)
    return out.name


def flatten(b: Builder) -> bool:
    x = _any(b)
    axis = int(b.rng.integers(-x.rank, x.rank + 1))
    a = axis + x.rank if axis < 0 else axis
    _moved(b, x, "Flatten", [], [_merged(b, x.shape[:a]), _merged(b, x.shape[a:])], axis=axis)
    return True


def squeeze_unsqueeze(b: Builder) -> bool:
    x = _any(b)
    ones = [i for i, d in enumerate(x.shape) if d == 1]
    if ones and b.rng.random() < 0.5:
        axes = [i for i in ones if b.rng.random() < 0.7] or ones[:1]
        shape = [d for i, d in enumerate(x.shape) if i not in axes]
        spelled = [i - x.rank if b.rng.random() < 0.3 else i for i in axes]
        inputs = [] if len(axes) == len(ones) and b.rng.random() < 0.3 else [b.ints(spelled)]
        _moved(b, x, "Squeeze", inputs, shape)
        return True
    if x.rank >= 5:
        return False
    count = int(b.rng.integers(1, 3))
    rank = x.rank + count
    axes = sorted(int(a) for a in b.rng.choice(rank, count, replace=False))
    it = iter(x.shape)
    shape = [1 if i in axes else next(it) for i in range(rank)]
    _moved(b, x, "Unsqueeze", [b.ints([a - rank if b.rng.random() < 0.3 else a for a in axes])], shape)
    return True


def slice_(b: Builder) -> bool:
    x = _any(b)
    static = [i for i, d in enumerate(x.shape) if isinstance(d, int)]
    if not static:
        return False
    axes = sorted(int(a) for a in b.rng.choice(static, int(b.rng.integers(1, len(static) + 1)), replace=False))
    shape, starts, ends, steps = list(x.shape), [], [], []
    for a in axes:
        n = x.shape[a]
        step = int(b.choice([1, 1, 1, 2, 3, -1, -2]))
        first, last = sorted(int(i) for i in b.rng.integers(0, n, 2))  # a non-empty range, spelled variously
        if step > 0:
            start = b.choice([first, first - n])
            end = b.choice([last + 1, last + 1 - n]) if last + 1 < n else b.choice([n, BIG, n + 3])
        else:
            start = b.choice([last, last - n]) if last < n - 1 else b.choice([n - 1, -1, BIG, n + 3])
            end = b.choice([first - 1, first - 1 - n]) if first > 0 else b.choice([-BIG, -n - 1, -n - 5])
        shape[a] = len(range(n)[slice(start, end, step)])
        starts.append(start), ends.append(end), steps.append(step)
    if not all(shape):
        return False
    spelled = [a - x.rank if b.rng.random() < 0.3 else a for a in axes]
    inputs = [b.ints(starts), b.ints(ends), b.ints(spelled)]
    if any(s != 1 for s in steps) or b.rng.random() < 0.5:
        inputs.append(b.ints(steps))
    _moved(b, x, "Slice", inputs, shape)
    return True


def concat(b: Builder) -> bool:
    x = _any(b)
    static = [i for i, d in enumerate(x.shape) if isinstance(d, int)]
    if not static:
        return False
    axis = b.choice(static)
    parts, total = [x], x.shape[axis]
    for _ in range(int(b.rng.integers(1, 3))):
        shape = list(x.shape)
        shape[axis] = int(b.rng.integers(1, 5))
        other = b.pick(lambda t: t.dtype == x.dtype and t is not x and t.rank == x.rank and all(
            t.shape[i] == x.shape[i] for i in range(x.rank) if i != axis) and isinstance(t.shape[axis], int))
        other = other if other is not None and b.rng.random() < 0.5 else b.leaf(tuple(shape), x.dtype, x.lo, x.hi)
        parts.append(other)
        total += other.shape[axis]
    shape = list(x.shape)
    shape[axis] = total
    out = b.result(x, shape=tuple(shape), lo=min(p.lo for p in parts), hi=max(p.hi for p in parts),
                   exact=all(p.exact for p in parts))
    b.node("Concat", parts, [out], axis=axis - x.rank if b.rng.random() < 0.3 else axis)
    return True


def split(b: Builder) -> bool:
    x = _any(b, lambda t: any(isinstance(d, int) and d > 1 for d in t.shape))
    axes = [i for i, d in enumerate(x.shape) if isinstance(d, int) and d > 1]
    if not axes:
        return False
    axis = b.choice(axes)
    n = x.shape[axis]
    if b.rng.random() < 0.5:
        cuts = sorted(int(c) for c in b.rng.choice(range(1, n), min(n - 1, int(b.rng.integers(1, 3))), replace=False))
        sizes = np.diff([0, *cuts, n]).tolist()
        inputs, attrs = [b.ints(sizes)], {}
    else:
        parts = int(b.rng.integers(2, min(n, 4) + 1))
        chunk = -(-n // parts)
        sizes = [min(chunk, n - i * chunk) for i in range(parts) if n - i * chunk > 0]
        inputs, attrs = [], {"num_outputs": len(sizes)}
    outs = []
    for s in sizes:
        shape = list(x.shape)
        shape[axis] = int(s)
        outs.append(b.result(x, shape=tuple(shape)))
    b.node("Split", [x, *inputs], outs, axis=axis, **attrs)
    return True


def expand(b: Builder) -> bool:
    """To a bigger broadcast shape (or a target with 1s where the input has sizes)."""
    x = _any(b)
    shape = list(x.shape)
    target = [1 if isinstance(d, str) or b.rng.random() < 0.3 else d for d in shape]
    for i, d in enumerate(shape):
        if d == 1 and b.rng.random() < 0.6:
            target[i] = shape[i] = b.dim(small=True, allow_symbol=False)
    for _ in range(int(b.rng.integers(0, 2)) if len(shape) < 5 else 0):
        d = b.dim(small=True, allow_symbol=False)
        shape.insert(0, d), target.insert(0, d)
    if b.numel(shape) > 4096:
        return False
    _moved(b, x, "Expand", [b.ints(target)], shape)
    return True


def tile(b: Builder) -> bool:
    x = _any(b)
    repeats = [1 if isinstance(d, str) else int(b.rng.integers(1, 4)) for d in x.shape]
    shape = [d * r if isinstance(d, int) else d for d, r in zip(x.shape, repeats)]
    if b.numel(shape) > 4096:
        return False
    _moved(b, x, "Tile", [b.ints(repeats)], shape)
    return True


def _indices(b: Builder, shape, n: int, negative: bool = True) -> Tensor:
    """Index values in [-n, n) (or [0, n)): an exact int tensor from the pool, or new."""
    lo = -n if negative else 0
    found = b.pick(lambda t: t.dtype.kind == "i" and t.exact and tuple(t.shape) == tuple(shape)
                   and t.lo >= lo and t.hi <= n - 1)
    if found is not None:
        return found
    dtype = b.choice([np.int64, np.int64, np.int32])
    return b.leaf(shape, dtype, lo, n - 1)


def gather(b: Builder) -> bool:
    x = _any(b)
    axis = int(b.rng.integers(0, x.rank))
    n = b.size(x.shape[axis])
    ishape = tuple(b.dim(small=True, allow_symbol=False) for _ in range(int(b.rng.integers(0, 3))))
    if x.rank - 1 + len(ishape) > 5:
        return False
    idx = _indices(b, ishape, n)
    shape = x.shape[:axis] + ishape + x.shape[axis + 1:]
    spelled = axis - x.rank if b.rng.random() < 0.3 else axis
    b.node("Gather", [x, idx], [b.result(x, shape=shape)], axis=spelled)
    return True


def gather_elements(b: Builder) -> bool:
    x = _any(b)
    axis = int(b.rng.integers(0, x.rank))
    shape = tuple(d if i == axis or b.rng.random() < 0.6 else (1 if isinstance(d, str) else
                                                                 int(b.rng.integers(1, d + 1)))
                  for i, d in enumerate(x.shape))
    shape = tuple(b.dim(small=True, allow_symbol=False) if i == axis and b.rng.random() < 0.5 else d
                  for i, d in enumerate(shape))
    idx = _indices(b, shape, b.size(x.shape[axis]))
    b.node("GatherElements", [x, idx], [b.result(x, shape=shape)], axis=axis)
    return True


def gather_nd(b: Builder) -> bool:
    x = _any(b, lambda t: t.rank >= 1)
    batch = int(b.rng.integers(0, min(2, x.rank)))
    if any(isinstance(d, str) for d in x.shape[batch:]):
        return False
    k = int(b.rng.integers(1, x.rank - batch + 1))
    rows = tuple(b.dim(small=True, allow_symbol=False) for _ in range(int(b.rng.integers(0, 2))))
    ishape = x.shape[:batch] + rows + (k,)
    data = np.stack([b.rng.integers(-n, n, b.concrete(x.shape[:batch] + rows))
                     for n in b.concrete(x.shape[batch:batch + k])], -1).astype(np.int64)
    idx = b.const(data) if all(isinstance(d, int) for d in ishape) else b.input(ishape, np.int64)
    if idx.name in b.feeds:
        b.feeds[idx.name] = data
    shape = x.shape[:batch] + rows + x.shape[batch + k:]
    b.node("GatherND", [x, idx], [b.result(x, shape=shape)], batch_dims=batch)
    return True


def scatter_nd(b: Builder) -> bool:
    x = _any(b, lambda t: t.static)
    if not x.static:
        return False
    k = int(b.rng.integers(1, x.rank + 1))
    space = math.prod(x.shape[:k])
    count = int(b.rng.integers(1, min(space, 6) + 1))
    reduction = b.choice(["none", "none", "add", "mul", "max", "min"]) if x.dtype not in (np.float16, np.bool_) \
        else "none"  # onnxruntime reduces neither
    flat = b.rng.choice(space, count, replace=reduction != "none" and bool(b.rng.random() < 0.5))
    idx = np.stack(np.unravel_index(flat, x.shape[:k]), -1).astype(np.int64)
    idx = np.where(b.rng.random(idx.shape) < 0.3, idx - np.array(x.shape[:k]), idx)
    updates_shape = (count,) + x.shape[k:]
    if x.dtype.kind == "f":
        updates = b.leaf(updates_shape, x.dtype, x.lo, x.hi) if reduction != "mul" else b.leaf(
            updates_shape, x.dtype, -1, 1)
    else:
        updates = b.leaf(updates_shape, x.dtype, max(x.lo, -8), min(x.hi, 8))
    x = b.scaled(x, 1.0) if reduction == "mul" and x.is_float else x
    lo, hi = min(x.lo, updates.lo), max(x.hi, updates.hi)
    if reduction == "add":
        lo, hi = lo * (count + 1), hi * (count + 1)
    if reduction == "mul" and not x.is_float:
        return False
    exact = x.exact and updates.exact and reduction in ("none", "max", "min")
    b.node("ScatterND", [x, b.const(idx, pool=False), updates], [b.result(x, lo=lo, hi=hi, exact=exact)],
           **({} if reduction == "none" else {"reduction": reduction}))
    return True


def pad(b: Builder) -> bool:
    x = _any(b)
    mode = b.choice(["constant", "constant", "reflect", "edge", "wrap"])
    axes = [i for i, d in enumerate(x.shape) if isinstance(d, int) and (mode == "constant" or d > 1)]
    if not axes:
        return False
    chosen = sorted(int(a) for a in b.rng.choice(axes, int(b.rng.integers(1, len(axes) + 1)), replace=False))
    before, after, shape = [], [], list(x.shape)
    for a in chosen:
        n = x.shape[a]
        limit = n - 1 if mode == "reflect" else 3 if mode != "wrap" else n
        p, q = (int(b.rng.integers(0, max(limit, 0) + 1)) for _ in range(2))
        if mode == "constant" and n > 2 and b.rng.random() < 0.2:
            p = -int(b.rng.integers(1, n // 2 + 1))
        before.append(p), after.append(q)
        shape[a] = n + p + q
    if not all(shape) or b.numel(shape) > 4096:
        return False
    value = 0.0 if x.is_float else 0
    inputs = [b.ints(before + after)]
    if mode == "constant" and b.rng.random() < 0.5:
        low = -3 if x.dtype.kind == "i" else 0
        value = float(np.round(b.rng.uniform(-2, 2), 2)) if x.is_float else int(b.rng.integers(low, 4))
        if x.dtype == np.bool_:
            value = True
        inputs.append(b.const(np.asarray(value, x.dtype), pool=False).name)
    if len(chosen) < x.rank or b.rng.random() < 0.3:
        inputs += [""] * (2 - len(inputs)) + [b.ints([a - x.rank if b.rng.random() < 0.3 else a for a in chosen])]
        full = inputs
    else:
        full = [b.ints(sum(([before[chosen.index(i)] if i in chosen else 0] for i in range(x.rank)), []) +
                       sum(([after[chosen.index(i)] if i in chosen else 0] for i in range(x.rank)), []))] + inputs[1:]
    out = b.result(x, shape=tuple(shape), lo=min(x.lo, float(value)), hi=max(x.hi, float(value)))
    b.node("Pad", [x, *full], [out], mode=mode)
    return True


def trilu(b: Builder) -> bool:
    x = _any(b, lambda t: t.rank >= 2)
    if x.rank < 2:
        return False
    inputs = [b.const(np.asarray(int(b.rng.integers(-3, 4)), np.int64), pool=False)] if b.rng.random() < 0.7 else []
    out = b.result(x, lo=min(x.lo, 0.0), hi=max(x.hi, 0.0))
    b.node("Trilu", [x, *inputs], [out], upper=int(b.rng.integers(2)))
    return True


def cast(b: Builder) -> bool:
    """Float <-> float16 round trips (autocast), exact floats to integers and bool, ints to
    floats; as Cast, or as CastLike of a constant of the target type."""
    x = _any(b)
    if x.is_float:
        options = [np.float16 if x.dtype == np.float32 else np.float32]
        options += [np.int64, np.int32, np.bool_] if x.exact and x.magnitude < 1000 else []
    else:
        options = [b.float_dtype, np.int32 if x.dtype == np.int64 else np.int64, np.bool_]
    to = np.dtype(b.choice(options))
    lo, hi = (0.0, 1.0) if to == np.bool_ else (x.lo, x.hi)
    out = b.result(x, dtype=to, lo=lo, hi=hi, exact=x.exact)
    if b.rng.random() < 0.2:
        b.node("CastLike", [x, b.const(np.zeros((), to), pool=False)], [out])
    else:
        b.node("Cast", [x], [out], to=_onnx_type(to))
    if to.kind == "f" and to != b.float_dtype:  # back to the graph's float type, as autocast does
        b.pool.remove(out)
        b.unary("Cast", out, dtype=x.dtype, to=_onnx_type(x.dtype))
    return True


def _onnx_type(dtype) -> int:
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def shape_ops(b: Builder) -> bool:
    """Shape/Size feeding ConstantOfShape, Range (position ids) or an Expand, as exports do."""
    x = _any(b)
    kind = b.choice(["constant_of_shape", "range", "expand", "size"])
    if kind == "size":
        b.node("Size", [x], [b.result(shape=(), dtype=np.dtype(np.int64), lo=b.numel(x.shape), hi=b.numel(x.shape))])
        return True
    axis = int(b.rng.integers(0, x.rank))
    start, end = (axis, axis + 1) if b.rng.random() < 0.5 else (0, x.rank)
    dims = x.shape[start:end]
    attrs = {k: v for k, v in (("start", start), ("end", end)) if (k == "start" and v) or (k == "end" and v != x.rank)}
    shape, = b.node("Shape", [x], [b.result(shape=(len(dims),), dtype=np.dtype(np.int64), lo=0, hi=64)], **attrs)
    b.pool.remove(shape)
    if kind == "constant_of_shape":
        value = float(np.asarray(b.rng.uniform(-2, 2), b.float_dtype))
        b.node("ConstantOfShape", [shape], [b.result(shape=dims, lo=value, hi=value, exact=True)],
               value=numpy_helper.from_array(np.asarray([value], b.float_dtype)))
        return True
    if kind == "expand":
        y = b.pick_float(lambda t: t.rank <= len(dims) and b.broadcast(t.shape, dims) == tuple(dims),
                         rank={0, 1, 2, 3, 4})
        if b.broadcast(y.shape, dims) != tuple(dims):
            return False
        b.node("Expand", [y, shape], [b.result(y, shape=dims)])
        return True
    if len(dims) != 1:
        return False
    n, = b.node("Squeeze", [shape, b.ints([0])], [b.result(shape=(), dtype=np.dtype(np.int64), lo=0, hi=64)])
    b.pool.remove(n)
    b.node("Range", [b.ints(0), n, b.ints(1)], [b.result(shape=dims, dtype=np.dtype(np.int64), lo=0,
                                                          hi=b.size(dims[0]) - 1, exact=True)])
    return True


def identity(b: Builder) -> bool:
    x = _any(b)
    if x.is_float and b.rng.random() < 0.5:  # inference Dropout, its mask read (all true)
        b.node("Dropout", [x], [b.result(x), b.result(x, dtype=np.dtype(np.bool_), lo=1, hi=1)])
    else:
        b.unary("Identity", x)
    return True


GENERATORS = {
    "Transpose": transpose, "Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze_unsqueeze,
    "Slice": slice_, "Concat": concat, "Split": split, "Expand": expand, "Tile": tile, "Gather": gather,
    "GatherElements": gather_elements, "GatherND": gather_nd, "ScatterND": scatter_nd, "Pad": pad,
    "Trilu": trilu, "Cast": cast, "Shape": shape_ops, "Identity": identity,
}
COVERS = {"Squeeze": {"Unsqueeze"}, "Shape": {"ConstantOfShape", "Range", "Size", "Expand"},
          "Identity": {"Dropout"}, "Reshape": {"Gather", "Concat", "Shape"}}
"""Op types a generator emits besides its own name (for the coverage check)."""
