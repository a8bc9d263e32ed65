"""Ops with their own loop structure: reductions, MatMul/Gemm, convolutions and pools,
normalizations, softmax, attention and rotary embedding, written as ONNX ops.

Each generator scales its operands first where the result could otherwise grow past the
dtype's cap (a MatMul over K products), and gives its result a conservative interval.
"""

from __future__ import annotations

import math

import numpy as np

from .build import FLOAT_CAP, Builder, Tensor

REDUCE = {
    # op -> (needs positive input, result interval from (lo, hi, n))
    "ReduceSum": (False, lambda lo, hi, n: (n * min(lo, 0), n * max(hi, 0))),
    "ReduceMean": (False, lambda lo, hi, n: (lo, hi)),
    "ReduceMax": (False, lambda lo, hi, n: (lo, hi)),
    "ReduceMin": (False, lambda lo, hi, n: (lo, hi)),
    "ReduceProd": (False, lambda lo, hi, n: (-1.0, 1.0)),
    "ReduceL1": (False, lambda lo, hi, n: (0.0, n * max(-lo, hi))),
    "ReduceL2": (False, lambda lo, hi, n: (0.0, math.sqrt(n) * max(-lo, hi))),
    "ReduceSumSquare": (False, lambda lo, hi, n: (0.0, n * max(-lo, hi) ** 2)),
    "ReduceLogSum": (True, lambda lo, hi, n: (math.log(lo), math.log(n * hi))),
    "ReduceLogSumExp": (False, lambda lo, hi, n: (lo, hi + math.log(n))),
}
EXACT_REDUCE = {"ReduceMax", "ReduceMin"}


def _room(b: Builder, t: Tensor, n: int) -> float:
    """How large ``t``'s values may be for a sum of ``n`` of their products to stay under the cap."""
    return FLOAT_CAP[t.dtype] / 8 / max(n, 1)


def reduce(b: Builder) -> bool:
    op = b.choice(sorted(REDUCE))
    integer = op in ("ReduceSum", "ReduceMax", "ReduceMin")
    x = b.pick(lambda t: t.rank >= 1 and (t.dtype == b.float_dtype or integer and t.dtype.kind == "i")) \
        or b.pick_float()
    if not x.is_float and x.dtype.kind != "i":
        return False
    axes = sorted(int(a) for a in b.rng.choice(x.rank, int(b.rng.integers(0, x.rank + 1)), replace=False))
    keepdims = int(b.rng.integers(2))
    noop = int(not axes and b.rng.random() < 0.3)
    reduced = range(x.rank) if not axes and not noop else axes
    n = math.prod(b.size(x.shape[a]) for a in reduced)
    positive, interval = REDUCE[op]
    if x.is_float:
        if positive:
            x = b.positive(x)
        elif op == "ReduceProd":
            x = b.scaled(x, 1.0)
        elif op == "ReduceSumSquare":
            x = b.scaled(x, math.sqrt(_room(b, x, n)))
        elif op == "ReduceLogSumExp":
            x = b.scaled(x, 8.0 if x.dtype == np.float32 else 3.0)
        else:
            x = b.scaled(x, _room(b, x, n))
    elif n * x.magnitude > 1 << 20:
        return False
    lo, hi = interval(x.lo, x.hi, n) if n else (0.0, 0.0)
    shape = list(x.shape) if noop else [1 if i in reduced else d for i, d in enumerate(x.shape) if keepdims or
                                        i not in reduced]
    inputs = [x] + ([b.ints([a - x.rank if b.rng.random() < 0.3 else a for a in axes])] if axes else [])
    attrs = {"keepdims": keepdims} if keepdims == 0 or b.rng.random() < 0.5 else {}
    if noop:
        attrs["noop_with_empty_axes"] = 1
    exact = x.exact and (op in EXACT_REDUCE or not x.is_float)
    b.node(op, inputs, [b.result(x, shape=tuple(shape), lo=lo, hi=hi, exact=exact or bool(noop and x.exact))],
           **attrs)
    return True


