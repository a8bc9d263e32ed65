"""A stable, diffable text form of the IR, one op per line, in the spirit of MLIR's.

    graph main(%x: tensor<batchx8xf32>) -> (%y) {
      %w = const tensor<8x8xf32>
      %y = MatMul(%x, %w) : tensor<batchx8xf32>
      return %y
    }
"""

from __future__ import annotations

import numpy as np

from .graph import Graph, Node, Value
from .types import format_type

SMALL_CONSTANT = 8
"""Constants with at most this many elements are printed with their contents."""


def format_graph(graph: Graph, *, show_names: bool = False) -> str:
    inputs = ", ".join(f"%{n}: {format_type(graph.values[n].type)}" for n in graph.inputs)
    lines = [f"graph {graph.name}({inputs}) -> ({', '.join('%' + o for o in graph.outputs)}) {{"]
    used = {v for node in graph.nodes for v in node.inputs} | set(graph.outputs)
    for value in graph.initializers():
        if value.name in used:
            lines.append(f"  %{value.name} = {format_constant(value)}")
    for node in graph.nodes:
        lines.append("  " + format_node(graph, node, show_names=show_names))
    lines.append(f"  return {', '.join('%' + o for o in graph.outputs)}")
    lines.append("}")
    return "\n".join(lines)


def format_constant(value: Value) -> str:
    t = format_type(value.type)
    if value.data is None:
        return f"const {t} weightless"
    if value.data.size <= SMALL_CONSTANT:
        return f"const {_format_array(value.data)} : {t}"
    return f"const {t}"


def format_node(graph: Graph, node: Node, *, show_names: bool = False) -> str:
    outs = ", ".join(f"%{o}" if o else "_" for o in node.outputs)
    args = ", ".join(f"%{i}" if i else "_" for i in node.inputs)
    attrs = ", ".join(f"{k} = {_format_attr(v)}" for k, v in sorted(node.attrs.items()))
    types = ", ".join(format_type(graph.values[o].type) for o in node.outputs if o)
    text = f"{outs} = {node.qualified_type}({args})" + (f" {{{attrs}}}" if attrs else "") + f" : {types}"
    return text + (f"  // {node.name}" if show_names else "")


def _format_attr(value) -> str:
    if isinstance(value, np.ndarray):
        return _format_array(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_attr(v) for v in value) + "]"
    return str(value)


def _format_array(a: np.ndarray) -> str:
    if a.size > SMALL_CONSTANT:
        return f"dense<{a.dtype}, shape={list(a.shape)}>"
    flat = [_format_attr(x.item() if hasattr(x, "item") else x) for x in a.reshape(-1)]
    return f"dense<{'[' + ', '.join(flat) + ']' if a.ndim else flat[0]}>"
