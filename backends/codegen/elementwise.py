"""Elementwise ops: unary math, broadcasting binary ops, comparisons, Where, Clip and casts.

Each table maps an op to a function of the builder-level operands. Float and integer
variants sit side by side; the op's input dtype picks the column.
"""

from __future__ import annotations

import math

from llvmlite import ir as ll

from ir.dtypes import DType

from . import vmath
from .emit import I1, I64, UNSIGNED, CodegenError, compute_type, is_float
from .minifloat import MINIFLOATS, ROUND_MODES
from .rules import pointwise


def fconst(x: ll.Value, v: float) -> ll.Constant:
    return ll.Constant(x.type, float(v))


# ------------------------------------------------------------------ unary math
def _softplus(k, x, a):
    """max(x, 0) + log1p(exp(-|x|)): log(1 + exp(x)) without overflow past x = 88 or
    cancellation for very negative x (the form onnxruntime uses)."""
    b = k.b
    tail = k.libm("log1p", [vmath.exp(k, b.fneg(k.intrinsic("llvm.fabs", [x])))])
    return b.fadd(k.intrinsic("llvm.maxnum", [x, fconst(x, 0)]), tail)


def _gelu(k, x, a):
    b = k.b
    half = b.fmul(fconst(x, 0.5), x)
    if a.get("approximate", "none") == "tanh":
        inner = b.fmul(fconst(x, math.sqrt(2 / math.pi)),
                       b.fadd(x, b.fmul(fconst(x, 0.044715), b.fmul(x, b.fmul(x, x)))))
        return b.fmul(half, b.fadd(fconst(x, 1), vmath.tanh(k, inner)))
    return b.fmul(half, b.fadd(fconst(x, 1), vmath.erf(k, b.fmul(x, fconst(x, 1 / math.sqrt(2))))))


def _select_neg(k, x, neg, pos=None):
    """``x < 0 ? neg : pos`` (NaN takes the ``pos`` branch, so it propagates)."""
    return k.b.select(k.b.fcmp_ordered("<", x, fconst(x, 0)), neg, x if pos is None else pos)


def _elu(k, x, alpha):
    b = k.b
    return _select_neg(k, x, b.fmul(fconst(x, alpha), b.fsub(vmath.exp(k, x), fconst(x, 1))))


def _hard_sigmoid(k, x, alpha, beta):
    return _clamp(k, k.b.fadd(k.b.fmul(fconst(x, alpha), x), fconst(x, beta)), 0.0, 1.0)


def _clamp(k, y, lo, hi):
    b = k.b
    y = b.select(b.fcmp_ordered("<", y, fconst(y, lo)), fconst(y, lo), y)
    return b.select(b.fcmp_ordered(">", y, fconst(y, hi)), fconst(y, hi), y)


FLOAT_UNARY = {
    "Abs": lambda k, x, a: k.intrinsic("llvm.fabs", [x]),
    "Neg": lambda k, x, a: k.b.fneg(x),
    "Relu": lambda k, x, a: _select_neg(k, x, fconst(x, 0)),
    "Sign": lambda k, x, a: k.b.select(k.b.fcmp_ordered(">", x, fconst(x, 0)), fconst(x, 1),
                                       k.b.select(k.b.fcmp_ordered("<", x, fconst(x, 0)), fconst(x, -1),
                                                  k.b.fmul(x, fconst(x, 0)))),
    "Floor": lambda k, x, a: k.intrinsic("llvm.floor", [x]),
    "Ceil": lambda k, x, a: k.intrinsic("llvm.ceil", [x]),
    "Round": lambda k, x, a: k.intrinsic("llvm.roundeven", [x]),
    "Reciprocal": lambda k, x, a: k.b.fdiv(fconst(x, 1), x),
    "Sqrt": lambda k, x, a: k.intrinsic("llvm.sqrt", [x]),
    "Exp": lambda k, x, a: vmath.exp(k, x),
    "Log": lambda k, x, a: vmath.log(k, x),
    "Sin": lambda k, x, a: k.intrinsic("llvm.sin", [x]),
    "Cos": lambda k, x, a: k.intrinsic("llvm.cos", [x]),
    "Sigmoid": lambda k, x, a: vmath.sigmoid(k, x),
    "Softplus": _softplus,
    "Softsign": lambda k, x, a: k.b.fdiv(x, k.b.fadd(fconst(x, 1), k.intrinsic("llvm.fabs", [x]))),
    "Elu": lambda k, x, a: _elu(k, x, a.get("alpha", 1.0)),
    "Selu": lambda k, x, a: k.b.fmul(fconst(x, a.get("gamma", 1.0507009873554805)),
                                     _elu(k, x, a.get("alpha", 1.6732632423543772))),
    "Celu": lambda k, x, a: _select_neg(k, x, k.b.fmul(fconst(x, a.get("alpha", 1.0)), k.b.fsub(
        vmath.exp(k, k.b.fdiv(x, fconst(x, a.get("alpha", 1.0)))), fconst(x, 1)))),
    "LeakyRelu": lambda k, x, a: _select_neg(k, x, k.b.fmul(x, fconst(x, a.get("alpha", 0.01)))),
    "ThresholdedRelu": lambda k, x, a: k.b.select(k.b.fcmp_ordered(">", x, fconst(x, a.get("alpha", 1.0))),
                                                  x, fconst(x, 0)),
    "HardSigmoid": lambda k, x, a: _hard_sigmoid(k, x, a.get("alpha", 0.2), a.get("beta", 0.5)),
    "HardSwish": lambda k, x, a: k.b.fmul(x, _hard_sigmoid(k, x, 1 / 6, 0.5)),
    "Mish": lambda k, x, a: k.b.fmul(x, vmath.tanh(k, _softplus(k, x, a))),
    "Tanh": lambda k, x, a: vmath.tanh(k, x),
    "Erf": lambda k, x, a: vmath.erf(k, x),
    "Gelu": _gelu,
    **{op: (lambda fn: lambda k, x, a: k.libm(fn, [x]))(op.lower())
       for op in ("Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh")},
}

