"""Graphviz DOT export of the IR: ops as boxes, tensors as labelled edges."""

from __future__ import annotations

from .graph import Graph
from .types import format_type


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    """DOT text for ``graph`` (render with ``dot -Tsvg``)."""
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=TB;", "  node [shape=box, fontname=Helvetica];"]
    for name in graph.inputs:
        lines.append(f"  {_quote('in:' + name)} [shape=ellipse, label={_quote(name + chr(10) + str(graph.values[name].type))}];")
    for name in graph.outputs:
        lines.append(f"  {_quote('out:' + name)} [shape=ellipse, label={_quote(name)}];")
    for node in graph.nodes:
        lines.append(f"  {_quote(node.name)} [label={_quote(node.qualified_type + chr(10) + node.name)}];")
        for index, value in enumerate(node.inputs):
            if value in graph.inputs:
                lines.append(f"  {_quote('in:' + value)} -> {_quote(node.name)};")
        for value in node.outputs:
            if value in graph.outputs:
                lines.append(f"  {_quote(node.name)} -> {_quote('out:' + value)};")
    for src, dst, data in graph.nx.edges(data=True):
        label = format_type(graph.values[data["value"]].type)
        lines.append(f"  {_quote(src)} -> {_quote(dst)} [label={_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
