"""Products over weights stored in a narrow format: the product decodes them itself.

A quantized graph (``ir.passes.quantize``) feeds each product's weight through a
DequantizeLinear of constant codes and scales, or a widening Cast of a float16 / bfloat16
constant. The product computes that op itself (``backends.grouping`` inlines it): no float32 copy of the weight is ever
made. MatMul, Gemm and FusedMatMul keep the codes packed in ``nr``-column panels at their
narrowest width (8, 4 or 2 bits, by the range the codes actually use: ternary codes take 2)
and decode one panel at a time, scaled per column or per group on the way. A product of many
rows decodes it into the K x nr float32 scratch panel the float kernel already streams, which
then serves every row tile of its task: the decode costs K * nr conversions per panel per task,
small next to the product's K * nr * rows multiply-adds. A decode-shaped product (one tile of
all its rows) decodes each K row straight into the registers its multiply-adds read
(:meth:`Panels.each_row`): every value is used once, so writing it to scratch would only add a
round trip through L2. Either way memory holds the low-bit codes only. Float8 codes decode
through float16 bits (e5m2 is the top byte of a float16; e4m3fn's bits shifted into a float16
are its value / 256, a factor folded into the scales). Conv reads each weight outside its
inner loop, so it evaluates the DequantizeLinear inline there.

Where panels do not apply (a zero point, a scale per reduction row, a weight narrower than
a vector) the product reads the weight dequantized once at compile time, exactly as
DequantizeLinear computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType
from ir.graph import Graph, Node
from ir.reference import run_nodes

from .emit import F16, F32, I8, I16, I32, Buffer

WIDENED = (DType.FLOAT16, DType.BFLOAT16)
"""Float types a product's weight may be stored in and Cast from."""


# ----------------------------------------------------------------- decoding
def _int_decoder(signed: bool) -> Callable:
    def decode(k, raw, bits, shift):
        """Code ``bits`` wide at bit ``shift`` of each byte -> f32 lanes."""
        b = k.b
        t = ll.VectorType(I32, raw.type.count)
        x = b.sext(raw, t) if signed else b.zext(raw, t)
        if bits < 8:
            x = b.shl(x, ll.Constant(t, 32 - bits - shift))
            x = (b.ashr if signed else b.lshr)(x, ll.Constant(t, 32 - bits))
        return (b.sitofp if signed else b.uitofp)(x, ll.VectorType(F32, raw.type.count))
    return decode


def _half_decoder(to_half_bits: Callable) -> Callable:
    def decode(k, raw, bits, shift):
        n = raw.type.count
        half = k.b.bitcast(to_half_bits(k.b, raw, ll.VectorType(I16, n)), ll.VectorType(F16, n))
        return k.b.fpext(half, ll.VectorType(F32, n))
    return decode


def _bf16(k, raw, bits, shift):
    n = raw.type.count
    wide = k.b.shl(k.b.zext(raw, ll.VectorType(I32, n)), ll.Constant(ll.VectorType(I32, n), 16))
    return k.b.bitcast(wide, ll.VectorType(F32, n))


def _e4m3_half_bits(b, raw, t):
    """e4m3fn's magnitude bits placed as a float16's exponent's low bits and mantissa's top bits:
    that float16 is the code's value / 256 (subnormals included). Sign-extended and shifted by 7,
    the magnitude lands in bits 7-13 and the sign fills bits 14-15; bit 14 is masked off."""
    return b.and_(b.shl(b.sext(raw, t), ll.Constant(t, 7)), ll.Constant(t, 0xBF80))


@dataclass(frozen=True)
class Codec:
    """How codes of one dtype sit in a panel and become f32: ``bits`` per code in the panel
    (integer codes: chosen from the codes' range), the decode function, and the factor the
    decoded value is off by (folded into the scales)."""

    storage: ll.Type
    decode: Callable
    integer: bool = False
    signed: bool = True
    factor: float = 1.0


