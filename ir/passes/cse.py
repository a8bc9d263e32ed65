"""Common-subexpression elimination: one copy of each identical op and small constant."""

from __future__ import annotations

import numpy as np

from .. import ops
from ..graph import Graph
from .manager import graph_pass

MAX_DEDUP_ELEMENTS = 4096
"""Constants up to this size are compared by content (exporters repeat small ones a lot)."""


def _hashable(value):
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


@graph_pass("cse")
def eliminate_common_subexpressions(graph: Graph) -> bool:
    """Readers of a duplicate op or small constant read the first copy; duplicate ops are removed,
    duplicate constants are left for DCE."""
    canonical: dict = {}
    changed = False
    for value in list(graph.initializers()):
        if value.data is not None and value.data.size <= MAX_DEDUP_ELEMENTS and value.name not in graph.outputs:
            key = ("const", _hashable(value.data))
            first = canonical.setdefault(key, value.name)
            if first != value.name and graph.num_uses(value.name):
                graph.replace_uses(value.name, first)
                changed = True
    for node in graph.nodes:
        if not ops.lookup(node.op_type, node.domain).deterministic:  # two random draws are not one
            continue
        key = (node.domain, node.op_type, tuple(node.inputs), len(node.outputs),
               tuple(sorted((k, _hashable(v)) for k, v in node.attrs.items())))
        first = canonical.setdefault(key, node)
        if first is node or any(o in graph.outputs for o in node.outputs):
            continue
        for mine, theirs in zip(node.outputs, first.outputs):
            if mine and theirs:
                graph.replace_uses(mine, theirs)
                changed = True
            elif mine:
                break
        else:
            graph.remove_node(node)
            changed = True
    return changed
