"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger.

The ops quantized graphs are written in (``ir.passes.quantize``), with ONNX's semantics at
opset 23: a scale (and zero point) per tensor, per ``axis`` slice, or per ``block_size``
elements along ``axis``.
"""

from __future__ import annotations

import math

from ..dtypes import DType
from ..graph import Graph, Node
from ..types import TensorType
from .common import axis, per_output_element
from .linalg import matmul_contractions, matmul_flops, matmul_shape
from .registry import InferContext, Pattern, lookup, register


def _check_scale(ctx: InferContext) -> None:
    """The scale's shape must fit the input: one scale, one per ``axis`` slice, or one per block."""
    x, scale, block = ctx.shape(0), ctx.shape(1), ctx.attr("block_size", 0)
    if x is None or scale is None or not block and math.prod(d if isinstance(d, int) else 2 for d in scale) == 1:
        return
    ax = axis(ctx, ctx.attr("axis", 1), len(x))
    if len(scale) != (len(x) if block else 1):
        ctx.fail(f"scale of shape {tuple(scale)} fits neither one scale per axis-{ax} slice nor per block "
                 f"(input {tuple(x)}, block_size {block})")
    have, dim = scale[ax if block else 0], x[ax]
    want = -(-dim // block) if block and isinstance(dim, int) else dim
    if isinstance(have, int) and isinstance(want, int) and have != want:
        ctx.fail(f"axis {ax} of the input ({x[ax]} elements, block_size {block}) needs {want} scales, got {have}")


@register("DequantizeLinear", "elementwise", pattern=Pattern.INJECTIVE, flops=per_output_element(2))
def _dequantize(ctx: InferContext) -> list[TensorType]:
    _check_scale(ctx)
    out = ctx.attr("output_dtype", 0)
    return [TensorType(DType.from_onnx(out) if out else ctx.dtype(1), ctx.shape(0))]


@register("QuantizeLinear", "elementwise", pattern=Pattern.INJECTIVE, flops=per_output_element(3))
def _quantize(ctx: InferContext) -> list[TensorType]:
    _check_scale(ctx)
    out = ctx.attr("output_dtype", 0)
    dtype = DType.from_onnx(out) if out else ctx.dtype(2) if ctx.has(2) else DType.UINT8
    return [TensorType(dtype, ctx.shape(0))]


@register("DynamicQuantizeLinear", "elementwise", pattern=Pattern.OPAQUE, flops=per_output_element(5))
def _dynamic_quantize(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.UINT8, ctx.shape(0)), TensorType(DType.FLOAT32, ()), TensorType(DType.UINT8, ())]


@register("MatMulInteger", "matmul", pattern=Pattern.CONTRACTION, flops=matmul_flops,
          contractions=matmul_contractions)
def _matmul_integer(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.INT32, matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))]


def decodes_stored_weight(graph: Graph, node: Node) -> bool:
    """A DequantizeLinear of a constant, a Cast widening a float constant, or a Cast of narrow
    integer codes (at most 8 bits) read only as a product's weight (BitNet's ternary codes,
    stored int4): a weight deliberately stored in a narrow format (``ir.passes.quantize``, the
    BitNet builder), which folding would turn back into a wide float."""
    if not graph.is_const(node.inputs[0]):
        return False
    if node.op_type == "DequantizeLinear":
        return True
    if node.op_type != "Cast":
        return False
    source, target = graph.type_of(node.inputs[0]).dtype, graph.type_of(node.outputs[0]).dtype
    if source is None or target is None or not target.is_float:
        return False
    if source.is_float:
        return target.itemsize > source.itemsize
    return source.is_int and source.itemsize <= 1 and _read_as_weight_only(graph, node.outputs[0])


def integer_product(graph: Graph, node: Node) -> bool:
    """A MatMul of 8-bit integer rows by integer codes: its A is integer codes of at most 8 bits
    times one scale per row (BitNet's per-token int8 activations, transformers' ActQuant: a
    Round, a Clip to the int8 range, a Div by a scale constant along the last axis) and its B
    integer codes of at most 8 bits decoded by a Cast or a per-tensor DequantizeLinear. Its
    arithmetic is then an int8 product accumulated in int32 with the two scales applied after,
    as BitNet's W1.58A8 kernels run it (Ma et al., "The Era of 1-bit LLMs", arXiv:2402.17764,
    2024, and Microsoft's bitnet.cpp)."""
    return node.op_type == "MatMul" and len(node.inputs) == 2 and _integer_rows(graph, node.inputs[0]) \
        and _integer_codes(graph, node.inputs[1])


def _integer_rows(graph: Graph, value: str) -> bool:
    div = graph.producer(value)
    clip = graph.producer(div.inputs[0]) if div is not None and div.op_type == "Div" else None
    if clip is None or clip.op_type != "Clip" or len(clip.inputs) < 3:
        return False
    rounded = graph.producer(clip.inputs[0])
    low, high = (graph.const_data(v) if v else None for v in clip.inputs[1:3])
    scale = graph.type_of(div.inputs[1])
    per_row = scale.is_static and (not scale.shape or scale.shape[-1] == 1)
    return rounded is not None and rounded.op_type == "Round" and per_row and low is not None \
        and high is not None and -128 <= float(low) and float(high) <= 127


def _integer_codes(graph: Graph, value: str) -> bool:
    decode = graph.producer(value)
    if decode is None or not decodes_stored_weight(graph, decode):
        return False
    codes = graph.type_of(decode.inputs[0]).dtype
    if codes is None or not codes.is_int or codes.itemsize > 1:
        return False
    return decode.op_type == "Cast" or len(decode.inputs) < 3 and not graph.type_of(decode.inputs[1]).shape


def _read_as_weight_only(graph: Graph, value: str) -> bool:
    """Every reader of ``value`` is a product reading it as its B operand (input 1)."""
    readers = graph.consumers(value)
    return bool(readers) and value not in graph.outputs and all(
        index == 1 and lookup(r.op_type, r.domain).pattern is Pattern.CONTRACTION for r, index in readers)
