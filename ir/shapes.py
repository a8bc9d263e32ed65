"""Binding a graph's input shapes: symbolic dims of the inputs become the sizes a user gives.

Every frontend, the runtime (which specializes a model per feed shape) and the command line
bind shapes the same way, so it lives with the IR.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .errors import ShapeError
from .graph import Graph
from .types import Dim, TensorType


def parse_shape(text: str) -> tuple[Dim, ...]:
    """``"1x128"`` -> (1, 128); a non-numeric part stays a symbol; ``""`` or ``"scalar"`` is rank 0."""
    if text in ("", "scalar"):
        return ()
    parts = text.lower().split("x")
    for p in parts:
        if not (p.lstrip("-").isdigit() or p.isidentifier()):
            raise ShapeError(f"bad dimension {p!r} in shape {text!r}: expected an integer or a symbol name")
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)


def bind_input_shapes(graph: Graph, shapes: Mapping[str, Sequence[Dim] | str]) -> None:
    """Give graph inputs concrete shapes, checking them against what the model declares."""
    unknown = sorted(set(shapes) - set(graph.inputs))
    if unknown:
        raise ShapeError(f"no graph input named {', '.join(map(repr, unknown))}; inputs are: "
                         f"{', '.join(graph.inputs)}")
    bindings: dict[str, Dim] = {}
    for name, shape in shapes.items():
        shape = parse_shape(shape) if isinstance(shape, str) else tuple(shape)
        declared = graph.values[name].type
        if declared.shape is not None and len(declared.shape) != len(shape):
            raise ShapeError(f"input {name!r} has rank {len(declared.shape)} ({declared}) but the given shape "
                             f"{'x'.join(map(str, shape))} has rank {len(shape)}")
        for i, (want, got) in enumerate(zip(declared.shape or shape, shape)):
            if isinstance(got, int) and got < 0:
                raise ShapeError(f"input {name!r}: dimension {i} must not be negative, got {got}")
            if isinstance(want, int) and want != got:
                raise ShapeError(f"input {name!r}: dimension {i} is {want} in the model, but {got} was given")
            if isinstance(want, str):
                if bindings.setdefault(want, got) != got:
                    raise ShapeError(f"symbol {want!r} is bound to both {bindings[want]} and {got}")
        graph.values[name].type = TensorType(declared.dtype, shape)
    for name in graph.inputs:
        t = graph.values[name].type
        if t.shape is not None and name not in shapes:
            graph.values[name].type = TensorType(t.dtype, tuple(bindings.get(d, d) if isinstance(d, str) else d
                                                                for d in t.shape))
