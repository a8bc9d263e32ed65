"""Matrix products: MatMul (numpy semantics, batched and broadcast) and Gemm."""

from __future__ import annotations

import math

from ..types import TensorType
from .common import broadcast
from .contraction import Contraction, Gemm, Operand, contiguous_strides
from .registry import InferContext, Pattern, numel, register


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


def matmul_contractions(ctx: InferContext, outs: list[TensorType]) -> list[Contraction]:
    """One product per output batch element; B is input 1, (..., k, n) broadcast over the
    output's batch dims (stride 0 along a broadcast dim), or a (k,) vector. A B shared by the
    whole batch (a weight) folds the batch into M (``Contraction.folded``)."""
    a, w, out = ctx.shape(0), ctx.shape(1), outs[0].shape
    m = a[-2] if len(a) > 1 else 1
    n = out[-1] if len(w) > 1 else 1
    gemm = Gemm(max(1, math.prod(out) // max(1, m * n)), m, n, a[-1])
    batch_shape = tuple(out[:len(out) - (len(a) > 1) - (len(w) > 1)])
    if len(w) == 1:
        return [Contraction(gemm, Operand(1, batch_shape, (0,) * len(batch_shape), 1, 0)).folded()]
    strides = contiguous_strides(w)
    lead = len(batch_shape) - (len(w) - 2)
    batch = [0] * lead + [s if d != 1 else 0 for d, s in zip(w[:-2], strides[:-2])]
    return [Contraction(gemm, Operand(1, batch_shape, tuple(batch), w[-1], 1)).folded()]


@register("MatMul", "matmul", pattern=Pattern.CONTRACTION, flops=matmul_flops, contractions=matmul_contractions)
def _matmul(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(0), matmul_shape(ctx, ctx.shape(0), ctx.shape(1)))]


def _gemm_flops(ctx: InferContext, outs: list[TensorType]) -> int:
    a = ctx.shape(0)
    k = a[0] if ctx.attr("transA", 0) else a[1]
    bias = numel(outs[0]) if ctx.has(2) else 0
    return 2 * numel(outs[0]) * (k if isinstance(k, int) else 0) + bias


def _gemm_contractions(ctx: InferContext, outs: list[TensorType]) -> list[Contraction]:
    """One (m x k) by (k x n) product; B is input 1, read transposed under ``transB``."""
    a, w, out = ctx.shape(0), ctx.shape(1), outs[0].shape
    row, col = (1, w[1]) if ctx.attr("transB", 0) else (w[1], 1)
    return [Contraction(Gemm(1, out[0], out[1], a[0] if ctx.attr("transA", 0) else a[1]), Operand(1, (), (), row, col))]


@register("Gemm", "matmul", pattern=Pattern.CONTRACTION, flops=_gemm_flops, contractions=_gemm_contractions)
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

