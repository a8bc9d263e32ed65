"""Reductions and the softmax family."""

from __future__ import annotations

from ..dtypes import DType
from ..types import TensorType
from .common import axis, per_input_element, per_output_element, same_as_input
from .registry import InferContext, Pattern, register

REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]


def reduced_shape(ctx: InferContext, axes: list[int] | None, keepdims: bool, noop_with_empty_axes: bool = False):
    shape = ctx.shape(0)
    if shape is None:
        return None
    if not axes:
        if noop_with_empty_axes:
            return shape
        axes = list(range(len(shape)))
    axes = {axis(ctx, a, len(shape)) for a in axes}
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


@register(REDUCTIONS, "reduce", pattern=Pattern.REDUCTION, flops=per_input_element(1), shape_operands=(1,))
def _reduce(ctx: InferContext) -> list[TensorType]:
    if ctx.has(1):
        axes = ctx.ints(1)
        if axes is None:
            return [TensorType(ctx.dtype(0), None)]
    else:
        axes = ctx.attr("axes")
    return [TensorType(ctx.dtype(0), reduced_shape(ctx, axes, bool(ctx.attr("keepdims", 1)),
                                                   bool(ctx.attr("noop_with_empty_axes", 0))))]


@register(["ArgMax", "ArgMin"], "reduce", pattern=Pattern.REDUCTION, flops=per_input_element(1))
def _arg_reduce(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.INT64, reduced_shape(ctx, [ctx.attr("axis", 0)], bool(ctx.attr("keepdims", 1))))]


@register(["Softmax", "LogSoftmax"], "reduce", pattern=Pattern.REDUCTION, flops=per_output_element(5))
def _softmax(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if shape is not None:
        axis(ctx, ctx.attr("axis", -1), len(shape))
    return same_as_input(ctx)
