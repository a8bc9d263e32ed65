"""The op table: for each op type, its shape/dtype rule, its work, its family and its traits.

Every consumer (shape inference, folding, fusions, kernel grouping, schedulers, code
generation, emulated counting, reports) reads op facts from here, so a new op is added in
one place. Rules live in per-family modules (``elementwise``, ``linalg``, ``movement``,
``reduce``, ``nn``, ``composite``) that register themselves on import.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from ..graph import Node
from ..types import Dim, TensorType
from .contraction import Contraction

if TYPE_CHECKING:
    from ..graph import Graph


@dataclass
class InferContext:
    """What a rule sees of one op: its node, input types, and whatever inputs are known.

    ``values[i]`` is the input's contents when it is a constant, or, for small integer
    tensors computed from shapes, an object array of ints and dim symbols (symbolic shape
    propagation), else None.
    """

    node: Node
    types: list[TensorType | None]
    values: list[np.ndarray | None]
    opset: int

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def has(self, index: int) -> bool:
        return index < len(self.types) and self.types[index] is not None

    def type(self, index: int) -> TensorType:
        if not self.has(index):
            self.fail(f"input {index} is required")
        return self.types[index]

    def shape(self, index: int) -> tuple[Dim, ...] | None:
        return self.type(index).shape

    def dtype(self, index: int) -> DType | None:
        return self.type(index).dtype

    def value(self, index: int) -> np.ndarray | None:
        return self.values[index] if index < len(self.values) else None

    def const(self, index: int) -> np.ndarray | None:
        """The input's contents if fully concrete (no symbols), else None."""
        v = self.value(index)
        if v is None or v.dtype == object and not all(isinstance(x, (int, np.integer)) for x in v.flat):
            return None
        return v.astype(np.int64) if v.dtype == object else v

    def ints(self, index: int) -> list[int] | None:
        """A constant integer input (axes, pads, ...) as a list."""
        v = self.const(index) if self.has(index) else None
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]

    def fail(self, message: str) -> None:
        raise ShapeError(f"{self.node.name} ({self.node.op_type}): {message}")


InferFn = Callable[[InferContext], list[TensorType]]
PropagateFn = Callable[[InferContext], list[np.ndarray | None]]
FlopsFn = Callable[[InferContext, list[TensorType]], int]
ContractionsFn = Callable[[InferContext, list[TensorType]], list[Contraction]]


class Pattern(enum.Enum):
    """How an op's output elements depend on its inputs, which decides what it fuses with
    (in the spirit of TVM's ``OpPatternKind``; ``backends.grouping`` applies the rules).

    - ELEMENTWISE: output element i reads every input at i (same shapes): Relu, Cast, SiLU.
    - BROADCAST: like ELEMENTWISE with numpy broadcasting of the inputs: Add, Where.
    - INJECTIVE: each output element reads a few input elements at indices computed from its
      own (Transpose, Slice, Gather, Concat, Pad, RotaryEmbedding), or none (fills).
    These three are computed inside their single consumer's loop when it absorbs producers.
    - REDUCTION: an output element reads many input elements, each input element is read a
      bounded number of times (reductions, softmax, norms, cumulative sums): it absorbs
      its producers, and its elementwise consumers ride along as an epilogue.
    - CONTRACTION: reads each input element many times (MatMul, Gemm, Conv, pooling
      windows; TVM's "out-elementwise-fusable"): producers are not recomputed inside it,
      elementwise consumers ride along as its epilogue.
    - OPAQUE: a kernel of its own that fuses with nothing (Attention, ScatterND, random draws).
    - VIEW: relabels its input's buffer (Reshape, Squeeze, inference Dropout): no kernel, no data.
    - SHAPE: outputs follow from input shapes and attributes alone (Shape, Size, Constant):
      compile-time constants, no kernel.
    """

    ELEMENTWISE = "elementwise"
    BROADCAST = "broadcast"
    INJECTIVE = "injective"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
    OPAQUE = "opaque"
    VIEW = "view"
    SHAPE = "shape"


