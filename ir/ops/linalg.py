"""Matrix products: MatMul (numpy semantics, batched and broadcast), MatMulInteger and Gemm."""

from __future__ import annotations

from ..dtypes import DType
from ..types import TensorType
from .common import broadcast
from .registry import InferContext, numel, register


def matmul_shape(ctx: InferContext, a, b):
    """numpy.matmul shape rule, including 1-D operands and batch broadcasting."""
    if a is None or b is None:
        return None
    a1, b1 = len(a) == 1, len(b) == 1
    a2 = (1,) + tuple(a) if a1 else tuple(a)
    b2 = tuple(b) + (1,) if b1 else tuple(b)
    k_a, k_b = a2[-1], b2[-2]
    if isinstance(k_a, int) and isinstance(k_b, int) and k_a != k_b:
        ctx.fail(f"inner dimensions differ: {tuple(a)} @ {tuple(b)}")
    batch = broadcast(ctx, [a2[:-2], b2[:-2]])
    out = batch + (a2[-2], b2[-1])
    if a1:
        out = out[:-2] + out[-1:]
    if b1:
        out = out[:-1]
    return out


def matmul_flops(ctx: InferContext, outs: list[TensorType]) -> int:
    """2·M·N·K per output batch: one multiply and one add per MAC."""
    k = ctx.shape(0)[-1] if ctx.shape(0) else 0
    return 2 * numel(outs[0]) * (k if isinstance(k, int) else 0)


@register("MatMul", "matmul", flops=matmul_flops)
def _matmul(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(0), matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))]


@register("MatMulInteger", "matmul", flops=matmul_flops)
def _matmul_integer(ctx: InferContext) -> list[TensorType]:
    """(A - a_zero_point) @ (B - b_zero_point) of 8-bit integers, accumulated in int32."""
    return [TensorType(DType.INT32, matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))]


def _gemm_flops(ctx: InferContext, outs: list[TensorType]) -> int:
    a = ctx.shape(0)
    k = a[0] if ctx.attr("transA", 0) else a[1]
    bias = numel(outs[0]) if ctx.has(2) else 0
    return 2 * numel(outs[0]) * (k if isinstance(k, int) else 0) + bias


@register("Gemm", "matmul", flops=_gemm_flops)
def _gemm(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.shape(0), ctx.shape(1)
    if a is None or b is None:
        return [TensorType(ctx.dtype(0), None)]
    if len(a) != 2 or len(b) != 2:
        ctx.fail(f"Gemm takes 2-D operands, got {tuple(a)} and {tuple(b)}")
    m, k = (a[1], a[0]) if ctx.attr("transA", 0) else a
    k2, n = (b[1], b[0]) if ctx.attr("transB", 0) else b
    if isinstance(k, int) and isinstance(k2, int) and k != k2:
        ctx.fail(f"inner dimensions differ: {tuple(a)} and {tuple(b)} (transA={ctx.attr('transA', 0)}, "
                 f"transB={ctx.attr('transB', 0)})")
    return [TensorType(ctx.dtype(0), (m, n))]

