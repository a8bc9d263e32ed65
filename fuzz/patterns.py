"""The decompositions exporters write and xpuc's fusions look for, with near misses.

Each generator writes one pattern the way ``torch.onnx`` exports it (in one of the spellings
seen in the wild: ``x * 0.5`` or ``x / 2``, ``1 / sqrt`` or ``pow -0.5`` ...). With some
probability it writes a *near miss* instead: one detail changed so the fusion must not fire
(a reduction over the wrong axis, a coefficient off, an intermediate read elsewhere, halves
of a rotary table that differ, a softmax over the wrong axis). Either way the graph must
compute what onnxruntime computes.
"""

from __future__ import annotations

import math

import numpy as np

from .build import Builder, Tensor

NEAR_MISS = 0.35


def _miss(b: Builder, *kinds: str) -> str | None:
    return b.choice(kinds) if b.rng.random() < NEAR_MISS else None


def _scalar(b: Builder, value: float, like: Tensor) -> str:
    return b.const(np.asarray(value, like.dtype), pool=False).name


def _op(b: Builder, op: str, inputs, like: Tensor, lo: float, hi: float, **attrs) -> Tensor:
    """An elementwise (or shape-keeping) op typed like ``like``, shaped by broadcasting."""
    shape = b.broadcast(*(t.shape for t in inputs if isinstance(t, Tensor)))
    out, = b.node(op, inputs, [b.result(like, shape=shape, lo=lo, hi=hi, exact=False)], **attrs)
    return out


def _mul(b: Builder, x, y, like: Tensor, lo: float, hi: float) -> Tensor:
    """x * y in either operand order."""
    pair = [x, y] if b.rng.random() < 0.5 else [y, x]
    return _op(b, "Mul", pair, like, lo, hi)


def _expose(b: Builder, t: Tensor) -> None:
    """Make an intermediate a graph output: a fusion may not swallow it."""
    b.exposed.append(t.name)


def _hidden(b: Builder, rank=(2, 3, 4)) -> Tensor:
    """A float activation with a static last dim (what norms and MLPs act on)."""
    x = b.pick_float(lambda t: isinstance(t.shape[-1], int) and t.shape[-1] > 1, rank=set(rank))
    if not isinstance(x.shape[-1], int) or x.shape[-1] < 2:
        x = b.leaf((*b.shape(b.choice([r - 1 for r in rank])), b.choice([4, 8, 16, 17])))
    return x


# ---------------------------------------------------------------------- norms
def rms_norm(b: Builder) -> bool:
    """x * rsqrt(mean(x^2, -1) + eps) * w, optionally computed in float32 from float16."""
    x = b.scaled(_hidden(b), 30.0 if b.float_dtype == np.float32 else 4.0)
    miss = _miss(b, "axis", "expose", "eps-vector", "no-eps")
    d = x.shape[-1]
    sq = _op(b, "Pow", [x, _scalar(b, 2.0, x)], x, 0, x.magnitude ** 2) if b.rng.random() < 0.5 else \
        _op(b, "Mul", [x, x], x, 0, x.magnitude ** 2)
    axis = -1 if miss != "axis" or x.rank < 2 else -2
    reduced = tuple(1 if i == x.rank + axis else s for i, s in enumerate(x.shape))
    ms, = b.node("ReduceMean", [sq, b.ints([axis])], [b.result(sq, shape=reduced)], keepdims=1)
    eps = b.const(np.full((d,), 1e-5, x.dtype), pool=False) if miss == "eps-vector" else \
        _scalar(b, b.choice([1e-5, 1e-6]), x)
    var = ms if miss == "no-eps" else _op(b, "Add", [ms, eps] if b.rng.random() < 0.5 else [eps, ms], ms, 1e-6,
                                          ms.hi + 1e-5)
    if miss == "no-eps":  # a zero row would divide by zero: keep the variance off zero another way
        var = _op(b, "Max", [ms, _scalar(b, 1e-4, x)], ms, 1e-4, ms.hi)
    if miss == "expose":
        _expose(b, var)
    bound = math.sqrt(d)
    spelling = b.choice(["rsqrt", "div1", "pow", "divx"])
    if spelling == "pow":
        y = _mul(b, x, _op(b, "Pow", [var, _scalar(b, -0.5, x)], var, 0, 1e3), x, -bound, bound)
    else:
        root = _op(b, "Sqrt", [var], var, 0, math.sqrt(var.hi))
        if spelling == "divx":
            y = _op(b, "Div", [x, root], x, -bound, bound)
        else:
            inv = _op(b, "Reciprocal", [root], root, 0, 1e3) if spelling == "rsqrt" else \
                _op(b, "Div", [_scalar(b, 1.0, x), root], root, 0, 1e3)
            y = _mul(b, x, inv, x, -bound, bound)
    if b.rng.random() < 0.8:
        w = b.const(b.scales((d,), x.dtype), pool=False)
        y = _mul(b, y, w, y, -2 * bound, 2 * bound)
    return True


