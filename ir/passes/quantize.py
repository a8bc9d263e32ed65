"""Put a model's matrix products in a number format (:mod:`ir.formats`), as standard ONNX.

Which ops: every MatMul, Gemm, ``xpuc.FusedMatMul`` (2-D weight) and Conv whose weight
(input 1) is a float32 constant and whose activation (input 0) is not, except the model's
head: a product whose result is a graph output (through reshapes at most), such as the LM
head or a classifier, keeps float32 unless ``keep_head=False``, as GPTQ / AWQ checkpoints and
BitNet b1.58 keep it. Everything else keeps float32 too: embedding tables (Gather), norms,
biases, and products of two activations (attention's scores and context), which have no
weights to calibrate from.

The ONNX each format is written in (``docs/formats.md``):

- ``bf16``, ``fp16``: the weight is stored in the format and Cast to float32; the activation is
  Cast to the format and back (float32 accumulation, as bf16 x bf16 -> f32 engines do).
- ``fp8-*``: weight codes with one float32 scale, DequantizeLinear; the activation gets a scale
  max|x| / largest code as the model runs (Abs, ReduceMax, Div) and goes through QuantizeLinear
  and DequantizeLinear with it.
- ``int8``, ``int4-g*``, ``ternary``: weight codes and scales (per output channel: ``axis``; per
  group: ``block_size`` along the reduction axis), DequantizeLinear.
- ``w8a8``: DynamicQuantizeLinear(x) -> MatMulInteger(x codes, weight codes, x zero point) ->
  Cast -> Mul(x scale * weight scales) [-> + bias -> activation]; Conv and Gemm with transA
  dequantize both operands instead (the same numbers, written as QDQ).

Calibration is round-to-nearest from the weights themselves: a scale is the largest magnitude
of its tensor / channel / group over the largest code (ties round to even), so the largest
weight is exact; ``ternary`` rounds ``w / mean|w|`` to {-1, 0, 1} (BitNet b1.58's absmean)
and scales the codes by the mean magnitude of the weights they keep, the least-squares scale
for those codes, so weights that already were ``a * {-1, 0, 1}`` come back exactly.
Weightless constants (``weights=False``) become weightless codes and scales of the right
types and shapes, so costs can be computed for huge models in any format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dtypes import DType
from ..formats import Format, lookup
from ..graph import Graph, Node
from ..ops.composite import ACTIVATIONS, DOMAIN
from ..types import TensorType
from .dce import eliminate_dead_code
from .shape_inference import infer_shapes

SMALLEST_SCALE = np.float32(2.0 ** -126)
"""Floor of a dynamic activation scale, so an all-zero activation does not divide by zero."""


@dataclass(frozen=True)
class Role:
    """Where a product's weight keeps its output channels and its reduction (summed) axis."""

    channel: int
    reduction: int


ROLES = {
    ("", "MatMul"): lambda node: Role(1, 0),
    (DOMAIN, "FusedMatMul"): lambda node: Role(1, 0),
    ("", "Gemm"): lambda node: Role(0, 1) if node.attr("transB", 0) else Role(1, 0),
    ("", "Conv"): lambda node: Role(0, 1),
}
"""Ops whose input 1 is a weight, by (domain, op type)."""

INTEGER_PRODUCTS = {("", "MatMul"), (DOMAIN, "FusedMatMul"), ("", "Gemm")}
"""Ops ``w8a8`` turns into MatMulInteger (a Gemm only without transA)."""


@dataclass
class Quantized:
    """A weight in a format: the constant(s) a DequantizeLinear (or Cast) reads, and its attributes."""

    codes: str
    scale: str | None
    attrs: dict


