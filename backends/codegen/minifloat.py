"""Float formats narrower than f16, decoded to and rounded from f32 with integer ops.

One table (:data:`MINIFLOATS`) maps each dtype to its codec. The sign/exponent/mantissa
formats (float8 e4m3fn, e5m2 and their fnuz variants, float4 e2m1) share
:class:`MiniFloat`, parameterized by their bit layout and by where they keep inf and NaN;
the exponent-only float8 e8m0 has its own :class:`E8M0`. Rounding, overflow and NaN codes
follow ml_dtypes bit for bit (and onnx's ``to_float8e8m0`` for e8m0), so a Cast matches
what ``numpy_helper`` and onnx's reference produce. Codes live in the low bits of a byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir as ll

from ir.dtypes import DType

I8, I32, F32 = ll.IntType(8), ll.IntType(32), ll.FloatType()
QUIET_NAN_BITS = 0x7FC00000
ROUND_MODES = ("up", "down", "nearest")
"""Cast's ``round_mode`` values (they apply to e8m0 only)."""


@dataclass(frozen=True)
class MiniFloat:
    """A sign/exponent/mantissa format of ``bits`` bits. ``specials`` says where inf and NaN live:
    "ieee" (top exponent: inf and NaN, e5m2), "fn" (only S.1111.111 is NaN, no inf: e4m3fn),
    "fnuz" (no inf, no negative zero: its code 0x80 is the only NaN), "none" (float4: neither;
    overflow saturates and NaN becomes a zero, as ml_dtypes does)."""

    bits: int
    mantissa: int
    bias: int
    max_code: int
    specials: str

    @property
    def sign_bit(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def top_exponent(self) -> int:
        return (1 << (self.bits - 1 - self.mantissa)) - 1

    @property
    def overflow_code(self) -> int:
        """The magnitude a non-saturating overflow gives: inf, NaN, or the largest finite value."""
        return {"ieee": self.top_exponent << self.mantissa, "fn": self.sign_bit - 1,
                "fnuz": self.sign_bit, "none": self.max_code}[self.specials]

    @property
    def nan_code(self) -> int:
        """NaN's code, XORed with the input's sign bit (fnuz has one unsigned NaN; float4 turns
        NaN into the zero of the opposite sign, as ml_dtypes does)."""
        quiet = (self.top_exponent << self.mantissa) | (1 << (self.mantissa - 1))
        return {"ieee": quiet, "fn": self.sign_bit - 1, "fnuz": self.sign_bit, "none": self.sign_bit}[self.specials]

    def decode(self, k, raw: ll.Value) -> ll.Value:
        """Code -> f32: normals rebias into f32 bits, subnormals are mantissa * 2**min_exponent,
        every NaN is the quiet one (signed as coded)."""
        b, c = k.b, (lambda v: k.const(I32, v))
        code = b.zext(raw, I32)
        e = b.and_(b.lshr(code, c(self.mantissa)), c(self.top_exponent))
        m = b.and_(code, c((1 << self.mantissa) - 1))
        m_bits = b.shl(m, c(23 - self.mantissa))
        normal = b.bitcast(b.or_(b.shl(b.add(e, c(127 - self.bias)), c(23)), m_bits), F32)
        tiny = b.fmul(b.uitofp(m, F32), k.const(F32, 2.0 ** (1 - self.bias - self.mantissa)))
        value = b.bitcast(b.select(b.icmp_unsigned("==", e, c(0)), tiny, normal), I32)
        if self.specials == "ieee":
            special = b.select(b.icmp_unsigned("==", m, c(0)), c(0x7F800000), c(QUIET_NAN_BITS))
            value = b.select(b.icmp_unsigned("==", e, c(self.top_exponent)), special, value)
        elif self.specials == "fn":
            value = b.select(b.icmp_unsigned("==", b.and_(code, c(self.nan_code)), c(self.nan_code)),
                             c(QUIET_NAN_BITS), value)
        elif self.specials == "fnuz":  # the NaN takes the sign bit it is coded with, as in ml_dtypes
            value = b.select(b.icmp_unsigned("==", code, c(self.nan_code)), c(QUIET_NAN_BITS), value)
        sign = b.shl(b.and_(code, c(self.sign_bit)), c(32 - self.bits))
        return b.bitcast(b.or_(value, sign), F32)

    def encode(self, k, x: ll.Value, saturate: bool = False, round_mode: str = "nearest") -> ll.Value:
        """f32 -> the nearest code, ties to even (``round_mode`` is e8m0's alone). Past the largest
        finite value: clamp to it when ``saturate``, else overflow as the format does.

        With ``e`` the binary exponent of ``|x|`` raised to the smallest normal exponent,
        ``q = roundeven(|x| * 2**(mantissa - e))`` counts ulps, and the code is
        ``(e + bias - 1) << mantissa`` plus ``q``: subnormals, normals and a round-up into the
        next binade all come out right from that one sum.
        """
        b, c = k.b, (lambda v: k.const(I32, v))
        bits = b.bitcast(x, I32)
        sign = b.and_(b.lshr(bits, c(32 - self.bits)), c(self.sign_bit))
        ceiling = 2.0 ** ((self.max_code >> self.mantissa) - self.bias + 2)  # beyond any finite code
        a = k.intrinsic("llvm.minnum", [k.intrinsic("llvm.fabs", [x]), k.const(F32, ceiling)])
        if saturate:
            a = k.intrinsic("llvm.minnum", [a, k.const(F32, self.largest)])
        exponent = b.sub(b.lshr(b.bitcast(a, I32), c(23)), c(127))
        smallest = c(1 - self.bias)
        exponent = b.select(b.icmp_signed("<", exponent, smallest), smallest, exponent)
        scale = b.bitcast(b.shl(b.sub(c(127 + self.mantissa), exponent), c(23)), F32)
        q = b.fptoui(k.intrinsic("llvm.roundeven", [b.fmul(a, scale)]), I32)
        code = b.add(b.shl(b.add(exponent, c(self.bias - 1)), c(self.mantissa)), q)
        code = b.select(b.icmp_unsigned(">", code, c(self.max_code)), c(self.overflow_code), code)
        if self.specials == "fnuz":
            sign = b.select(b.icmp_unsigned("==", code, c(0)), c(0), sign)
        code = b.or_(code, sign)
        nan = b.xor(c(self.nan_code), c(0) if self.specials == "fnuz" else sign)
        return b.trunc(b.select(b.fcmp_unordered("uno", x, x), nan, code), I8)

    @property
    def largest(self) -> float:
        e, m = self.max_code >> self.mantissa, self.max_code & ((1 << self.mantissa) - 1)
        return (1 + m / (1 << self.mantissa)) * 2.0 ** (e - self.bias)


class E8M0:
    """Float8 e8m0fnu: a bare biased exponent (2**(code - 127)), no sign, 0xFF is NaN.
    Encoding follows onnx's ``to_float8e8m0``: the sign is dropped, and ``round_mode`` "up"
    (Cast's default) rounds any fraction up, "down" truncates, "nearest" rounds on the f32
    guard bit; ``saturate`` stops a round-up short of NaN."""

    def decode(self, k, raw: ll.Value) -> ll.Value:
        b, c = k.b, (lambda v: k.const(I32, v))
        code = b.zext(raw, I32)
        bits = b.select(b.icmp_unsigned("==", code, c(0)), c(0x400000), b.shl(code, c(23)))  # 2**-127 is subnormal
        bits = b.select(b.icmp_unsigned("==", code, c(0xFF)), c(QUIET_NAN_BITS), bits)
        return b.bitcast(bits, F32)

    def encode(self, k, x: ll.Value, saturate: bool = False, round_mode: str = "nearest") -> ll.Value:
        """``nearest`` by default, the mode under which decoding then encoding is the identity."""
        b, c = k.b, (lambda v: k.const(I32, v))
        bits = b.bitcast(x, I32)
        exponent = b.and_(b.lshr(bits, c(23)), c(0xFF))
        is_set = (lambda mask: b.icmp_unsigned("!=", b.and_(bits, c(mask)), c(0)))
        if round_mode == "up":
            up = is_set(0x7FFFFF)
        elif round_mode == "nearest":
            up = b.and_(is_set(0x400000), b.or_(is_set(0x3FFFFF), b.icmp_unsigned("!=", exponent, c(0))))
        else:  # down
            up = ll.Constant(ll.IntType(1), 0)
        if saturate:
            up = b.and_(up, b.icmp_unsigned("!=", exponent, c(0xFE)))
        code = b.add(exponent, b.zext(up, I32))
        code = b.select(b.icmp_unsigned("==", exponent, c(0xFF)), c(0xFF), code)
        return b.trunc(code, I8)


MINIFLOATS = {
    DType.FLOAT8E4M3: MiniFloat(8, 3, 7, 0x7E, "fn"),
    DType.FLOAT8E5M2: MiniFloat(8, 2, 15, 0x7B, "ieee"),
    DType.FLOAT8E4M3FNUZ: MiniFloat(8, 3, 8, 0x7F, "fnuz"),
    DType.FLOAT8E5M2FNUZ: MiniFloat(8, 2, 16, 0x7F, "fnuz"),
    DType.FLOAT4E2M1: MiniFloat(4, 1, 1, 0x7, "none"),
    DType.FLOAT8E8M0: E8M0(),
}
"""Every float format stored as a code in one byte, computed in f32."""