def arg(b: Builder) -> bool:
    x = b.pick(lambda t: t.exact and t.dtype.kind in "fi" and t.rank >= 1) or b.leaf(b.shape())
    axis = int(b.rng.integers(-x.rank, x.rank))
    keepdims = int(b.rng.integers(2))
    a = axis % x.rank
    shape = [1 if i == a else d for i, d in enumerate(x.shape) if keepdims or i != a]
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": int(b.rng.random() < 0.3)}
    b.node(b.choice(["ArgMax", "ArgMin"]), [x], [b.result(x, shape=tuple(shape), dtype=np.dtype(np.int64), lo=0,
                                                         hi=b.size(x.shape[a]) - 1, exact=True)], **attrs)
    return True


def softmax(b: Builder) -> bool:
    x = b.pick_float()
    x = b.scaled(x, 30.0 if x.dtype == np.float32 else 8.0)
    axis = int(b.rng.integers(-x.rank, x.rank))
    n = b.size(x.shape[axis])
    op = b.choice(["Softmax", "Softmax", "LogSoftmax"])
    lo, hi = (0.0, 1.0) if op == "Softmax" else (x.lo - x.hi - math.log(n) - 1, 0.0)
    b.node(op, [x], [b.result(x, lo=lo, hi=hi, exact=False)], **({"axis": axis} if b.rng.random() < 0.8 else {}))
    return True


def cumsum(b: Builder) -> bool:
    x = b.pick(lambda t: t.dtype.kind in "fi" and t.dtype != np.uint8 and t.rank >= 1) or b.pick_float()
    axis = int(b.rng.integers(-x.rank, x.rank))
    n = b.size(x.shape[axis])
    x = b.scaled(x, _room(b, x, n)) if x.is_float else x
    if not x.is_float and n * x.magnitude > 1 << 20:
        return False
    attrs = {k: int(b.rng.integers(2)) for k in ("exclusive", "reverse") if b.rng.random() < 0.5}
    axis_t = b.const(np.asarray(axis, b.choice([np.int64, np.int32])), pool=False)
    b.node("CumSum", [x, axis_t], [b.result(x, lo=n * min(x.lo, 0), hi=n * max(x.hi, 0),
                                            exact=x.exact and not x.is_float)], **attrs)
    return True


def clip(b: Builder) -> bool:
    x = b.pick(lambda t: t.dtype.kind in "fi" and t.dtype != np.uint8) or b.pick_float()
    bounds = sorted(float(v) for v in b.rng.uniform(x.lo, x.hi, 2))
    if not x.is_float:
        bounds = [math.floor(bounds[0]), math.ceil(bounds[1])]
    inputs = [b.const(np.asarray(v, x.dtype), pool=False) if b.rng.random() < 0.7 else None for v in bounds]
    while inputs and inputs[-1] is None:
        inputs.pop()
    lo = bounds[0] if len(inputs) > 0 and inputs[0] is not None else x.lo
    hi = bounds[1] if len(inputs) > 1 and inputs[1] is not None else x.hi
    b.node("Clip", [x, *inputs], [b.result(x, lo=min(lo, hi), hi=hi)])
    return True


