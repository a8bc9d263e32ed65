"""Dead-code elimination: drop ops and constants that no graph output depends on."""

from __future__ import annotations

from ..graph import Graph
from .manager import graph_pass


@graph_pass("dce")
def eliminate_dead_code(graph: Graph) -> bool:
    changed = False
    for node in reversed(graph.nodes):
        if all(not out or graph.num_uses(out) == 0 for out in node.outputs):
            graph.remove_node(node)
            changed = True
    for value in list(graph.values.values()):
        if value.name not in graph.inputs and graph.producer(value.name) is None and graph.num_uses(value.name) == 0:
            graph.remove_value(value.name)
            changed = True
    return changed
