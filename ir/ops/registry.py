"""The op table: for each op type, its shape/dtype rule, its work, and its family.

Every consumer (shape inference, schedulers, code generation, reports) reads op facts from
here, so a new op is added in one place. Rules live in per-family modules
(``elementwise``, ``linalg``, ``movement``, ``reduce``, ``nn``, ``composite``) that
register themselves on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from ..graph import Node
from ..types import Dim, TensorType


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


@dataclass(frozen=True)
class OpDef:
    """Facts about one op type.

    family: how reports and schedulers group it ("matmul", "conv", "attention", "norm",
        "elementwise", "reduce", "pool", "movement", "shape").
    infer: output types from input types (and known input values).
    propagate: optional symbolic evaluation for shape arithmetic (Shape, Gather, Concat ...).
    flops: arithmetic work, given input and output types with static shapes.
    """

    op_type: str
    domain: str
    family: str
    infer: InferFn
    propagate: PropagateFn | None = None
    flops: FlopsFn | None = None


_REGISTRY: dict[tuple[str, str], OpDef] = {}


def register(op_types: str | list[str], family: str, *, domain: str = "", propagate: PropagateFn | None = None,
             flops: FlopsFn | None = None) -> Callable[[InferFn], InferFn]:
    """Decorator: register ``infer`` as the shape rule of one or more op types."""

    def wrap(infer: InferFn) -> InferFn:
        for op_type in [op_types] if isinstance(op_types, str) else op_types:
            key = (domain, op_type)
            if key in _REGISTRY:
                raise RuntimeError(f"op {domain}.{op_type} registered twice")
            _REGISTRY[key] = OpDef(op_type, domain, family, infer, propagate, flops)
        return infer

    return wrap


def lookup(op_type: str, domain: str = "") -> OpDef | None:
    return _REGISTRY.get((_canonical_domain(domain), op_type))


def supported_ops() -> list[tuple[str, str]]:
    return sorted(_REGISTRY)


def _canonical_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def numel(t: TensorType) -> int:
    """Element count of a static type (0 if unknown: such ops are reported as unknown work)."""
    return t.numel or 0