def quantize(graph: Graph, scheme: str | Format, *, keep_head: bool = True) -> Graph:
    """Rewrite every weighted product of ``graph`` (but its head, with ``keep_head``) into
    ``scheme`` (a format name or :class:`ir.formats.Format`); returns the same graph."""
    fmt = lookup(scheme)
    if not fmt.changes_graph:
        return graph
    rewriter = _Rewriter(graph, fmt)
    for node in graph.nodes:
        role = _role(graph, node)
        if role is not None and not (keep_head and is_head(graph, node)):
            rewriter.rewrite(node, role)
    graph.metadata["xpuc.precision"] = fmt.name
    return infer_shapes(eliminate_dead_code(graph))


VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
"""Ops between a head product and the graph output it makes, that still leave it the head."""


def is_head(graph: Graph, node: Node) -> bool:
    """The product makes a graph output through views at most (an LM head, a classifier): it
    keeps its float weights, as GPTQ / AWQ checkpoints and the cost model's formats keep them."""
    value = node.outputs[0]
    while value not in graph.outputs:
        readers = graph.consumers(value)
        if len(readers) != 1 or readers[0][0].op_type not in VIEWS or readers[0][0].domain:
            return False
        value = readers[0][0].outputs[0]
    return True


def _role(graph: Graph, node: Node) -> Role | None:
    rule = ROLES.get((node.domain, node.op_type))
    if rule is None or len(node.inputs) < 2:
        return None
    weight, x = graph.values[node.inputs[1]], graph.values[node.inputs[0]]
    t = weight.type
    if not weight.const or x.const or t.dtype is not DType.FLOAT32 or not t.is_static \
            or (node.op_type != "Conv" and len(t.shape) != 2):
        return None
    return rule(node)


