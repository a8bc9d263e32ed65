"""``xpuc.SelectiveScan``: the selective state-space recurrence of Mamba, one op.

``Y, FinalState = SelectiveScan(U[B, L, I], Delta[B, L, I], A[I, N], Bs[B, L, N], C[B, L, N], D[I]
[, InitialState[B, I, N]])``

For every batch row b and channel i, a state ``h[N]`` (zero, or ``InitialState[b, i]``) runs
over the sequence (transformers' ``MambaMixer.slow_forward``, token-major layout)::

    h = exp(Delta[b,t,i] * A[i]) * h + (Delta[b,t,i] * Bs[b,t]) * U[b,t,i]
    Y[b,t,i] = sum_n h[n] * C[b,t,n] + U[b,t,i] * D[i]

``Delta`` is already positive (softplus of ``dt_proj``, outside the op); ``A`` is already
``-exp(A_log)``. ``FinalState`` is ``h`` after the last step, the cache a decode step carries (always an
output: ONNX functions cannot leave a trailing output off).
"""

from __future__ import annotations

from onnx import FunctionProto, TensorProto, helper

from .. import symbolic
from ..types import TensorType
from .composite import DOMAIN, Composite, register_composite
from .elementwise import BINARY_FLOPS, UNARY_FLOPS
from .registry import InferContext, Pattern, numel, register

STATE_STEP_FLOPS = 5 * BINARY_FLOPS["Mul"] + 2 * BINARY_FLOPS["Add"] + UNARY_FLOPS["Exp"]
"""Per (token, channel, state) element: multiplies Delta*A, Delta*B, *U, decay*h, h*C; adds
for the update and the readout sum; one exp."""
CHANNEL_STEP_FLOPS = BINARY_FLOPS["Mul"] + BINARY_FLOPS["Add"]
"""Per (token, channel): the skip connection U*D added to the readout."""


def _flops(ctx: InferContext, outs) -> int:
    u, a = ctx.shape(0), ctx.shape(2)
    if u is None or a is None or not isinstance(a[1], int):
        return 0
    return numel(outs[0]) * (STATE_STEP_FLOPS * a[1] + CHANNEL_STEP_FLOPS)


@register("SelectiveScan", "elementwise", domain=DOMAIN, pattern=Pattern.OPAQUE, flops=_flops)
def _scan(ctx: InferContext) -> list[TensorType]:
    """Family ``elementwise``: the work is exp and multiply-adds on vector units, sequential in
    time but independent across batch rows, channels and states."""
    if len(ctx.node.outputs) != 2:
        ctx.fail(f"has outputs Y and FinalState, got {len(ctx.node.outputs)} output(s)")
    shapes = [ctx.shape(i) for i in range(6)]
    if any(s is None for s in shapes):
        return [TensorType(ctx.dtype(0), shapes[0]), TensorType(ctx.dtype(0), None)]
    u, delta, a, bs, c, d = shapes
    if len(u) != 3 or len(a) != 2:
        ctx.fail(f"U must be [B, L, I] and A [I, N]; got {u} and {a}")
    batch, length, inner = u
    state = a[1]
    want = {"Delta": (delta, u), "A": (a, (inner, state)), "B": (bs, (batch, length, state)),
            "C": (c, (batch, length, state)), "D": (d, (inner,))}
    if ctx.has(6):
        want["InitialState"] = (ctx.shape(6), (batch, inner, state))
    for name, (got, expected) in want.items():
        if got is not None and (len(got) != len(expected) or any(
                symbolic.is_int(g) and symbolic.is_int(e) and g != e for g, e in zip(got, expected))):
            ctx.fail(f"{name} has shape {got}, expected {tuple(expected)}")
    return [TensorType(ctx.dtype(0), u), TensorType(ctx.dtype(0), (batch, inner, state))]


def _name(attrs: dict, num_inputs: int) -> str:
    return "SelectiveScan" + ("WithState" if num_inputs > 6 else "")


def _body(attrs: dict, num_inputs: int, opset: int) -> FunctionProto:
    """The recurrence as an ONNX ``Scan`` over the sequence axis (reference semantics)."""
    n = helper.make_node
    f = TensorProto.FLOAT
    step = helper.make_graph(
        [n("Unsqueeze", ["dt_t", "axis2"], ["dt3"]),
         n("Mul", ["dt3", "A"], ["dt_a"]),
         n("Exp", ["dt_a"], ["decay"]),
         n("Unsqueeze", ["b_t", "axis1"], ["b3"]),
         n("Mul", ["dt3", "b3"], ["dt_b"]),
         n("Unsqueeze", ["u_t", "axis2"], ["u3"]),
         n("Mul", ["dt_b", "u3"], ["inject"]),
         n("Mul", ["decay", "h_prev"], ["kept"]),
         n("Add", ["kept", "inject"], ["h"]),
         n("Unsqueeze", ["c_t", "axis2"], ["c3"]),
         n("MatMul", ["h", "c3"], ["y3"]),
         n("Squeeze", ["y3", "axis2"], ["y_t"])],
        "selective_scan_step",
        [helper.make_tensor_value_info(name, f, None) for name in ("h_prev", "u_t", "dt_t", "b_t", "c_t")],
        [helper.make_tensor_value_info(name, f, None) for name in ("h", "y_t")])
    nodes = [n("Constant", [], ["axis1"], value_ints=[1]), n("Constant", [], ["axis2"], value_ints=[2])]
    inputs = ["U", "Delta", "A", "B", "C", "D"]
    if num_inputs > 6:
        inputs.append("InitialState")
        h0 = "InitialState"
    else:
        h0 = "h0"
        nodes += [n("Shape", ["U"], ["batch"], end=1),
                  n("Shape", ["A"], ["a_shape"]),
                  n("Concat", ["batch", "a_shape"], ["h_shape"], axis=0),
                  n("Constant", [], ["zero"], value=helper.make_tensor("zero", f, [], [0.0])),
                  n("CastLike", ["zero", "U"], ["zero_like"]),
                  n("Expand", ["zero_like", "h_shape"], [h0])]
    nodes += [n("Scan", [h0, "U", "Delta", "B", "C"], ["FinalState", "scan_y"], body=step, num_scan_inputs=4,
                scan_input_axes=[1, 1, 1, 1], scan_output_axes=[1]),
              n("Mul", ["U", "D"], ["skip"]),
              n("Add", ["scan_y", "skip"], ["Y"])]
    return helper.make_function(DOMAIN, _name(attrs, num_inputs), inputs, ["Y", "FinalState"], nodes,
                                [helper.make_opsetid("", opset)])


register_composite("SelectiveScan", Composite(_name, _body,
                                              lambda name: {} if name in ("SelectiveScan", "SelectiveScanWithState")
                                              else None))
