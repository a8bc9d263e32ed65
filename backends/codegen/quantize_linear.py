"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear (ONNX opset 23 semantics).

Q and DQ are pointwise: an element and the scale (and zero point) of its slice or block,
found by index arithmetic on the output index, so a QDQ pair fuses into the loop of its
reader. Arithmetic is float32; a quotient whose ONNX type is narrower (float16 inputs and
scales, or the ``precision`` attribute) is rounded to that type, which gives the reference's
result exactly (one division rounded twice, f32 then f16, is correctly rounded). Integer codes
round half to even and saturate; float8 codes round to nearest even, saturating unless
``saturate=0``.

DynamicQuantizeLinear is a whole-tensor kernel: one pass for the range (widened to include
0), one to quantize with the scale and zero point it gives. An all-zero tensor gets scale 1,
as onnxruntime gives it (ONNX's formula divides 0 by 0 there).
"""

from __future__ import annotations

import ml_dtypes
from llvmlite import ir as ll

from ir.dtypes import DType

from .elementwise import convert, fconst
from .emit import F32
from .minifloat import MINIFLOATS
from .rules import anchor, pointwise

UINT8_RANGE = (0.0, 255.0)


def scale_index(ctx, node, idx: list[ll.Value]) -> list[ll.Value]:
    """Index of the scale (and zero point) that applies to element ``idx`` of input 0."""
    shape = ctx.shape(node.inputs[1])
    block = node.attrs.get("block_size", 0)
    if not block and all(d == 1 for d in shape):
        return [ctx.k.i64(0)] * len(shape)
    axis = node.attrs.get("axis", 1) % len(idx)
    if not block:
        return [idx[axis]]
    return [ctx.b.udiv(i, ctx.k.i64(block)) if d == axis else i for d, i in enumerate(idx)]


def _f32(ctx, name: str, idx) -> ll.Value:
    return convert(ctx, ctx.read(name, idx), ctx.dtype(name), DType.FLOAT32)


def _optional(node, index: int) -> str | None:
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index] else None


@pointwise("DequantizeLinear")
def dequantize(ctx, node, idx):
    x, scale = node.inputs[:2]
    at = scale_index(ctx, node, idx)
    value = _f32(ctx, x, idx)
    zero = _optional(node, 2)
    if zero is not None and ctx.dtype(x) not in MINIFLOATS:  # float codes have no zero point
        value = ctx.b.fsub(value, _f32(ctx, zero, at))
    return ctx.b.fmul(value, _f32(ctx, scale, at))


def _division_type(node, x: DType, scale: DType) -> DType:
    """The type ONNX divides in: the ``precision`` attribute, else the wider of the two operands."""
    if node.attrs.get("precision", 0):
        return DType.from_onnx(node.attrs["precision"])
    return x if x.itemsize >= scale.itemsize else scale


@pointwise("QuantizeLinear")
def quantize(ctx, node, idx):
    x, scale = node.inputs[:2]
    k, b = ctx.k, ctx.b
    at = scale_index(ctx, node, idx)
    out = ctx.dtype(node.outputs[0])
    q = b.fdiv(_f32(ctx, x, idx), _f32(ctx, scale, at))
    division = _division_type(node, ctx.dtype(x), ctx.dtype(scale))
    if division in (DType.FLOAT16, DType.BFLOAT16):
        q = k.widen(k.narrow(q, division), division)
    zero = _optional(node, 2)
    if out in MINIFLOATS:
        if out is DType.FLOAT4E2M1 and zero is not None:
            q = b.fadd(q, _f32(ctx, zero, at))
        return convert(ctx, q, DType.FLOAT32, out, saturate=bool(node.attrs.get("saturate", 1)))
    q = k.intrinsic("llvm.roundeven", [q])
    if zero is not None:
        q = b.fadd(q, _f32(ctx, zero, at))
    info = ml_dtypes.iinfo(out.numpy)
    return convert(ctx, saturate(ctx, q, (info.min, info.max)), DType.FLOAT32, out)


def saturate(ctx, q: ll.Value, bounds: tuple[float, float]) -> ll.Value:
    """Clamp to the code range; NaN gives the lowest code, as numpy's conversion then clip does on x86."""
    low = ctx.k.intrinsic("llvm.maxnum", [q, fconst(q, bounds[0])])
    return ctx.k.intrinsic("llvm.minnum", [low, fconst(q, bounds[1])])


@anchor("DynamicQuantizeLinear")
def dynamic_quantize(ctx, node):
    """y = saturate(round(x / scale) + zero_point) over uint8, with scale = (max - min) / 255 of
    x's range widened to include 0 (1 if that is empty), and zero_point = round(-min / scale)."""
    k, b = ctx.k, ctx.b
    x = node.inputs[0]
    y, y_scale, y_zero = node.outputs
    shape = ctx.shape(x)
    bounds = k.alloca(F32, 2)
    for i in (0, 1):
        b.store(ll.Constant(F32, 0.0), b.gep(bounds, [k.i64(i)]))
    with k.nest(shape, name="r") as idx:  # one task (extent 1): the scale needs the whole tensor
        value = ctx.read(x, idx)
        for i, fn in ((0, "llvm.minnum"), (1, "llvm.maxnum")):
            slot = b.gep(bounds, [k.i64(i)])
            b.store(k.intrinsic(fn, [b.load(slot), value]), slot)
    lo, hi = (b.load(b.gep(bounds, [k.i64(i)])) for i in (0, 1))
    scale = b.fdiv(b.fsub(hi, lo), fconst(lo, UINT8_RANGE[1]))
    scale = b.select(b.fcmp_ordered("==", scale, fconst(scale, 0.0)), fconst(scale, 1.0), scale)
    zero = k.intrinsic("llvm.roundeven", [saturate(ctx, b.fsub(fconst(lo, 0.0), b.fdiv(lo, scale)), UINT8_RANGE)])
    ctx.write(y_scale, [], scale)
    ctx.write(y_zero, [], convert(ctx, zero, DType.FLOAT32, DType.UINT8))
    with k.nest(shape, name="q") as idx:
        q = b.fadd(k.intrinsic("llvm.roundeven", [b.fdiv(ctx.read(x, idx), scale)]), zero)
        ctx.write(y, idx, convert(ctx, saturate(ctx, q, UINT8_RANGE), DType.FLOAT32, DType.UINT8))
    return 1

