"""Algebraic simplification: remove ops that do nothing, merge ops that cancel.

Each rule is a small function ``(graph, node) -> bool`` (True when it changed the graph),
listed in ``RULES`` by op type. Exporters emit many no-ops: identity reshapes and casts,
inference-mode Dropout, Expand to the same shape, x*1, x+0, transposes that undo each other.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..graph import Graph, Node
from .dce import eliminate_dead_code
from .shape_inference import infer_shapes

Rule = Callable[[Graph, Node], bool]


def bypass(graph: Graph, node: Node, source: str) -> bool:
    """Make readers of the node's first output read ``source``; keeps graph output names stable."""
    out = node.outputs[0]
    if out in graph.outputs or graph.values[out].type != graph.values[source].type:
        return False
    graph.replace_uses(out, source)
    return True


def _same_shape_as_input(graph: Graph, node: Node) -> bool:
    return bypass(graph, node, node.inputs[0])


def _dropout(graph: Graph, node: Node) -> bool:
    mask_used = len(node.outputs) > 1 and node.outputs[1] and graph.num_uses(node.outputs[1])
    training = len(node.inputs) > 2 and node.inputs[2] and graph.const_data(node.inputs[2])
    if mask_used or (training is not None and training is not False and np.any(training)):
        return False
    return bypass(graph, node, node.inputs[0])


def _transpose(graph: Graph, node: Node) -> bool:
    perm = node.attrs.get("perm")
    if perm is not None and list(perm) == sorted(perm):
        return bypass(graph, node, node.inputs[0])
    inner = graph.producer(node.inputs[0])
    if perm is None or inner is None or inner.op_type != "Transpose" or inner.attrs.get("perm") is None:
        return False
    composed = [inner.attrs["perm"][p] for p in perm]  # transpose(transpose(x, p1), p2) = transpose(x, p1[p2])
    graph.set_input(node, 0, inner.inputs[0])
    node.attrs["perm"] = composed
    return True


def _reshape(graph: Graph, node: Node) -> bool:
    if bypass(graph, node, node.inputs[0]):
        return True
    inner = graph.producer(node.inputs[0])
    target = graph.const_data(node.inputs[1])
    if inner is not None and inner.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") \
            and target is not None and not np.any(target == 0):
        graph.set_input(node, 0, inner.inputs[0])  # reshape(reshape(x)) == reshape(x) when the target is explicit
        return True
    return False


def _identity_element(graph: Graph, node: Node) -> bool:
    """x + 0, x - 0, x * 1, x / 1, x ** 1 whose constant does not change x's shape."""
    neutral = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1, "Pow": 1}[node.op_type]
    sides = [(0, 1), (1, 0)] if node.op_type in ("Add", "Mul") else [(0, 1)]
    for keep, const in sides:
        data = graph.const_data(node.inputs[const])
        if data is not None and data.size and np.all(data == neutral) and bypass(graph, node, node.inputs[keep]):
            return True
    return False


def _single_input(graph: Graph, node: Node) -> bool:
    present = [v for v in node.inputs if v]
    return len(present) == 1 and len(node.outputs) == 1 and bypass(graph, node, present[0])


def _where(graph: Graph, node: Node) -> bool:
    cond = graph.const_data(node.inputs[0])
    if cond is None or not (np.all(cond) or not np.any(cond)):
        return False
    return bypass(graph, node, node.inputs[1] if np.all(cond) else node.inputs[2])


RULES: dict[str, list[Rule]] = {
    "Identity": [_same_shape_as_input],
    "Dropout": [_dropout],
    "Cast": [_same_shape_as_input],
    "Expand": [_same_shape_as_input],
    "Squeeze": [_same_shape_as_input],
    "Unsqueeze": [_same_shape_as_input],
    "Slice": [_same_shape_as_input],
    "Flatten": [_same_shape_as_input],
    "Transpose": [_transpose],
    "Reshape": [_reshape],
    "Add": [_identity_element],
    "Sub": [_identity_element],
    "Mul": [_identity_element],
    "Div": [_identity_element],
    "Pow": [_identity_element],
    "Concat": [_single_input],
    "Sum": [_single_input],
    "Max": [_single_input],
    "Min": [_single_input],
    "Mean": [_single_input],
    "Where": [_where],
}


def simplify(graph: Graph) -> Graph:
    """Apply RULES until nothing changes."""
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            if node.domain or not graph.has_node(node.name):
                continue
            for rule in RULES.get(node.op_type, ()):
                if rule(graph, node):
                    changed = True
                    break
        if changed:
            eliminate_dead_code(graph)
            infer_shapes(graph)
    return graph