def layer_norm(b: Builder) -> bool:
    """(x - mean) / sqrt(var + eps) * gamma + beta, in the spellings exporters use."""
    x = b.scaled(_hidden(b), 30.0 if b.float_dtype == np.float32 else 4.0)
    miss = _miss(b, "axis", "expose", "bias-by-row", "unbiased-center")
    d = x.shape[-1]
    axis = -1 if miss != "axis" or x.rank < 2 else -2
    reduced = tuple(1 if i == x.rank + axis else s for i, s in enumerate(x.shape))
    mean, = b.node("ReduceMean", [x, b.ints([axis])], [b.result(x, shape=reduced, exact=False)], keepdims=1)
    m = 2 * x.magnitude
    center = _op(b, "Sub", [x, mean], x, -m, m)
    if miss == "unbiased-center":  # the variance of x, not of x - mean: a different formula
        center_sq_source = x
    else:
        center_sq_source = center
    sq = _op(b, "Pow", [center_sq_source, _scalar(b, 2.0, x)], x, 0, m * m) if b.rng.random() < 0.5 else \
        _op(b, "Mul", [center_sq_source, center_sq_source], x, 0, m * m)
    var, = b.node("ReduceMean", [sq, b.ints([axis])], [b.result(sq, shape=reduced)], keepdims=1)
    var = _op(b, "Add", [var, _scalar(b, 1e-5, x)], var, 1e-5, var.hi + 1e-5)
    if miss == "expose":
        _expose(b, mean)
    root = _op(b, "Sqrt", [var], var, 0, math.sqrt(var.hi))
    bound = math.sqrt(d) + 1
    if b.rng.random() < 0.5:
        y = _op(b, "Div", [center, root], x, -bound, bound)
    else:
        y = _mul(b, center, _op(b, "Reciprocal", [root], root, 0, 400.0), x, -bound, bound)
    gamma = b.const(b.scales((d,), x.dtype), pool=False)
    y = _mul(b, y, gamma, y, -2 * bound, 2 * bound)
    beta_shape = (d,) if miss != "bias-by-row" or x.rank < 2 else (x.shape[-2], 1) if isinstance(x.shape[-2], int) \
        else (d,)
    beta = b.const(b.values(beta_shape, np.dtype(x.dtype), -2, 2), pool=False)
    out_shape = b.broadcast(y.shape, beta_shape)
    b.node("Add", [y, beta], [b.result(y, shape=out_shape, lo=y.lo - 2, hi=y.hi + 2, exact=False)])
    return True


