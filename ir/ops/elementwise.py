"""Elementwise ops: unary math, broadcasting binary ops, comparisons, variadic ops, casts.

The tables below are the data: op type -> FLOPs per output element. Transcendentals count
as several operations, following common roofline practice (a polynomial evaluation).
Unary ops and casts are ``Pattern.ELEMENTWISE``; ops that broadcast their inputs
(binary, variadic, Where, Clip's bounds) are ``Pattern.BROADCAST``.
"""

from __future__ import annotations

import numpy as np

from .. import symbolic
from ..dtypes import DType
from ..types import TensorType
from .common import broadcast, per_output_element, same_as_input
from .registry import InferContext, Pattern, register

UNARY_FLOPS = {
    "Abs": 1, "Neg": 1, "Relu": 1, "Sign": 1, "Floor": 1, "Ceil": 1, "Round": 1, "Reciprocal": 1,
    "Sqrt": 4, "Exp": 8, "Log": 8, "Sin": 8, "Cos": 8, "Tan": 8, "Tanh": 8, "Erf": 8,
    "Sigmoid": 10, "Softplus": 10, "Softsign": 3, "Elu": 10, "Selu": 10, "Celu": 10, "LeakyRelu": 2,
    "ThresholdedRelu": 1, "HardSigmoid": 3, "HardSwish": 4, "Mish": 20, "Gelu": 12, "Asin": 8,
    "Acos": 8, "Atan": 8, "Sinh": 8, "Cosh": 8, "Asinh": 8, "Acosh": 8, "Atanh": 8, "Not": 1,
}
PREDICATES = {"IsNaN": 1, "IsInf": 1}
BINARY_FLOPS = {"Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Pow": 8, "Mod": 2, "PRelu": 2, "BitShift": 1,
                "BitwiseAnd": 1, "BitwiseOr": 1, "BitwiseXor": 1}
COMPARISONS = {"Equal": 1, "Less": 1, "Greater": 1, "LessOrEqual": 1, "GreaterOrEqual": 1}
LOGICAL_BINARY = {"And": 1, "Or": 1, "Xor": 1}
VARIADIC_FLOPS = {"Sum": 1, "Max": 1, "Min": 1, "Mean": 1}


def _unary(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


def _predicate(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.BOOL, ctx.shape(0))]


def _binary(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(0), broadcast(ctx, [ctx.shape(0), ctx.shape(1)]))]


def _compare(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.BOOL, broadcast(ctx, [ctx.shape(0), ctx.shape(1)]))]


def _variadic(ctx: InferContext) -> list[TensorType]:
    present = [i for i in range(len(ctx.types)) if ctx.has(i)]
    return [TensorType(ctx.dtype(present[0]), broadcast(ctx, [ctx.shape(i) for i in present]))]


def _symbolic_operands(ctx: InferContext) -> list[np.ndarray] | None:
    """The inputs' values when all are known and at least one holds symbols (concrete ones are
    evaluated by shape inference itself)."""
    values = [ctx.value(i) for i in range(len(ctx.types)) if ctx.has(i)]
    if any(v is None for v in values) or all(symbolic.is_concrete(v) for v in values):
        return None
    return values


def _propagate_binary(ctx: InferContext) -> list[np.ndarray | None]:
    values = _symbolic_operands(ctx)
    if values is None:
        return [None]
    result = values[0]
    for v in values[1:]:  # Max and Min are variadic
        result = symbolic.apply_binary(ctx.node.op_type, result, v)
    return [result]


def _propagate_comparison(ctx: InferContext) -> list[np.ndarray | None]:
    values = _symbolic_operands(ctx)
    return [None if values is None else symbolic.apply_comparison(ctx.node.op_type, *values)]


for _op, _cost in UNARY_FLOPS.items():
    register(_op, "elementwise", pattern=Pattern.ELEMENTWISE, flops=per_output_element(_cost))(_unary)
for _op, _cost in PREDICATES.items():
    register(_op, "elementwise", pattern=Pattern.ELEMENTWISE, flops=per_output_element(_cost))(_predicate)
for _op, _cost in BINARY_FLOPS.items():
    register(_op, "elementwise", pattern=Pattern.BROADCAST, flops=per_output_element(_cost),
             propagate=_propagate_binary if _op in symbolic.BINARY else None)(_binary)
for _op, _cost in COMPARISONS.items():
    register(_op, "elementwise", pattern=Pattern.BROADCAST, flops=per_output_element(_cost),
             propagate=_propagate_comparison)(_compare)
for _op, _cost in LOGICAL_BINARY.items():
    register(_op, "elementwise", pattern=Pattern.BROADCAST, flops=per_output_element(_cost))(_compare)
for _op, _cost in VARIADIC_FLOPS.items():
    register(_op, "elementwise", pattern=Pattern.BROADCAST, flops=per_output_element(_cost),
             propagate=_propagate_binary if _op in symbolic.BINARY else None)(_variadic)


@register("Where", "elementwise", pattern=Pattern.BROADCAST, flops=per_output_element(1),
          propagate=lambda ctx: _propagate_where(ctx))
def _where(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(1), broadcast(ctx, [ctx.shape(0), ctx.shape(1), ctx.shape(2)]))]


def _propagate_where(ctx: InferContext) -> list[np.ndarray | None]:
    cond, a, b = ctx.const(0), ctx.value(1), ctx.value(2)
    if cond is None or a is None or b is None or (symbolic.is_concrete(a) and symbolic.is_concrete(b)):
        return [None]
    cond, a, b = np.broadcast_arrays(cond.astype(bool), np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    return [np.where(cond, a, b)]


@register("Clip", "elementwise", pattern=Pattern.BROADCAST, flops=per_output_element(2))
def _clip(ctx: InferContext) -> list[TensorType]:
    return same_as_input(ctx)


@register("Cast", "elementwise", pattern=Pattern.ELEMENTWISE, flops=per_output_element(1),
          propagate=lambda ctx: [ctx.value(0) if ctx.value(0) is not None and not symbolic.is_concrete(ctx.value(0))
                                 else None])
def _cast(ctx: InferContext) -> list[TensorType]:
    return [TensorType(DType.from_onnx(ctx.attr("to")), ctx.shape(0))]


@register("CastLike", "elementwise", pattern=Pattern.ELEMENTWISE, flops=per_output_element(1))
def _cast_like(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(1), ctx.shape(0))]
