"""exp, log, tanh, erf and sigmoid as straight-line float32 IR that vectorizes.

A libm call (``tanhf``, ``erff``, or the ``expf`` an ``llvm.exp`` intrinsic becomes) keeps
a loop scalar: GELU, softmax and SiLU would run one element at a time. Here each function
is range reduction, a polynomial and bit manipulation, with no branch and no call, so the
loop vectorizer widens the loop that uses it to the CPU's vector width, and the same code
runs on any CPU LLVM targets (``llvm.fmuladd`` fuses where there is an FMA unit and is a
multiply and an add elsewhere). NaN and infinities come out as libm gives them.

Coefficients: ``scripts/fit_vector_math.py`` (near-minimax fits, printed with their error);
the measured error of each function in float32 ulps is bounded in ``tests/test_vector_math.py``.
Values of another float type (f64) keep the LLVM intrinsic or the libm call.
"""

from __future__ import annotations

import math

from llvmlite import ir as ll

from .emit import F32, I32

EXP = (4.9999999553e-01, 1.6666577319e-01, 4.1666853396e-02, 8.3631406146e-03, 1.3901281290e-03)
"""e^r = 1 + r + r^2 EXP(r) for |r| <= ln2/2."""
LOG = (3.3333331174e-01, -2.4999993997e-01, 2.0000714779e-01, -1.6668057326e-01, 1.4249321953e-01,
       -1.2420147644e-01, 1.1677014435e-01, -1.1514571481e-01, 7.0375934067e-02)
"""log(1 + f) = f - f^2/2 + f^3 LOG(f) for sqrt(1/2) <= 1 + f < sqrt(2)."""
TANH = (-3.3333333170e-01, 1.3333303440e-01, -5.3959244101e-02, 2.1768833614e-02, -8.3437386195e-03,
        2.2925601299e-03)
"""tanh(x) = x + x^3 TANH(x^2) for |x| < TANH_SPLIT."""
ERF = (1.1283791669e+00, -3.7612636066e-01, 1.1283733003e-01, -2.6861584713e-02, 5.2067474285e-03,
       -8.2111037241e-04, 8.6753901021e-05)
"""erf(x) = x ERF(x^2) for |x| < ERF_SPLIT."""
ERFCX = (4.7728640092e-01, -1.7077443140e-01, 1.1942843614e-02, 5.2246185416e-02, -6.1327655699e-02,
         4.3374468496e-02, -1.7356669568e-02, -5.4135823895e-03, 2.2563785192e-02, -3.1910678399e-02,
         2.0251700845e-02)
"""erfc(x) = exp(-x^2) / x * ERFCX(1/x - ERFCX_CENTER) for ERF_SPLIT <= x < ERF_ONE."""

TANH_SPLIT = 0.625
"""Below it the odd polynomial; above it 1 - 2 / (exp(2|x|) + 1), which no longer cancels."""
TANH_ONE = 9.0
"""tanh(9) rounds to 1.0f; clamping there keeps exp(2|x|) finite."""
ERF_SPLIT, ERF_ONE = 0.875, 4.0
"""erf is a polynomial below ERF_SPLIT, 1 - erfc above it, and 1.0f from ERF_ONE (erfc(4) = 1.5e-8)."""
ERFCX_CENTER = (1 / ERF_ONE + 1 / ERF_SPLIT) / 2
"""ERFCX's variable is centred on its interval so float32 Horner evaluation does not cancel."""
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
"""ln 2 split so that n * LN2_HI is exact for the |n| <= 150 of float32 (Cody and Waite)."""
ROUND = 12582912.0
"""1.5 * 2^23: adding it rounds a float below 2^22 in magnitude to an integer held in the low mantissa bits."""
EXP_RANGE = (-104.0, 89.0)
"""exp is 0 below and inf above (in float32): inputs are clamped there so 2^n stays representable."""
FLT_MIN = 2.0 ** -126


def _is_f32(x: ll.Value) -> bool:
    t = x.type
    return (t.element if isinstance(t, ll.VectorType) else t) == F32


def _const(x: ll.Value, v: float) -> ll.Constant:
    return ll.Constant(x.type, float(v))


def _int(x: ll.Value, v: int) -> ll.Constant:
    return ll.Constant(_ints(x), int(v))


def _ints(x: ll.Value) -> ll.Type:
    return ll.VectorType(I32, x.type.count) if isinstance(x.type, ll.VectorType) else I32


def _fma(k, a, b, c):
    return k.intrinsic("llvm.fmuladd", [a, b, c])