# ----------------------------------------------------------------- activations
def gelu(b: Builder) -> bool:
    """0.5 * x * (1 + erf(x / sqrt(2))) or the tanh approximation, any association."""
    x = b.scaled(b.pick_float(), 20.0 if b.float_dtype == np.float32 else 4.0)
    miss = _miss(b, "half", "coeff", "other-x", "expose")
    m = x.magnitude
    if b.rng.random() < 0.5:
        arg = _op(b, "Div", [x, _scalar(b, math.sqrt(2) if miss != "coeff" else 2.0, x)], x, -m, m) \
            if b.rng.random() < 0.5 else _mul(b, x, _scalar(b, 1 / math.sqrt(2) if miss != "coeff" else 0.6, x), x,
                                              -m, m)
        inner = _op(b, "Erf", [arg], x, -1, 1)
    else:
        cube = _op(b, "Pow", [x, _scalar(b, 3.0, x)], x, -m ** 3, m ** 3) if b.rng.random() < 0.5 else \
            _mul(b, x, _op(b, "Mul", [x, x], x, 0, m * m), x, -m ** 3, m ** 3)
        scaled = _mul(b, cube, _scalar(b, 0.044715 if miss != "coeff" else 0.05, x), x, -m ** 3, m ** 3)
        total = _op(b, "Add", [x, scaled], x, -2 * m ** 3, 2 * m ** 3)
        inner = _op(b, "Tanh", [_mul(b, total, _scalar(b, math.sqrt(2 / math.pi), x), x, -2 * m ** 3, 2 * m ** 3)],
                    x, -1, 1)
    one_plus = _op(b, "Add", [_scalar(b, 1.0, x), inner], inner, 0, 2)
    if miss == "expose":
        _expose(b, one_plus)
    half = 0.5 if miss != "half" else 0.45
    other = b.leaf(x.shape, lo=-m, hi=m) if miss == "other-x" else x
    if b.rng.random() < 0.5:
        xh = _mul(b, other, _scalar(b, half, x), x, -m, m) if b.rng.random() < 0.5 else \
            _op(b, "Div", [other, _scalar(b, 1 / half, x)], x, -m, m)
        _mul(b, xh, one_plus, x, -2 * m, 2 * m)
    else:
        _mul(b, _mul(b, other, one_plus, x, -2 * m, 2 * m), _scalar(b, half, x), x, -2 * m, 2 * m)
    return True


def silu(b: Builder) -> bool:
    """x * sigmoid(x); as the gate of a SwiGLU MLP when the input feeds two projections."""
    x = _hidden(b)
    miss = _miss(b, "other", "expose", "tanh")
    if b.rng.random() < 0.5:  # SwiGLU: silu(x @ Wg) * (x @ Wu) @ Wd
        d, f = x.shape[-1], b.choice([4, 8, 16])
        x = b.scaled(x, 4.0)
        gate = _project(b, x, f)
        up = _project(b, x, f)
        act = _silu_of(b, gate, up if miss == "other" else gate, miss)
        y = _mul(b, act, up, act, -act.magnitude * up.magnitude, act.magnitude * up.magnitude)
        _project(b, b.scaled(y, 4.0), d)
        return True
    x = b.scaled(x, 1e3)
    _silu_of(b, x, b.leaf(x.shape) if miss == "other" else x, miss)
    return True


def _silu_of(b: Builder, x: Tensor, inner: Tensor, miss: str | None) -> Tensor:
    s = _op(b, "Sigmoid" if miss != "tanh" else "Tanh", [inner], inner, -1, 1)
    if miss == "expose":
        _expose(b, s)
    return _mul(b, x, s, x, -x.magnitude, x.magnitude)


def _project(b: Builder, x: Tensor, n: int) -> Tensor:
    k = x.shape[-1]
    limit = 1.0 / math.sqrt(k)
    w = b.const(b.values((k, n), np.dtype(x.dtype), -limit, limit), pool=False)
    bound = k * x.magnitude * limit
    out, = b.node("MatMul", [x, w], [b.result(x, shape=(*x.shape[:-1], n), lo=-bound, hi=bound, exact=False)])
    return out