@dataclass(frozen=True)
class OpDef:
    """Facts about one op type.

    family: how reports and schedulers group it, and what a target's engines list as the
        ops they run ("matmul", "conv", "attention", "norm", "elementwise", "reduce",
        "pool", "movement", "shape").
    pattern: how it fuses (:class:`Pattern`).
    infer: output types from input types (and known input values).
    propagate: optional symbolic evaluation for shape arithmetic (Shape, Gather, Concat ...).
    flops: arithmetic work, given input and output types with static shapes.
    contractions: the matrix products it is made of, given static shapes (``contraction``).
    shape_operands: inputs whose contents decide an output's shape or the generated code
        (axes, a Reshape's target, Slice bounds); code generation needs them constant.
    deterministic: its outputs are a function of its inputs (random draws are not), so it
        may be evaluated at compile time and merged with an identical op.
    indexed: inputs read only where another input points (a Gather's table): the op reads as
        many of their elements as it writes, never the whole input.
    in_place: (buffer, update): output 0 is input ``buffer`` with input ``update``'s elements
        written into it (ONNX's TensorScatter models a KV cache written in place), so a
        runtime may update the buffer where it is, and only the update moves.
    """

    op_type: str
    domain: str
    family: str
    pattern: Pattern
    infer: InferFn
    propagate: PropagateFn | None = None
    flops: FlopsFn | None = None
    contractions: ContractionsFn | None = None
    shape_operands: tuple[int, ...] = ()
    deterministic: bool = True
    indexed: tuple[int, ...] = ()
    in_place: tuple[int, int] | None = None


_REGISTRY: dict[tuple[str, str], OpDef] = {}


def register(op_types: str | list[str], family: str, *, pattern: Pattern, domain: str = "",
             propagate: PropagateFn | None = None, flops: FlopsFn | None = None,
             contractions: ContractionsFn | None = None, shape_operands: tuple[int, ...] = (),
             deterministic: bool = True, indexed: tuple[int, ...] = (),
             in_place: tuple[int, int] | None = None) -> Callable[[InferFn], InferFn]:
    """Decorator: register ``infer`` as the shape rule of one or more op types, with their traits."""

    def wrap(infer: InferFn) -> InferFn:
        for op_type in [op_types] if isinstance(op_types, str) else op_types:
            key = (domain, op_type)
            if key in _REGISTRY:
                raise RuntimeError(f"op {domain}.{op_type} registered twice")
            _REGISTRY[key] = OpDef(op_type, domain, family, pattern, infer, propagate, flops, contractions,
                                   shape_operands, deterministic, indexed, in_place)
        return infer

    return wrap


def lookup(op_type: str, domain: str = "") -> OpDef | None:
    return _REGISTRY.get((_canonical_domain(domain), op_type))


def supported_ops() -> list[tuple[str, str]]:
    return sorted(_REGISTRY)


def _canonical_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def static_context(graph: Graph, node: Node) -> tuple[OpDef, InferContext, list[TensorType]] | None:
    """What a work rule (FLOPs, contractions) of ``node`` sees, or None while a shape is symbolic."""
    opdef = lookup(node.op_type, node.domain)
    in_types = [graph.values[v].type if v else None for v in node.inputs]
    out_types = [graph.values[o].type for o in node.outputs if o]
    if opdef is None or not all(t.is_static for t in in_types + out_types if t is not None):
        return None
    ctx = InferContext(node, in_types, [graph.const_data(v) if v else None for v in node.inputs], graph.opset)
    return opdef, ctx, out_types


def contractions(graph: Graph, node: Node) -> list[Contraction]:
    """The matrix products of ``node`` (none for an op without them, or while shapes are symbolic)."""
    opdef = lookup(node.op_type, node.domain)
    found = static_context(graph, node) if opdef is not None and opdef.contractions else None
    return opdef.contractions(found[1], found[2]) if found else []


def moves_elements(node: Node) -> bool:
    """Output 0 holds input 0's elements rearranged, repeated, sliced or padded, and nothing
    else decides which: a view, or an injective op with one output whose other inputs are all
    shape operands. Such chains are proved equal by tracing them on ``arange``."""
    opdef = lookup(node.op_type, node.domain)
    return (opdef is not None and opdef.pattern in (Pattern.VIEW, Pattern.INJECTIVE)
            and sum(1 for o in node.outputs if o) == 1 and 0 not in opdef.shape_operands
            and all(i in opdef.shape_operands for i, v in enumerate(node.inputs) if v and i > 0))


def numel(t: TensorType) -> int:
    """Element count of a static type (0 if unknown: such ops are reported as unknown work)."""
    return t.numel or 0
