"""Composite ops that ONNX lacks, in the ``xpuc`` domain, each defined by an ONNX body.

The body (a ``FunctionProto``) *is* the op's semantics: exports carry it as a model-local
function, so onnxruntime and Netron open optimized graphs, and reference evaluation reads
it too. Hardware targets see the composite as one unit (a fused epilogue, a gated MLP).

- ``SiLU(X) = X * Sigmoid(X)``
- ``SwiGLU(Gate, Up) = SiLU(Gate) * Up`` (the gated MLP of Llama-family models)
- ``FusedMatMul(A, B[, Bias]) {activation}``: MatMul, + Bias, then an activation epilogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from onnx import FunctionProto, helper

from ..types import TensorType
from .common import broadcast, per_output_element
from .linalg import matmul_contractions, matmul_flops, matmul_shape
from .registry import InferContext, Pattern, register

DOMAIN = "xpuc"

ACTIVATIONS: dict[str, list[tuple[str, dict]]] = {
    "": [],
    "Relu": [("Relu", {})],
    "Gelu": [("Gelu", {})],
    "GeluTanh": [("Gelu", {"approximate": "tanh"})],
    "SiLU": [("Sigmoid", {}), ("Mul", {})],
    "Sigmoid": [("Sigmoid", {})],
    "Tanh": [("Tanh", {})],
}
"""FusedMatMul epilogues: activation -> the ONNX ops applying it. A binary op in the chain
(SiLU's Mul) takes the chain's input as its second operand: x * sigmoid(x)."""


@register("SiLU", "elementwise", pattern=Pattern.ELEMENTWISE, domain=DOMAIN, flops=per_output_element(11))
def _silu(ctx: InferContext) -> list[TensorType]:
    return [ctx.type(0)]


@register("SwiGLU", "elementwise", pattern=Pattern.BROADCAST, domain=DOMAIN, flops=per_output_element(12))
def _swiglu(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.dtype(0), broadcast(ctx, [ctx.shape(0), ctx.shape(1)]))]


def _fused_matmul_flops(ctx: InferContext, outs) -> int:
    act = 12 if ctx.attr("activation", "") else 0
    return matmul_flops(ctx, outs) + per_output_element((1 if ctx.has(2) else 0) + act)(ctx, outs)


@register("FusedMatMul", "matmul", pattern=Pattern.CONTRACTION, domain=DOMAIN, flops=_fused_matmul_flops,
          contractions=matmul_contractions)
def _fused_matmul(ctx: InferContext) -> list[TensorType]:
    if ctx.attr("activation", "") not in ACTIVATIONS:
        ctx.fail(f"unknown epilogue activation {ctx.attr('activation')!r}; known: {sorted(ACTIVATIONS)}")
    shape = matmul_shape(ctx, ctx.shape(0), ctx.shape(1))
    if ctx.has(2):
        shape = broadcast(ctx, [shape, ctx.shape(2)])
    return [TensorType(ctx.dtype(0), shape)]


@dataclass(frozen=True)
class Composite:
    """How a composite defined in its own module (``moe``, ``ssm``) exports: the function's name
    and its ONNX body for one configuration (attrs, number of inputs, opset)."""

    name: Callable[[dict, int], str]
    body: Callable[[dict, int, int], FunctionProto]
    parse: Callable[[str], dict | None]
    """attrs of the configuration a function name stands for (None: not this composite's), so
    an exported graph imports back as the composite rather than as its reference body."""


COMPOSITES: dict[str, Composite] = {}


def register_composite(op_type: str, composite: Composite) -> None:
    COMPOSITES[op_type] = composite


def from_function(name: str) -> tuple[str, dict] | None:
    """(op type, attrs) of the registered composite whose exported function is called ``name``."""
    for op_type, composite in COMPOSITES.items():
        attrs = composite.parse(name)
        if attrs is not None:
            return op_type, attrs
    return None


def function_name(op_type: str, attrs: dict, num_inputs: int) -> str:
    """Name of the exported function for one configuration of a composite op."""
    if op_type in COMPOSITES:
        return COMPOSITES[op_type].name(attrs, num_inputs)
    if op_type == "FusedMatMul":
        return "FusedMatMul" + ("Bias" if num_inputs > 2 else "") + attrs.get("activation", "")
    return op_type


def function_body(op_type: str, attrs: dict, num_inputs: int, opset: int) -> FunctionProto:
    """The ONNX function implementing one configuration of a composite op."""
    if op_type in COMPOSITES:
        return COMPOSITES[op_type].body(attrs, num_inputs, opset)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)]
    name = function_name(op_type, attrs, num_inputs)
    if op_type == "SiLU":
        nodes = [helper.make_node("Sigmoid", ["X"], ["s"]), helper.make_node("Mul", ["X", "s"], ["Y"])]
        return helper.make_function(DOMAIN, name, ["X"], ["Y"], nodes, opsets)
    if op_type == "SwiGLU":
        nodes = [helper.make_node("Sigmoid", ["Gate"], ["s"]), helper.make_node("Mul", ["Gate", "s"], ["g"]),
                 helper.make_node("Mul", ["g", "Up"], ["Y"])]
        return helper.make_function(DOMAIN, name, ["Gate", "Up"], ["Y"], nodes, opsets)
    if op_type == "FusedMatMul":
        inputs = ["A", "B", "Bias"][:num_inputs]
        nodes, last = [helper.make_node("MatMul", ["A", "B"], ["mm"])], "mm"
        if num_inputs > 2:
            nodes.append(helper.make_node("Add", [last, "Bias"], ["biased"]))
            last = "biased"
        x = last
        for i, (act, act_attrs) in enumerate(ACTIVATIONS[attrs.get("activation", "")]):
            args = [last, x] if act == "Mul" else [last]
            nodes.append(helper.make_node(act, args, [f"act{i}"], **act_attrs))
            last = f"act{i}"
        nodes.append(helper.make_node("Identity", [last], ["Y"]))
        return helper.make_function(DOMAIN, name, inputs, ["Y"], nodes, opsets)
    raise KeyError(f"no composite op {DOMAIN}.{op_type}")