# ---------------------------------------------------------------------------- linalg
def matmul(b: Builder) -> bool:
    """x @ w with a weight [K, N] (mostly), or two activations with broadcast batch dims."""
    a = b.pick_float()
    k = a.shape[-1]
    if b.rng.random() < 0.6 or a.rank == 1:
        n = b.dim(allow_symbol=False) if b.rng.random() < 0.85 else b.dim(small=True)
        batch = b.partner_shape(a.shape[:-2], grow=False) if b.rng.random() < 0.15 else ()
        w_shape = (k,) if b.rng.random() < 0.15 else (*batch, k, n)  # a vector operand on the right
        w = b.pick(lambda t: t.dtype == a.dtype and tuple(t.shape) == w_shape) or b.leaf(w_shape)
    else:
        w = b.pick(lambda t: t.dtype == a.dtype and t.rank >= 2 and t.shape[-2] == k and t is not a) or b.leaf(
            b.partner_shape(a.shape[:-2], grow=False) + (k, b.dim(small=True)))
    batch = b.broadcast(a.shape[:-2], w.shape[:-2])
    if batch is None:
        return False
    # numpy matmul: a 1-D operand gains a dim for the product and loses it after
    shape = (*batch, *a.shape[-2:-1], *w.shape[-1:]) if w.rank >= 2 else a.shape[:-1]
    if b.numel(shape) > 8192:
        return False
    kk = b.size(k)
    limit = math.sqrt(_room(b, a, kk))
    a, w = b.scaled(a, limit), b.scaled(w, limit)
    bound = kk * a.magnitude * w.magnitude
    b.node("MatMul", [a, w], [b.result(a, shape=tuple(shape), lo=-bound, hi=bound, exact=False)])
    return True


def gemm(b: Builder) -> bool:
    a = b.pick_float(lambda t: t.rank == 2 and t.static, rank={2})
    if not a.static:
        return False
    trans_a, trans_b = (int(b.rng.random() < 0.3) for _ in range(2))
    m, k = a.shape[::-1] if trans_a else a.shape
    n = b.dim(allow_symbol=False)
    w = b.leaf((n, k) if trans_b else (k, n))
    alpha, beta = (b.choice([1.0, 1.0, 0.5, -2.0]) for _ in range(2))
    limit = math.sqrt(_room(b, a, k) / abs(alpha))
    a, w = b.scaled(a, limit), b.scaled(w, limit)
    inputs = [a, w]
    bound = abs(alpha) * k * a.magnitude * w.magnitude
    if b.rng.random() < 0.7:
        c = b.leaf(b.choice([(n,), (1, n), (m, n), (m, 1), ()]))
        inputs.append(c)
        bound += abs(beta) * c.magnitude
    attrs = {k: v for k, v, default in (("transA", trans_a, 0), ("transB", trans_b, 0), ("alpha", alpha, 1.0),
                                         ("beta", beta, 1.0)) if v != default or b.rng.random() < 0.3}
    b.node("Gemm", inputs, [b.result(a, shape=(m, n), lo=-bound, hi=bound, exact=False)], **attrs)
    return True


def matmul_integer(b: Builder) -> bool:
    """An int32 product of 8-bit operands: A an input of [batch..., M, K], B a constant [K, N]
    (the w8a8 layout, mostly int8) or an input; zero points per tensor, B's sometimes per
    column (onnxruntime takes A's per tensor only). Exact: every sum fits int32."""
    a_type, b_type = (np.dtype(b.choice([np.uint8, np.uint8, np.int8])) for _ in range(2))
    m, k, n = b.dim(allow_symbol=False), b.dim(allow_symbol=False), b.dim(allow_symbol=False)
    batch = tuple(b.dim(small=True, allow_symbol=False) for _ in range(int(b.rng.integers(0, 2))))
    if b.numel((*batch, m, n)) > 8192:
        return False
    info = [np.iinfo(t) for t in (a_type, b_type)]
    a = b.input((*batch, m, k), a_type, info[0].min, info[0].max)
    w_shape = (k, n)
    w = b.const(b.values(w_shape, b_type, info[1].min, info[1].max)) if b.rng.random() < 0.7 \
        else b.input(w_shape, b_type, info[1].min, info[1].max)
    inputs = [a, w]
    if b.rng.random() < 0.6:
        inputs.append(b.const(b.values((), a_type, info[0].min, info[0].max), pool=False))
        if b.rng.random() < 0.5:
            zb_shape = b.choice([(), (n,)])
            inputs.append(b.const(b.values(zb_shape, b_type, info[1].min, info[1].max), pool=False))
    bound = k * 255.0 * 255.0
    b.node("MatMulInteger", inputs, [b.result(a, shape=(*batch, m, n), dtype=np.dtype(np.int32),
                                              lo=-bound, hi=bound, exact=True)])
    return True