def epilogue(b: Builder) -> bool:
    """MatMul + per-column bias + activation, the epilogue fusion's pattern (or a near miss:
    a bias per row, a bias fed at run time, an activation it does not know)."""
    x = b.scaled(_hidden(b), 4.0)
    miss = _miss(b, "row-bias", "input-bias", "expose", "activation")
    n = b.choice([3, 8, 16, 33])
    y = _project(b, x, n)
    if b.rng.random() < 0.8:
        shape = (n,) if miss != "row-bias" or y.rank < 2 or not isinstance(y.shape[-2], int) else (y.shape[-2], 1)
        bias = b.input(shape, y.dtype, -1, 1) if miss == "input-bias" else b.const(
            b.values(shape, np.dtype(y.dtype), -1, 1), pool=False)
        if miss == "expose":
            _expose(b, y)
        y, = b.node("Add", [y, bias] if b.rng.random() < 0.7 else [bias, y],
                    [b.result(y, shape=b.broadcast(y.shape, bias.shape), lo=y.lo - 1, hi=y.hi + 1)])
    act = b.choice(["Relu", "Gelu", "Sigmoid", "Tanh", "SiLU"]) if miss != "activation" else "Softsign"
    if act == "SiLU":
        _silu_of(b, y, y, None)
    else:
        attrs = {"approximate": b.choice(["none", "tanh"])} if act == "Gelu" else {}
        b.node(act, [y], [b.result(y, lo=min(y.lo, -1), hi=max(y.hi, 1))], **attrs)
    return True