CODECS = {
    DType.INT8: Codec(I8, _int_decoder(True), integer=True),
    DType.INT4: Codec(I8, _int_decoder(True), integer=True),
    DType.UINT8: Codec(I8, _int_decoder(False), integer=True, signed=False),
    DType.UINT4: Codec(I8, _int_decoder(False), integer=True, signed=False),
    DType.FLOAT8E5M2: Codec(I8, _half_decoder(lambda b, raw, t: b.shl(b.zext(raw, t), ll.Constant(t, 8)))),
    DType.FLOAT8E4M3: Codec(I8, _half_decoder(_e4m3_half_bits), factor=256.0),
    DType.FLOAT16: Codec(I16, _half_decoder(lambda b, raw, t: raw)),
    DType.BFLOAT16: Codec(I16, _bf16),
}
"""Every code type a product decodes from packed panels."""


def _packed_bits(codes: np.ndarray, signed: bool) -> int:
    """The narrowest of 2, 4 or 8 bits that holds every code (ternary codes fit in 2)."""
    lo, hi = (int(codes.min()), int(codes.max())) if codes.size else (0, 0)
    for bits in (2, 4):
        if (-(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1))) if signed else hi < (1 << bits):
            return bits
    return 8


# ------------------------------------------------------------ stored weights
@dataclass
class StoredWeight:
    """An absorbed weight: the op decoding it and, when panels apply, its codes as (K, N) with
    float32 scales as (groups, N), each group covering ``block`` rows of K."""

    producer: Node
    inputs: list[np.ndarray | None]
    opset: int
    codes: np.ndarray | None = None
    scales: np.ndarray | None = None
    block: int = 0

    def dequantized(self) -> np.ndarray:
        """The weight as float32 in the product's own layout, exactly as the absorbed op computes it."""
        out = self.producer.outputs[0]
        feeds = {v: a for v, a in zip(self.producer.inputs, self.inputs) if v}
        return run_nodes([self.producer], feeds, [out], self.opset)[out]


def stored_weight(ctx, name: str, trans_b: bool) -> StoredWeight | None:
    """The weight behind ``name`` if this product absorbed its decoding, else None."""
    producer = ctx.lowering.inlined.get(name)
    if producer is None:
        return None
    inputs = [ctx.const(v) for v in producer.inputs]
    weight = StoredWeight(producer, inputs, ctx.graph.opset)
    codes = inputs[0]
    if codes.ndim != 2 or ctx.dtype(producer.inputs[0]) not in CODECS:
        return weight
    k_axis = 1 if trans_b else 0
    if producer.op_type == "Cast":
        scales, block = np.ones((1, codes.shape[1 - k_axis]), np.float32), codes.shape[k_axis]
    else:
        layout = _scale_layout(producer, inputs, codes.shape, k_axis)
        if layout is None:
            return weight
        scales, block = layout
    weight.codes = codes.T if trans_b else codes
    weight.scales, weight.block = scales, block
    return weight


def _scale_layout(dq: Node, inputs: list, shape: tuple, k_axis: int) -> tuple[np.ndarray, int] | None:
    """(groups x N scales, rows per group) of a DequantizeLinear whose scales vary along N only, or in
    blocks along K; None for other layouts, a nonzero zero point, or a float8 NaN code."""
    codes, scale = inputs[0], inputs[1].astype(np.float32)
    zero = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    integer = DType.from_numpy(codes.dtype).is_int
    if zero is not None and integer and np.any(zero.astype(np.int64)):
        return None
    if not integer and np.isnan(codes.astype(np.float32)).any():
        return None
    n = shape[1 - k_axis]
    axis, block = dq.attrs.get("axis", 1) % 2, dq.attrs.get("block_size", 0)
    if scale.size == 1 and not block:
        return np.full((1, n), scale.reshape(()), np.float32), shape[k_axis]
    if not block and axis != k_axis:
        return scale.reshape(1, n), shape[k_axis]
    if block and axis == k_axis:
        return (scale if k_axis == 0 else scale.T), block
    return None