# ------------------------------------------------------------------------ CNN ops
def _image(b: Builder, spatial: int | None = None) -> Tensor:
    """An N, C, spatial... float tensor from the pool (rank 3 or 4), else a new one."""
    ranks = {spatial + 2} if spatial else {3, 4}
    x = b.pick(lambda t: t.dtype == b.float_dtype and t.rank in ranks and t.static and b.numel(t.shape) <= 2048)
    if x is None:
        rank = b.choice(sorted(ranks))
        x = b.leaf((b.choice([1, 2]), b.choice([1, 2, 3, 4, 8]), *(b.choice([3, 4, 5, 7, 8, 9])
                                                                     for _ in range(rank - 2))))
    return x


def _window(b: Builder, spatial) -> dict:
    kernel = [int(b.rng.integers(1, min(d, 3) + 1)) for d in spatial]
    strides = [int(b.rng.integers(1, 3)) for _ in spatial]
    dilations = [int(b.rng.integers(1, 3)) if (k - 1) * 2 + 1 <= d else 1 for k, d in zip(kernel, spatial)]
    pads = [int(b.rng.integers(0, k)) for k in kernel] + [int(b.rng.integers(0, k)) for k in kernel]
    return {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "pads": pads}


def _out_size(d, k, s, dl, p0, p1, ceil=False) -> int:
    span = d + p0 + p1 - (k - 1) * dl - 1
    return (-(-span // s) if ceil else span // s) + 1


def conv(b: Builder) -> bool:
    x = _image(b)
    n, c, *spatial = x.shape
    w = _window(b, spatial)
    groups = b.choice([g for g in (1, 2, c) if c % g == 0])
    m = groups * int(b.rng.integers(1, 4))
    auto = b.rng.random() < 0.15
    if auto:
        del w["pads"]
        w["auto_pad"] = b.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
        if w["auto_pad"] != "VALID":
            w["dilations"] = [1] * len(spatial)
    out = []
    for i, d in enumerate(spatial):
        k, s, dl = w["kernel_shape"][i], w["strides"][i], w["dilations"][i]
        if auto:
            out.append(-(-d // s) if w["auto_pad"] != "VALID" else (d - (k - 1) * dl - 1) // s + 1)
        else:
            out.append(_out_size(d, k, s, dl, w["pads"][i], w["pads"][i + len(spatial)]))
    if min(out) < 1:
        return False
    taps = (c // groups) * math.prod(w["kernel_shape"])
    limit = math.sqrt(_room(b, x, taps))
    x = b.scaled(x, limit)
    weight = b.leaf((m, c // groups, *w["kernel_shape"]), lo=-limit, hi=limit)
    inputs = [x, weight] + ([b.leaf((m,))] if b.rng.random() < 0.6 else [])
    bound = taps * x.magnitude * weight.magnitude + (inputs[2].magnitude if len(inputs) > 2 else 0)
    if b.rng.random() < 0.3:
        del w["kernel_shape"]  # inferred from the weight
    b.node("Conv", inputs, [b.result(x, shape=(n, m, *out), lo=-bound, hi=bound, exact=False)], group=groups, **w)
    return True


def pool(b: Builder) -> bool:
    x = _image(b)
    n, c, *spatial = x.shape
    op = b.choice(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"])
    if op.startswith("Global"):
        b.node(op, [x], [b.result(x, shape=(n, c, *[1] * len(spatial)), exact=x.exact and op == "GlobalMaxPool")])
        return True
    w = _window(b, spatial)
    ceil = int(b.rng.random() < 0.3)
    out = [_out_size(d, k, s, dl, p0, p1, bool(ceil)) for d, k, s, dl, p0, p1 in zip(
        spatial, w["kernel_shape"], w["strides"], w["dilations"], w["pads"][:len(spatial)], w["pads"][len(spatial):])]
    # ceil mode may not start a window in the end padding (ONNX drops it); keep clear of that case
    if min(out) < 1 or ceil and any((o - 1) * s >= d + p0 for o, s, d, p0 in zip(out, w["strides"], spatial,
                                                                                w["pads"][:len(spatial)])):
        return False
    shape = (n, c, *out)
    outputs = [b.result(x, shape=shape, exact=x.exact and op == "MaxPool")]
    attrs = dict(w, ceil_mode=ceil)
    if op == "MaxPool":
        if b.rng.random() < 0.3 and x.exact:
            outputs.append(b.result(x, shape=shape, dtype=np.dtype(np.int64), lo=0, hi=b.numel(x.shape), exact=True))
            attrs["storage_order"] = int(b.rng.integers(2))
    else:
        attrs["count_include_pad"] = int(b.rng.integers(2))
        outputs[0] = b.result(x, shape=shape, lo=min(x.lo, 0.0), hi=max(x.hi, 0.0), exact=False)
    b.node(op, [x], outputs, **attrs)
    return True


def _channel(b: Builder, c: int, lo=-2.0, hi=2.0) -> Tensor:
    return b.const(b.values((c,), np.dtype(b.float_dtype), lo, hi))


def _channel_scale(b: Builder, c: int) -> Tensor:
    return b.const(b.scales((c,), b.float_dtype))


def norm(b: Builder) -> bool:
    """LayerNormalization / RMSNormalization over trailing axes, or a CNN norm over channels."""
    op = b.choice(["LayerNormalization", "RMSNormalization", "BatchNormalization", "InstanceNormalization", "LRN"])
    if op in ("LayerNormalization", "RMSNormalization"):
        x = b.pick_float()
        x = b.scaled(x, 100.0 if x.dtype == np.float32 else 8.0)
        axis = int(b.rng.integers(-x.rank, x.rank)) if x.rank else 0
        a = axis % max(x.rank, 1)
        tail = x.shape[a:]
        if any(isinstance(d, str) for d in tail):
            return False
        n = math.prod(tail)
        scale_shape = tail if b.rng.random() < 0.8 else tail[-1:]
        scale = b.const(b.scales(scale_shape, x.dtype))
        inputs = [x, scale] + ([b.const(b.values(scale_shape, np.dtype(x.dtype), -2, 2))]
                               if op == "LayerNormalization" and b.rng.random() < 0.7 else [])
        bound = 2 * math.sqrt(n) + 2
        eps = b.choice([1e-5, 1e-6, 1e-3])
        b.node(op, inputs, [b.result(x, lo=-bound, hi=bound, exact=False)], axis=axis, epsilon=eps)
        return True
    x = _image(b, 2 if op == "LRN" else None)  # onnxruntime runs LRN on 4-D input only
    c = x.shape[1]
    if op == "BatchNormalization":
        inputs = [x, _channel_scale(b, c), _channel(b, c), _channel(b, c), _channel(b, c, 0.5, 2.0)]
        bound = (x.magnitude + 2) / math.sqrt(0.5) * 2 + 2
        b.node(op, inputs, [b.result(x, lo=-bound, hi=bound, exact=False)], epsilon=1e-5)
    elif op == "InstanceNormalization":
        n = b.numel(x.shape[2:])
        bound = 2 * math.sqrt(n) + 2
        b.node(op, [b.scaled(x, 100.0), _channel_scale(b, c), _channel(b, c)], [b.result(x, lo=-bound, hi=bound,
                                                                                   exact=False)], epsilon=1e-5)
    else:
        size = int(b.choice([1, 3, 5]))
        b.node(op, [x], [b.result(x, exact=False)], size=size, alpha=b.choice([1e-4, 0.5]),
               beta=b.choice([0.75, 0.5]), bias=b.choice([1.0, 2.0]))
    return True


# --------------------------------------------------------------- transformer ops
def attention(b: Builder) -> bool:
    """ONNX Attention (opset 23): 4-D or 3-D, grouped heads, causal or a mask, custom scale."""
    batch, hq = b.choice([1, 2]), b.choice([1, 2, 4])
    hkv = b.choice([h for h in (1, 2, 4) if hq % h == 0])
    sq, skv = b.choice([1, 3, 5, 8]), b.choice([1, 4, 5, 8])
    d, dv = b.choice([4, 8, 16]), b.choice([4, 8])
    if b.rng.random() < 0.7:
        sq = skv
    three = b.rng.random() < 0.3
    q = b.leaf((batch, sq, hq * d) if three else (batch, hq, sq, d), lo=-2, hi=2)
    k = b.leaf((batch, skv, hkv * d) if three else (batch, hkv, skv, d), lo=-2, hi=2)
    v = b.leaf((batch, skv, hkv * dv) if three else (batch, hkv, skv, dv))
    attrs = {"q_num_heads": hq, "kv_num_heads": hkv} if three else {}
    inputs = [q, k, v]
    if b.rng.random() < 0.5:
        attrs["is_causal"] = 1
    elif b.rng.random() < 0.5:
        mask_shape = b.choice([(sq, skv), (1, 1, sq, skv), (batch, 1, sq, skv), (1, sq, skv)])
        if b.rng.random() < 0.5:
            keep = b.rng.random(mask_shape) < 0.8
            keep[..., 0] = True  # every query sees one key
            inputs.append(b.const(keep))
        else:
            inputs.append(b.leaf(mask_shape, lo=-4, hi=0))
    if b.rng.random() < 0.4:
        attrs["scale"] = float(b.choice([0.1, 0.5, 1.0]))
    shape = (batch, sq, hq * dv) if three else (batch, hq, sq, dv)
    b.node("Attention", inputs, [b.result(v, shape=shape, exact=False)], **attrs)
    return True


def rotary(b: Builder) -> bool:
    """ONNX RotaryEmbedding (opset 23): [B, H, S, D] or [B, S, H*D], caches by batch or by
    position ids, interleaved or halves, whole or partial rotation."""
    batch, heads, seq, d = b.choice([1, 2]), b.choice([1, 2, 3]), b.choice([1, 3, 4, 8]), b.choice([4, 8, 16])
    rot = b.choice([d, d, d // 2]) if d >= 8 else d
    three = b.rng.random() < 0.3
    x = b.leaf((batch, seq, heads * d) if three else (batch, heads, seq, d))
    angles = b.rng.uniform(0, 6.3, (batch, seq, rot // 2))
    attrs = {"interleaved": int(b.rng.integers(2))}
    if rot != d:
        attrs["rotary_embedding_dim"] = rot
    if three:
        attrs["num_heads"] = heads
    if b.rng.random() < 0.5:
        positions = b.rng.integers(0, 12, (batch, seq)).astype(np.int64)
        table = b.rng.uniform(0, 6.3, (12, rot // 2))
        cos, sin = (b.const(f(table).astype(b.float_dtype)) for f in (np.cos, np.sin))
        inputs = [x, cos, sin, b.const(positions)]
    else:
        cos, sin = (b.const(f(angles).astype(b.float_dtype)) for f in (np.cos, np.sin))
        inputs = [x, cos, sin]
    b.node("RotaryEmbedding", inputs, [b.result(x, lo=-2 * x.magnitude, hi=2 * x.magnitude, exact=False)], **attrs)
    return True


GENERATORS = {
    "ReduceSum": reduce, "ArgMax": arg, "Softmax": softmax, "CumSum": cumsum, "Clip": clip, "MatMul": matmul,
    "Gemm": gemm, "Conv": conv, "MaxPool": pool, "LayerNormalization": norm, "Attention": attention,
    "RotaryEmbedding": rotary, "MatMulInteger": matmul_integer,
}
COVERS = {
    "ReduceSum": set(REDUCE), "ArgMax": {"ArgMin"}, "Softmax": {"LogSoftmax"},
    "MaxPool": {"AveragePool", "GlobalAveragePool", "GlobalMaxPool"},
    "LayerNormalization": {"RMSNormalization", "BatchNormalization", "InstanceNormalization", "LRN"},
}
