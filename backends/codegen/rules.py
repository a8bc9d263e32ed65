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
- ``STATIC``: ops whose results the shapes decide (Shape, Size): compile-time constants.

Views (``Pattern.VIEW`` in ``ir.ops``: Reshape, Squeeze, inference Dropout ...) need no rule:
their output 0 shares input 0's buffer, and a ``STATIC`` rule gives any other output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

POINTWISE: dict[str, Callable] = {}
ANCHORS: dict[str, "Anchor"] = {}
STATIC: dict[str, Callable] = {}
"""Ops whose outputs follow from static shapes alone (Shape, Size): ``fn(graph, node) -> arrays``,
one per output (None for an output that is not a constant, such as a view's output 0); they
become constants at compile time, never code."""
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


def anchor(*op_types: str, domain: str = "", inline_inputs: bool = False, epilogue: bool = False):
    def wrap(fn):
        for op in op_types:
            ANCHORS[key(op, domain)] = Anchor(fn, inline_inputs, epilogue)
        return fn
    return wrap


def static(*op_types: str):
    def wrap(fn):
        for op in op_types:
            STATIC[op] = fn
        return fn
    return wrap