INT_UNARY = {
    "Abs": lambda k, x, a: k.b.select(k.b.icmp_signed("<", x, ll.Constant(x.type, 0)), k.b.neg(x), x),
    "Neg": lambda k, x, a: k.b.neg(x),
    "Relu": lambda k, x, a: k.b.select(k.b.icmp_signed("<", x, ll.Constant(x.type, 0)), ll.Constant(x.type, 0), x),
    "Sign": lambda k, x, a: k.b.sub(k.b.zext(k.b.icmp_signed(">", x, ll.Constant(x.type, 0)), x.type),
                                    k.b.zext(k.b.icmp_signed("<", x, ll.Constant(x.type, 0)), x.type)),
    "Not": lambda k, x, a: k.b.xor(x, ll.Constant(x.type, 1 if x.type == I1 else -1)),
}


@pointwise(*FLOAT_UNARY, *INT_UNARY)
def unary(ctx, node, idx):
    x = ctx.read(node.inputs[0], idx)
    table = FLOAT_UNARY if is_float(x.type) else INT_UNARY
    if node.op_type not in table:
        raise CodegenError(f"{node.op_type} is not defined for {ctx.dtype(node.inputs[0])} inputs ({node.name})")
    return table[node.op_type](ctx.k, x, node.attrs)


@pointwise("IsNaN", "IsInf")
def predicate(ctx, node, idx):
    x, b = ctx.read(node.inputs[0], idx), ctx.b
    if not is_float(x.type):
        return ll.Constant(I1, 0)
    if node.op_type == "IsNaN":
        return b.fcmp_unordered("uno", x, x)
    inf = fconst(x, math.inf)
    pos = b.fcmp_ordered("==", x, inf) if node.attrs.get("detect_positive", 1) else ll.Constant(I1, 0)
    neg = b.fcmp_ordered("==", x, b.fneg(inf)) if node.attrs.get("detect_negative", 1) else ll.Constant(I1, 0)
    return b.or_(pos, neg)


# ----------------------------------------------------------------- binary math
def _int_div(k, x, y, unsigned):
    """Integer division that cannot trap: a zero divisor yields 0 (onnxruntime leaves it undefined)."""
    b = k.b
    zero = b.icmp_signed("==", y, ll.Constant(y.type, 0))
    safe = b.select(zero, ll.Constant(y.type, 1), y)
    q = b.udiv(x, safe) if unsigned else b.sdiv(x, safe)
    return b.select(zero, ll.Constant(y.type, 0), q)


def _int_mod(k, x, y, unsigned, fmod):
    b = k.b
    zero = b.icmp_signed("==", y, ll.Constant(y.type, 0))
    safe = b.select(zero, ll.Constant(y.type, 1), y)
    if unsigned:
        return b.urem(x, safe)
    r = b.srem(x, safe)
    if not fmod:  # Python sign convention: the result takes the divisor's sign
        fix = b.and_(b.icmp_signed("!=", r, ll.Constant(r.type, 0)),
                     b.icmp_signed("!=", b.icmp_signed("<", r, ll.Constant(r.type, 0)),
                                   b.icmp_signed("<", safe, ll.Constant(r.type, 0))))
        r = b.select(fix, b.add(r, safe), r)
    return b.select(zero, ll.Constant(y.type, 0), r)


