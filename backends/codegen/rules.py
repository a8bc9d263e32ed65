"""The lowering tables: op type -> how to generate code for it.

Three kinds of op, by how they meet a loop nest:

- ``POINTWISE``: each output element is an expression of input elements at computed
  indices (elementwise math, broadcasting, Transpose, Slice, Gather, Trilu ...). A rule is
  ``fn(ctx, node, idx) -> value``; it reads inputs with ``ctx.read``. Such ops never need a
  kernel of their own when their single consumer can evaluate them in its loop.
- ``ANCHORS``: ops with their own loop structure (MatMul, reductions, Conv, Attention ...).
  A rule is ``fn(ctx, node) -> extent``: it builds the whole body over ``[begin, end)`` of
  its parallel loop and returns that loop's extent. Its traits say whether its inputs may be
  computed inline and whether elementwise consumers may ride along as an epilogue.
- ``ALIASES``: ops that only reinterpret a contiguous buffer (Reshape, Squeeze ...): no code.
- ``STATIC``: ops whose results the shapes decide (Shape, Size): compile-time constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

POINTWISE: dict[str, Callable] = {}
ANCHORS: dict[str, "Anchor"] = {}
ALIASES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Trilu": (1,), "Range": (0, 1, 2), "CumSum": (1,),
    "Dropout": (1, 2), "TopK": (1,), "OneHot": (1,),
}
"""Inputs whose contents decide an output's shape or the generated code (axes, a Reshape's
target, Slice bounds): code generation needs them as constants, so a model that computes one
from a graph input is compiled once per distinct value of that input."""
STATIC: dict[str, Callable] = {}
"""Ops whose outputs follow from static shapes alone (Shape, Size): ``fn(graph, node) -> arrays``,
one per output; they become constants at compile time, never code."""
ELEMENTWISE: set[str] = set()
"""Pointwise ops that read every input at the output's own index (broadcast aside), so they
can extend an anchor's epilogue."""


@dataclass(frozen=True)
class Anchor:
    emit: Callable
    inline_inputs: bool = False
    """Inputs may be computed in this kernel (it reads each input element O(1) times)."""
    epilogue: bool = False
    """Elementwise consumers of output 0 may be applied before its store."""
    absorbs: Callable | None = None
    """``absorbs(graph, producer, index) -> bool``: this anchor computes the pointwise op feeding
    its input ``index`` itself (a product decoding its stored low-bit weight), though it reads
    the input many times."""


def key(op_type: str, domain: str = "") -> str:
    return f"{domain}.{op_type}" if domain else op_type


def pointwise(*op_types: str, domain: str = "", elementwise: bool = False):
    def wrap(fn):
        for op in op_types:
            POINTWISE[key(op, domain)] = fn
            if elementwise:
                ELEMENTWISE.add(key(op, domain))
        return fn
    return wrap


def anchor(*op_types: str, domain: str = "", inline_inputs: bool = False, epilogue: bool = False,
           absorbs: Callable | None = None):
    def wrap(fn):
        for op in op_types:
            ANCHORS[key(op, domain)] = Anchor(fn, inline_inputs, epilogue, absorbs)
        return fn
    return wrap


def static(*op_types: str):
    def wrap(fn):
        for op in op_types:
            STATIC[op] = fn
        return fn
    return wrap