# ------------------------------------------------------------------- attention
def rotary(b: Builder) -> bool:
    """HF rotary: x * cos + rotate_half(x) * sin, cos/sin tables [1, 1, S, D] (or [S, D]),
    rotate_half = cat(-x2, x1); partial rotation (Phi) concatenates the untouched rest."""
    batch, heads, seq, d = b.choice([1, 2]), b.choice([1, 2, 4]), b.choice([2, 4, 8]), b.choice([4, 8, 16])
    miss = _miss(b, "halves-differ", "sign", "expose", "partial")
    x = b.leaf((batch, heads, seq, d), lo=-2, hi=2)
    rot = d // 2 if miss == "partial" and d >= 8 else d
    part = x
    if rot != d:
        part, rest = (_slice(b, x, lo, hi) for lo, hi in ((0, rot), (rot, d)))
    freqs = b.rng.uniform(0, 6.3, (seq, rot // 2))
    table = np.concatenate([freqs, freqs if miss != "halves-differ" else freqs + 0.5], -1)
    shape = b.choice([(1, 1, seq, rot), (seq, rot)])
    cos, sin = (b.const(f(table).reshape(shape).astype(x.dtype), pool=False) for f in (np.cos, np.sin))
    x1, x2 = _slice(b, part, 0, rot // 2), _slice(b, part, rot // 2, rot)
    neg = _op(b, "Neg", [x2 if miss != "sign" else x1], x2, -2, 2)
    rotated, = b.node("Concat", [neg, x1] if miss != "sign" else [x2, neg], [b.result(part, exact=False)], axis=-1)
    a = _mul(b, part, cos, part, -2, 2)
    c = _mul(b, rotated, sin, part, -2, 2)
    if miss == "expose":
        _expose(b, a)
    y = _op(b, "Add", [a, c], part, -4, 4)
    if rot != d:
        b.node("Concat", [y, rest], [b.result(x, lo=-4, hi=4, exact=False)], axis=-1)
    return True


def _slice(b: Builder, x: Tensor, lo: int, hi: int) -> Tensor:
    shape = (*x.shape[:-1], hi - lo)
    end = hi if hi < x.shape[-1] or b.rng.random() < 0.5 else np.iinfo(np.int64).max
    out, = b.node("Slice", [x, b.ints([lo]), b.ints([end]), b.ints([-1])], [b.result(x, shape=shape)])
    return out


def attention(b: Builder) -> bool:
    """Eager attention: softmax(q @ k^T * scale + mask) @ v, with repeat_kv for grouped heads
    (Unsqueeze, Expand, Reshape), causal or padding masks, and a NaN guard after the softmax."""
    batch, hkv, rep, seq, d = b.choice([1, 2]), b.choice([1, 2]), b.choice([1, 2]), b.choice([1, 4, 5, 8]), \
        b.choice([4, 8, 16])
    hq = hkv * rep
    miss = _miss(b, "axis", "tiled", "mask-random", "scale-vector", "expose")
    q = b.leaf((batch, hq, seq, d), lo=-2, hi=2)
    k, v = (b.leaf((batch, hkv, seq, d), lo=-2, hi=2) for _ in range(2))
    if rep > 1:
        k, v = (_repeat_kv(b, t, rep, miss == "tiled") for t in (k, v))
    kt, = b.node("Transpose", [k], [b.result(k, shape=(batch, hq, d, seq))], perm=[0, 1, 3, 2])
    bound = d * 4.0
    scores, = b.node("MatMul", [q, kt], [b.result(q, shape=(batch, hq, seq, seq), lo=-bound, hi=bound, exact=False)])
    scale = 1 / math.sqrt(d)
    if miss == "scale-vector":
        factor = b.const(np.full((seq,), scale, q.dtype) * np.linspace(1, 2, seq).astype(q.dtype), pool=False).name
    else:
        factor = _scalar(b, scale, q)
    if b.rng.random() < 0.5:
        s = _mul(b, scores, factor, scores, -bound, bound)
    else:
        s = _op(b, "Div", [scores, _scalar(b, math.sqrt(d), q)], scores, -bound, bound) if miss != "scale-vector" \
            else _mul(b, scores, factor, scores, -bound, bound)
    if b.rng.random() < 0.7:
        fill = b.choice([-np.inf, float(np.finfo(q.dtype).min), -10000.0])
        mask = np.triu(np.full((seq, seq), fill, q.dtype), 1)
        if miss == "mask-random":
            mask = np.where(b.rng.random((seq, seq)) < 0.3, mask.T, mask)
        shape = b.choice([(1, 1, seq, seq), (seq, seq)])
        s = _op(b, "Add", [s, b.const(mask.reshape(shape), pool=False)], s, -bound, bound)
    p = _op(b, "Softmax", [s], s, 0, 1, axis=-1 if miss != "axis" else -2)
    if miss == "expose":
        _expose(b, p)
    if b.rng.random() < 0.3:
        nan, = b.node("IsNaN", [p], [b.result(p, dtype=np.dtype(np.bool_), lo=0, hi=1)])
        b.pool.remove(nan)
        p = _op(b, "Where", [nan, _scalar(b, 0.0, q), p], p, 0, 1)
    b.node("MatMul", [p, v], [b.result(q, lo=-2, hi=2, exact=False)])
    return True


def _repeat_kv(b: Builder, t: Tensor, rep: int, tiled: bool) -> Tensor:
    batch, heads, seq, d = t.shape
    axis, expanded = (1, (batch, rep, heads, seq, d)) if tiled else (2, (batch, heads, rep, seq, d))
    u, = b.node("Unsqueeze", [t, b.ints([axis])], [b.result(t, shape=expanded[:axis] + (1,) + expanded[axis + 1:])])
    e, = b.node("Expand", [u, b.ints(list(expanded))], [b.result(t, shape=expanded)])
    r, = b.node("Reshape", [e, b.ints([batch, heads * rep, seq, d])], [b.result(t, shape=(batch, heads * rep, seq, d))])
    return r


GENERATORS = {"RMSNorm": rms_norm, "LayerNorm": layer_norm, "GELU": gelu, "SiLU": silu, "Epilogue": epilogue,
              "Rotary": rotary, "AttentionPattern": attention}