def _float_mod(k, x, y, fmod):
    b = k.b
    r = b.frem(x, y)
    if fmod:
        return r
    fix = b.and_(b.fcmp_ordered("!=", r, fconst(r, 0)),
                 b.icmp_unsigned("!=", b.fcmp_ordered("<", r, fconst(r, 0)), b.fcmp_ordered("<", y, fconst(r, 0))))
    return b.select(fix, b.fadd(r, y), r)


FLOAT_BINARY = {
    "Add": lambda k, x, y, a: k.b.fadd(x, y),
    "Sub": lambda k, x, y, a: k.b.fsub(x, y),
    "Mul": lambda k, x, y, a: k.b.fmul(x, y),
    "Div": lambda k, x, y, a: k.b.fdiv(x, y),
    "Mod": lambda k, x, y, a: _float_mod(k, x, y, a.get("fmod", 0)),
    "PRelu": lambda k, x, y, a: _select_neg(k, x, k.b.fmul(x, y)),
    "Max": lambda k, x, y, a: k.intrinsic("llvm.maximum", [x, y]),
    "Min": lambda k, x, y, a: k.intrinsic("llvm.minimum", [x, y]),
}

INT_BINARY = {
    "Add": lambda k, x, y, a, u: k.b.add(x, y),
    "Sub": lambda k, x, y, a, u: k.b.sub(x, y),
    "Mul": lambda k, x, y, a, u: k.b.mul(x, y),
    "Div": lambda k, x, y, a, u: _int_div(k, x, y, u),
    "Mod": lambda k, x, y, a, u: _int_mod(k, x, y, u, a.get("fmod", 0)),
    "PRelu": lambda k, x, y, a, u: k.b.select(k.b.icmp_signed("<", x, ll.Constant(x.type, 0)), k.b.mul(x, y), x),
    "Max": lambda k, x, y, a, u: k.b.select(k.b.icmp_unsigned(">", x, y) if u else k.b.icmp_signed(">", x, y), x, y),
    "Min": lambda k, x, y, a, u: k.b.select(k.b.icmp_unsigned("<", x, y) if u else k.b.icmp_signed("<", x, y), x, y),
    "BitwiseAnd": lambda k, x, y, a, u: k.b.and_(x, y),
    "BitwiseOr": lambda k, x, y, a, u: k.b.or_(x, y),
    "BitwiseXor": lambda k, x, y, a, u: k.b.xor(x, y),
    "And": lambda k, x, y, a, u: k.b.and_(x, y),
    "Or": lambda k, x, y, a, u: k.b.or_(x, y),
    "Xor": lambda k, x, y, a, u: k.b.xor(x, y),
    "BitShift": lambda k, x, y, a, u: k.b.shl(x, y) if a.get("direction") == "LEFT" else k.b.lshr(x, y),
}

COMPARE = {"Equal": "==", "Less": "<", "Greater": ">", "LessOrEqual": "<=", "GreaterOrEqual": ">="}


def binary_op(ctx, op: str, x: ll.Value, y: ll.Value, dtype: DType, attrs: dict) -> ll.Value:
    """``x op y`` for operands already in ``dtype``'s compute type."""
    if op in COMPARE:
        if is_float(x.type):
            return ctx.b.fcmp_ordered(COMPARE[op], x, y)
        cmp = ctx.b.icmp_unsigned if dtype in UNSIGNED or x.type == I1 else ctx.b.icmp_signed
        return cmp(COMPARE[op], x, y)
    if is_float(x.type) and op in FLOAT_BINARY:
        return FLOAT_BINARY[op](ctx.k, x, y, attrs)
    if not is_float(x.type) and op in INT_BINARY:
        return INT_BINARY[op](ctx.k, x, y, attrs, dtype in UNSIGNED or x.type == I1)
    raise CodegenError(f"{op} is not defined for {dtype} operands")


@pointwise(*(set(FLOAT_BINARY) | set(INT_BINARY) | set(COMPARE) | {"Pow"}) - {"Max", "Min"})
def binary(ctx, node, idx):
    x = ctx.read_bcast(node.inputs[0], idx)
    y = ctx.read_bcast(node.inputs[1], idx)
    if node.op_type == "Pow":
        return power(ctx, x, y, ctx.dtype(node.inputs[0]), ctx.dtype(node.inputs[1]))
    return binary_op(ctx, node.op_type, x, y, ctx.dtype(node.inputs[0]), node.attrs)