def _poly(k, x, coefficients) -> ll.Value:
    """Horner: coefficients[0] + x * (coefficients[1] + ...)."""
    acc = _const(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = _fma(k, acc, x, _const(x, c))
    return acc


def _above(k, x, limit: float) -> ll.Value:
    """min(x, limit) that keeps NaN (the comparison is false for it)."""
    return k.b.select(k.b.fcmp_ordered(">", x, _const(x, limit)), _const(x, limit), x)


def _pow2(k, n: ll.Value, like: ll.Value) -> ll.Value:
    """2^n for integer vectors n with 1 - 127 <= n <= 127, as floats of ``like``'s shape."""
    b = k.b
    return b.bitcast(b.shl(b.add(n, _int(like, 127)), _int(like, 23)), like.type)


def exp(k, x: ll.Value) -> ll.Value:
    """e^x = 2^n e^r with n = round(x / ln 2); 2^n applied in two halves so that results
    near the ends of the range (denormal or infinite) round once, as libm's do."""
    if not _is_f32(x):
        return k.intrinsic("llvm.exp", [x])
    b = k.b
    lo, hi = EXP_RANGE
    x = _above(k, b.select(b.fcmp_ordered("<", x, _const(x, lo)), _const(x, lo), x), hi)
    shifted = _fma(k, x, _const(x, 1 / math.log(2)), _const(x, ROUND))
    n = b.fsub(shifted, _const(x, ROUND))
    r = _fma(k, n, _const(x, -LN2_HI), x)
    r = _fma(k, n, _const(x, -LN2_LO), r)
    p = b.fadd(_fma(k, b.fmul(r, r), _poly(k, r, EXP), r), _const(x, 1))
    whole = b.sub(b.bitcast(shifted, _ints(x)), b.bitcast(_const(x, ROUND), _ints(x)))
    half = b.ashr(whole, _int(x, 1))
    return b.fmul(b.fmul(p, _pow2(k, half, x)), _pow2(k, b.sub(whole, half), x))


def log(k, x: ll.Value) -> ll.Value:
    """log x = e ln 2 + log m with x = m 2^e, sqrt(1/2) <= m < sqrt(2); denormals are scaled
    up first; negative -> NaN, 0 -> -inf, inf and NaN pass through."""
    if not _is_f32(x):
        return k.intrinsic("llvm.log", [x])
    b = k.b
    tiny = b.fcmp_ordered("<", x, _const(x, FLT_MIN))
    scaled = b.select(tiny, b.fmul(x, _const(x, 2.0 ** 23)), x)
    bias = b.select(tiny, _int(x, 23), _int(x, 0))
    sqrt_half = 0x3F3504F3  # bits of sqrt(1/2)
    bits = b.add(b.bitcast(scaled, _ints(x)), _int(x, 0x3F800000 - sqrt_half))
    e = b.sitofp(b.sub(b.sub(b.lshr(bits, _int(x, 23)), _int(x, 127)), bias), x.type)
    m = b.bitcast(b.add(b.and_(bits, _int(x, 0x7FFFFF)), _int(x, sqrt_half)), x.type)
    f = b.fsub(m, _const(x, 1))
    z = b.fmul(f, f)
    y = _fma(k, b.fmul(f, z), _poly(k, f, LOG), _fma(k, e, _const(x, LN2_LO), b.fmul(z, _const(x, -0.5))))
    y = _fma(k, e, _const(x, LN2_HI), b.fadd(f, y))
    y = b.select(b.fcmp_ordered("==", x, _const(x, math.inf)), x, y)
    y = b.select(b.fcmp_ordered("==", x, _const(x, 0)), _const(x, -math.inf), y)
    y = b.select(b.fcmp_ordered("<", x, _const(x, 0)), _const(x, math.nan), y)
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


def tanh(k, x: ll.Value) -> ll.Value:
    if not _is_f32(x):
        return k.libm("tanh", [x])
    b = k.b
    ax = k.intrinsic("llvm.fabs", [x])
    small = _fma(k, b.fmul(x, b.fmul(x, x)), _poly(k, b.fmul(x, x), TANH), x)
    e = exp(k, b.fmul(_above(k, ax, TANH_ONE), _const(x, 2)))
    large = b.fsub(_const(x, 1), b.fdiv(_const(x, 2), b.fadd(e, _const(x, 1))))
    large = k.intrinsic("llvm.copysign", [large, x])
    return b.select(b.fcmp_ordered("<", ax, _const(x, TANH_SPLIT)), small, large)


def erf(k, x: ll.Value) -> ll.Value:
    if not _is_f32(x):
        return k.libm("erf", [x])
    b = k.b
    ax = k.intrinsic("llvm.fabs", [x])
    small = _fma(k, x, _poly(k, b.fmul(x, x), (ERF[0] - 1,) + ERF[1:]), x)  # x + x (ERF - 1): one rounding at the end
    clamped = _above(k, ax, ERF_ONE)
    t = b.fdiv(_const(x, 1), clamped)
    erfcx = _poly(k, b.fsub(t, _const(x, ERFCX_CENTER)), ERFCX)
    erfc = b.fmul(exp(k, b.fneg(b.fmul(clamped, clamped))), b.fmul(t, erfcx))
    large = k.intrinsic("llvm.copysign", [b.fsub(_const(x, 1), erfc), x])
    return b.select(b.fcmp_ordered("<", ax, _const(x, ERF_SPLIT)), small, large)


def sigmoid(k, x: ll.Value) -> ll.Value:
    """1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below: e^-|x| never overflows, so very
    negative x keep their tiny (even denormal) results instead of flushing to 0."""
    b = k.b
    e = exp(k, b.fneg(k.intrinsic("llvm.fabs", [x])))
    top = b.select(b.fcmp_ordered("<", x, _const(x, 0)), e, _const(x, 1))
    return b.fdiv(top, b.fadd(_const(x, 1), e))