class _Rewriter:
    def __init__(self, graph: Graph, fmt: Format):
        self.graph, self.fmt = graph, fmt
        self._weights: dict[tuple[str, Role, bool], Quantized] = {}
        self._activations: dict[str, str] = {}
        self._dynamic: dict[str, tuple[str, str, str]] = {}

    def rewrite(self, node: Node, role: Role) -> None:
        if self.fmt.accumulator.is_int and (node.domain, node.op_type) in INTEGER_PRODUCTS \
                and not node.attr("transA", 0):
            self._integer_product(node)
            return
        self.graph.set_input(node, 0, self._activation(node.inputs[0]))
        self.graph.set_input(node, 1, self._dequantized(node.inputs[1], role, node.name))

    # ------------------------------------------------------------------ weights
    def _weight(self, name: str, role: Role, transpose: bool = False) -> Quantized:
        """The weight's codes and scales (``transpose``: of its transpose), made once per weight."""
        key = (name, role, transpose)
        if key not in self._weights:
            value = self.graph.values[name]
            data, shape = value.data, tuple(value.type.shape)
            if transpose:
                data, shape = None if data is None else np.ascontiguousarray(data.T), shape[::-1]
            arrays = quantize_weight(data, shape, self.fmt, role)
            codes = self._constant(arrays.codes, f"{name}_{self.fmt.name}", self.fmt.weights, arrays.code_shape)
            scale = None if arrays.scale_shape is None else \
                self._constant(arrays.scale, f"{name}_scale", DType.FLOAT32, arrays.scale_shape)
            self._weights[key] = Quantized(codes, scale, arrays.attrs)
        return self._weights[key]

    def _dequantized(self, name: str, role: Role, hint: str) -> str:
        """The weight as float32 again, by one op per reader (so each product can absorb it)."""
        q = self._weight(name, role)
        if q.scale is None:
            return self._op("Cast", [q.codes], f"{hint}_weight", to=DType.FLOAT32.onnx)
        return self._op("DequantizeLinear", [q.codes, q.scale], f"{hint}_weight", **q.attrs)

    def _constant(self, data: np.ndarray | None, hint: str, dtype: DType, shape: tuple) -> str:
        if data is not None:
            return self.graph.add_constant(data, hint)
        name = self.graph.fresh_name(hint)
        self.graph.add_value(name, TensorType(dtype, shape), const=True)  # weightless, like its source
        return name

    # -------------------------------------------------------------- activations
    def _activation(self, x: str) -> str:
        """The activation as the format's products read it (memoized: Q, K and V share one)."""
        fmt = self.fmt
        if fmt.activations is DType.FLOAT32 or x in self._activations:
            return self._activations.get(x, x)
        if fmt.activation_scale == "none":
            narrow = self._op("Cast", [x], f"{x}_{fmt.name}", to=fmt.activations.onnx)
            result = self._op("Cast", [narrow], f"{x}_{fmt.name}_f32", to=DType.FLOAT32.onnx)
        elif fmt.activations.is_int:
            q, scale, zero = self._dynamic_quantized(x)
            result = self._op("DequantizeLinear", [q, scale, zero], f"{x}_dq")
        else:
            scale = self._dynamic_scale(x)
            zero = self.graph.add_constant(np.zeros((), fmt.activations.numpy), f"{x}_zero_point")
            q = self._op("QuantizeLinear", [x, scale, zero], f"{x}_{fmt.name}")
            result = self._op("DequantizeLinear", [q, scale], f"{x}_dq")
        self._activations[x] = result
        return result

    def _dynamic_scale(self, x: str) -> str:
        """max|x| / the largest code, computed as the model runs (one scale per tensor)."""
        amax = self._op("ReduceMax", [self._op("Abs", [x], f"{x}_abs")], f"{x}_amax", keepdims=0)
        code_max = self.graph.add_constant(np.float32(self.fmt.code_max), "code_max")
        scale = self._op("Div", [amax, code_max], f"{x}_scale")
        return self._op("Max", [scale, self.graph.add_constant(SMALLEST_SCALE, "smallest_scale")], f"{x}_scale")

    def _dynamic_quantized(self, x: str) -> tuple[str, str, str]:
        """uint8 codes, scale and zero point of an activation, quantized as the model runs."""
        if x not in self._dynamic:
            node = self.graph.add_node("DynamicQuantizeLinear", [x], [self.graph.fresh_name(f"{x}_{n}")
                                                                     for n in ("u8", "scale", "zero_point")])
            self._dynamic[x] = tuple(node.outputs)
        return self._dynamic[x]

    # ----------------------------------------------------------- integer products
    def _integer_product(self, node: Node) -> None:
        """x @ W as MatMulInteger over uint8 activation codes and int8 weight codes, rescaled by
        (x scale * weight scale per column); then the product's own bias and activation."""
        g = self.graph
        x, w, out = node.inputs[0], node.inputs[1], node.outputs[0]
        q = self._weight(w, Role(1, 0), transpose=bool(node.attr("transB", 0)))  # MatMulInteger reads (K, N)
        scale = q.scale
        alpha = node.attr("alpha", 1.0)
        if alpha != 1.0:
            data = g.const_data(scale)
            scale = self._constant(None if data is None else (data * np.float32(alpha)).astype(np.float32),
                                   f"{scale}_alpha", DType.FLOAT32, g.type_of(scale).shape)
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        if bias and node.attr("beta", 1.0) != 1.0:
            beta = g.add_constant(np.float32(node.attr("beta")), "beta")
            bias = self._op("Mul", [bias, beta], f"{node.name}_beta")
        activation = node.attr("activation", "") if node.domain == DOMAIN else ""
        g.remove_node(node)
        xq, x_scale, x_zero = self._dynamic_quantized(x)
        acc = self._op("MatMulInteger", [xq, q.codes, x_zero], f"{node.name}_i32")
        steps = [("Cast", [], {"to": DType.FLOAT32.onnx}),
                 ("Mul", [self._op("Mul", [x_scale, scale], f"{node.name}_scale")], {})]
        steps += [("Add", [bias], {})] if bias else []
        epilogue = ACTIVATIONS[activation]
        ops = [op for op, *_ in steps] + [op for op, _ in epilogue]
        names = [g.fresh_name(f"{node.name}_{op}") for op in ops[:-1]] + [out]

        def emit(op: str, inputs: list[str], attrs: dict) -> str:
            return g.add_node(op, inputs, [names.pop(0)], attrs, name=f"{node.name}_{op}").outputs[0]

        y = acc
        for op, extra, attrs in steps:
            y = emit(op, [y, *extra], attrs)
        before = y
        for op, attrs in epilogue:  # SiLU's Mul multiplies by the value before the activation
            y = emit(op, [y, before] if op == "Mul" else [y], attrs)

    def _op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        return self.graph.add_node(op_type, inputs, [self.graph.fresh_name(hint)], attrs, name=hint).outputs[0]