@dataclass
class Panels:
    """Packed codes and scales of a weight, and how to decode one panel of them."""

    codes: Buffer
    scales: Buffer
    codec: Codec
    bits: int
    rows: int  # K
    groups: int
    block: int
    scaled: bool
    nr: int
    """Columns per panel: the product's register block width."""

    def each_row(self, ctx, j0: ll.Value, visit: Callable) -> None:
        """Decode the panel of columns [j0, j0 + nr) one K row at a time, in order: ``visit(kk,
        vectors)`` gets row ``kk``'s nr columns as nr / vector_width scaled float32 vectors."""
        k, b = ctx.k, ctx.b
        nr, vw = self.nr, ctx.tiling.vector_width
        per = 8 // self.bits if self.codec.integer else 1
        panel = b.udiv(j0, k.i64(nr))
        code_rows = -(-self.rows // per)
        codes = b.gep(k.base(self.codes, self.codec.storage), [b.mul(panel, k.i64(code_rows * nr))])
        scales = b.gep(k.base(self.scales), [b.mul(panel, k.i64(self.groups * nr))])
        vec = lambda t: ll.VectorType(t, vw).as_pointer()  # noqa: E731

        def rows(byte_row, count):
            for sub in range(count):
                kk = b.add(b.mul(byte_row, k.i64(per)), k.i64(sub))
                group = b.udiv(kk, k.i64(self.block)) if self.groups > 1 else k.i64(0)
                vectors = []
                for v in range(nr // vw):
                    raw = b.load(b.bitcast(b.gep(codes, [b.add(b.mul(byte_row, k.i64(nr)), k.i64(v * vw))]),
                                           vec(self.codec.storage)), align=1)
                    value = self.codec.decode(k, raw, self.bits, sub * self.bits)
                    if self.scaled:
                        scale_at = b.gep(scales, [b.add(b.mul(group, k.i64(nr)), k.i64(v * vw))])
                        value = b.fmul(value, b.load(b.bitcast(scale_at, vec(F32)), align=4))
                    vectors.append(value)
                visit(kk, vectors)

        with k.loop(0, self.rows // per, name="dk") as byte_row:
            rows(byte_row, per)
        if self.rows % per:
            rows(k.i64(self.rows // per), self.rows % per)

    def decode_panel(self, ctx, scratch: ll.Value, j0: ll.Value) -> ll.Value:
        """Decode the panel of columns [j0, j0 + nr) into ``scratch`` (K x nr float32); returns it."""
        b, vw = ctx.b, ctx.tiling.vector_width

        def store(kk, vectors):
            for v, value in enumerate(vectors):
                out = b.gep(scratch, [b.add(b.mul(kk, ctx.k.i64(self.nr)), ctx.k.i64(v * vw))])
                b.store(value, b.bitcast(out, value.type.as_pointer()), align=4)

        self.each_row(ctx, j0, store)
        return scratch


def pack(ctx, weight: StoredWeight, name: str, nr: int) -> Panels | None:
    """Codes and scales in ``nr``-column panels (codes of consecutive K rows share a byte)."""
    if weight.codes is None:
        return None
    dtype = DType.from_numpy(weight.codes.dtype)
    codec = CODECS[dtype]
    rows, n = weight.codes.shape
    if codec.integer:
        raw = weight.codes.astype(np.int64)
        bits = _packed_bits(raw, codec.signed)
        per = 8 // bits
        raw = np.pad(raw & ((1 << bits) - 1), ((0, -rows % per), (0, -n % nr)))
        raw = raw.reshape(-1, per, raw.shape[1])
        raw = sum(raw[:, i] << (i * bits) for i in range(per)).astype(np.uint8)
    else:
        bits = codec.storage.width
        raw = np.pad(weight.codes.view(f"u{bits // 8}"), ((0, 0), (0, -n % nr)))
    panels = np.ascontiguousarray(raw.reshape(raw.shape[0], -1, nr).transpose(1, 0, 2))
    scales = np.pad(weight.scales * np.float32(codec.factor), ((0, 0), (0, -n % nr))).astype(np.float32)
    scale_panels = np.ascontiguousarray(scales.reshape(scales.shape[0], -1, nr).transpose(1, 0, 2))
    scaled = weight.producer.op_type != "Cast" or codec.factor != 1.0
    return Panels(ctx.add_constant(panels, f"{name}_codes"), ctx.add_constant(scale_panels, f"{name}_scales"),
                  codec, bits, rows, scales.shape[0], weight.block, scaled, nr)
