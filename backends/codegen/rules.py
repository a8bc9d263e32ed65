"""The lowering tables: op type -> how to generate code for it.

Which ops share a kernel is decided by ``backends.grouping`` from the ops' patterns
(``ir.ops.Pattern``); these tables only say how each op meets a loop nest:

- ``POINTWISE``: each output element is an expression of input elements at computed
  indices (elementwise math, broadcasting, Transpose, Slice, Gather, Concat ...). A rule is
  ``fn(ctx, node, idx) -> value`` giving output 0 at ``idx``; it reads inputs with
  ``ctx.read``. Every op the grouping may compute inside its reader's loop (elementwise,
  broadcast and injective ops) needs one; it also writes such an op as a kernel of its own.
- ``ANCHORS``: ops with their own loop structure (MatMul, reductions, Conv, Attention,
  Concat's copies ...). A rule is ``fn(ctx, node) -> extent``: it builds the whole body over
  ``[begin, end)`` of its parallel loop, writes its outputs with ``ctx.write`` (which applies
  the kernel's epilogue to output 0) and returns that loop's extent. A kernel rooted at an op
  with both rules uses the anchor.
- ``STATIC``: ops whose results the shapes decide (Shape, Size): compile-time constants.

Views (``Pattern.VIEW``: Reshape, Squeeze, inference Dropout ...) need no rule: their
output 0 shares input 0's buffer, and a ``STATIC`` rule gives any other output.
"""

from __future__ import annotations

from typing import Callable

POINTWISE: dict[str, Callable] = {}
ANCHORS: dict[str, Callable] = {}
STATIC: dict[str, Callable] = {}
"""Ops whose outputs follow from static shapes alone (Shape, Size): ``fn(graph, node) -> arrays``,
one per output (None for an output that is not a constant, such as a view's output 0); they
become constants at compile time, never code."""


def key(op_type: str, domain: str = "") -> str:
    return f"{domain}.{op_type}" if domain else op_type


def pointwise(*op_types: str, domain: str = ""):
    def wrap(fn):
        for op in op_types:
            POINTWISE[key(op, domain)] = fn
        return fn
    return wrap


def anchor(*op_types: str, domain: str = ""):
    def wrap(fn):
        for op in op_types:
            ANCHORS[key(op, domain)] = fn
        return fn
    return wrap


def static(*op_types: str):
    def wrap(fn):
        for op in op_types:
            STATIC[op] = fn
        return fn
    return wrap