# ------------------------------------------------------------------ calibration
@dataclass
class WeightArrays:
    """A weight in a format: its codes and scales (None when weightless) and DequantizeLinear's attributes."""

    codes: np.ndarray | None
    scale: np.ndarray | None
    code_shape: tuple
    scale_shape: tuple | None
    attrs: dict


def quantize_weight(w: np.ndarray | None, shape: tuple, fmt: Format, role: Role) -> WeightArrays:
    """Codes and scales of one weight (see the module docstring for the calibration)."""
    if fmt.granularity == "none":
        return WeightArrays(None if w is None else w.astype(fmt.weights.numpy), None, shape, None, {})
    if fmt.granularity == "tensor":
        scale_shape, attrs = (), {}
    elif fmt.granularity == "channel":
        scale_shape, attrs = (shape[role.channel],), {"axis": role.channel}
    else:
        blocks = -(-shape[role.reduction] // fmt.group_size)
        scale_shape = tuple(blocks if i == role.reduction else d for i, d in enumerate(shape))
        attrs = {"axis": role.reduction, "block_size": fmt.group_size}
    if w is None:
        return WeightArrays(None, None, shape, scale_shape, attrs)
    w64 = w.astype(np.float64)
    if fmt.rounding == "absmean":
        codes = np.clip(np.rint(w64 / max(np.abs(w64).mean(), np.finfo(np.float32).tiny)), -1, 1)
        kept = np.abs(w64)[codes != 0]
        scale = np.float32(kept.mean() if kept.size else 1.0)
        return WeightArrays(codes.astype(fmt.weights.numpy), np.asarray(scale), shape, (), attrs)
    amax = _amax(np.abs(w64), fmt, role, scale_shape)
    scale = np.where(amax > 0, amax / fmt.code_max, 1.0).astype(np.float32)
    scaled = w64 / _expand(scale.astype(np.float64), shape, fmt, role)
    if fmt.weights.is_int:
        scaled = np.rint(scaled)
    codes = np.clip(scaled, -fmt.code_max, fmt.code_max).astype(fmt.weights.numpy)
    return WeightArrays(codes, scale, shape, scale_shape, attrs)


def _amax(a: np.ndarray, fmt: Format, role: Role, scale_shape: tuple) -> np.ndarray:
    if fmt.granularity == "tensor":
        return np.asarray(a.max())
    if fmt.granularity == "channel":
        return a.max(axis=tuple(i for i in range(a.ndim) if i != role.channel))
    r, g = role.reduction, fmt.group_size
    padded = np.zeros(tuple(n * g if i == r else n for i, n in enumerate(scale_shape)))
    padded[tuple(slice(0, n) for n in a.shape)] = a
    split = padded.reshape(padded.shape[:r] + (scale_shape[r], g) + padded.shape[r + 1:])
    return split.max(axis=r + 1)


def _expand(scale: np.ndarray, shape: tuple, fmt: Format, role: Role) -> np.ndarray:
    """The scale of every weight element."""
    if fmt.granularity == "tensor":
        return scale
    if fmt.granularity == "channel":
        return scale.reshape([-1 if i == role.channel else 1 for i in range(len(shape))])
    return np.repeat(scale, fmt.group_size, axis=role.reduction)[tuple(slice(0, n) for n in shape)]