def power(ctx, x, y, xt: DType, yt: DType) -> ll.Value:
    """Pow takes an exponent of any numeric type; integer bases are raised in double precision."""
    if is_float(x.type):
        return ctx.k.intrinsic("llvm.pow", [x, convert(ctx, y, yt, xt)])
    f64 = DType.FLOAT64
    raised = ctx.k.intrinsic("llvm.pow", [convert(ctx, x, xt, f64), convert(ctx, y, yt, f64)])
    return convert(ctx, raised, f64, xt)


VARIADIC = {"Sum": "Add", "Max": "Max", "Min": "Min", "Mean": "Add"}


@pointwise("Sum", "Mean", "Max", "Min")
def variadic(ctx, node, idx):
    """Sum / Mean / Max / Min over any number of inputs, folded pairwise with the binary op."""
    inputs = [i for i in node.inputs if i]
    dtype = ctx.dtype(inputs[0])
    acc = ctx.read_bcast(inputs[0], idx)
    for name in inputs[1:]:
        acc = binary_op(ctx, VARIADIC[node.op_type], acc, ctx.read_bcast(name, idx), dtype, {})
    if node.op_type == "Mean":
        acc = ctx.b.fdiv(acc, fconst(acc, len(inputs)))
    return acc


@pointwise("Where")
def where(ctx, node, idx):
    c, x, y = (ctx.read_bcast(name, idx) for name in node.inputs[:3])
    return ctx.b.select(c, x, y)


@pointwise("Clip")
def clip(ctx, node, idx):
    x = ctx.read(node.inputs[0], idx)
    dtype = ctx.dtype(node.inputs[0])
    for i, op in ((1, "Max"), (2, "Min")):
        if len(node.inputs) > i and node.inputs[i]:
            bound = ctx.read(node.inputs[i], [])
            below = binary_op(ctx, "Less" if op == "Max" else "Greater", x, bound, dtype, {})
            x = ctx.b.select(below, bound, x)
    return x


# ----------------------------------------------------------------------- casts
def convert(ctx, v: ll.Value, src: DType, dst: DType, saturate: bool = True, round_mode: str = "up") -> ll.Value:
    """Convert a compute-type value between dtypes (onnx Cast semantics, no traps). ``saturate``:
    float8 results clamp to their largest finite value instead of overflowing to inf / NaN;
    ``round_mode``: how float8 e8m0 rounds. Floats become integers as ml_dtypes and numpy on
    x86 make them: truncated, then wrapped to the width (NaN, inf and the huge give 0)."""
    b, t = ctx.b, compute_type(dst)
    if dst in (DType.FLOAT16, DType.BFLOAT16) and src is not dst:  # computed in f32, rounded to dst
        return ctx.k.widen(ctx.k.narrow(convert(ctx, v, src, DType.FLOAT32), dst), dst)
    if dst in MINIFLOATS and src is not dst:
        code = MINIFLOATS[dst].encode(ctx.k, convert(ctx, v, src, DType.FLOAT32), saturate, round_mode)
        return ctx.k.widen(code, dst)
    if v.type == t and (src.is_float == dst.is_float):
        return v
    if dst is DType.BOOL:
        return b.fcmp_unordered("!=", v, fconst(v, 0)) if is_float(v.type) else b.icmp_unsigned("!=", v, ll.Constant(v.type, 0))
    if is_float(t):
        if is_float(v.type):
            return b.fpext(v, t) if t.intrinsic_name == "f64" else b.fptrunc(v, t)
        return b.uitofp(v, t) if src in UNSIGNED or v.type == I1 else b.sitofp(v, t)
    if is_float(v.type) and t.width < 64:
        exact = b.fcmp_ordered("<", ctx.k.intrinsic("llvm.fabs", [v]), fconst(v, 2.0 ** 63))
        return b.trunc(b.fptosi(b.select(exact, v, fconst(v, 0)), I64), t)
    if is_float(v.type):
        return b.fptoui(v, t) if dst in UNSIGNED else b.fptosi(v, t)
    if v.type.width > t.width:
        return b.trunc(v, t)
    return b.zext(v, t) if src in UNSIGNED or v.type == I1 else b.sext(v, t)


@pointwise("Cast", "CastLike")
def cast(ctx, node, idx):
    round_mode = node.attrs.get("round_mode", "up")
    if round_mode not in ROUND_MODES:
        raise CodegenError(f"{node.name}: round_mode must be one of {', '.join(ROUND_MODES)}, got {round_mode!r}")
    return convert(ctx, ctx.read(node.inputs[0], idx), ctx.dtype(node.inputs[0]), ctx.dtype(node.outputs[0]),
                   bool(node.attrs.get("saturate", 1)), round_mode)
