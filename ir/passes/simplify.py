"""Algebraic simplification: remove ops that do nothing, merge ops that cancel.

Each rule is a small function ``(graph, node) -> bool`` (True when it changed the graph),
listed in ``RULES`` by op type. Exporters emit many no-ops: identity reshapes and casts,
inference-mode Dropout, Expand to the same shape, x*1, x+0, transposes that undo each other,
and 2-D Gemms wrapped in reshapes where a MatMul would broadcast.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..graph import Graph, Node
from .dce import eliminate_dead_code
from .manager import FixedPoint, graph_pass
from .shape_inference import infer_shapes

Rule = Callable[[Graph, Node], bool]


def bypass(graph: Graph, node: Node, source: str) -> bool:
    """Make readers of the node's first output read ``source`` (of the same type) instead.

    A graph output keeps its name: the op computing ``source`` is made to write it directly.
    """
    out = node.outputs[0]
    if graph.values[out].type != graph.values[source].type:
        return False
    if out not in graph.outputs:
        graph.replace_uses(out, source)
        return True
    producer = graph.producer(source)
    if producer is None or source in graph.outputs or graph.num_uses(source) != 1:
        return False
    graph.remove_node(node)
    graph.remove_node(producer)
    graph.add_node(producer.op_type, producer.inputs, [out if o == source else o for o in producer.outputs],
                   producer.attrs, domain=producer.domain, name=producer.name)
    return True


def _same_shape_as_input(graph: Graph, node: Node) -> bool:
    return bypass(graph, node, node.inputs[0])


def _dropout(graph: Graph, node: Node) -> bool:
    """Dropout is the identity unless ``training_mode`` may be true or its mask is read."""
    mask_used = len(node.outputs) > 1 and node.outputs[1] and graph.num_uses(node.outputs[1])
    training = node.inputs[2] if len(node.inputs) > 2 else ""
    if mask_used or training and (graph.const_data(training) is None or np.any(graph.const_data(training))):
        return False
    return bypass(graph, node, node.inputs[0])


def _slice(graph: Graph, node: Node) -> bool:
    """A slice keeping the whole shape with forward steps keeps every element in order."""
    steps = graph.const_data(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else np.ones(1)
    return steps is not None and bool(np.all(steps > 0)) and bypass(graph, node, node.inputs[0])


def _perm(graph: Graph, node: Node) -> list[int] | None:
    """A Transpose's permutation; the default reverses the dims."""
    perm = node.attrs.get("perm")
    rank = graph.values[node.inputs[0]].type.rank
    return list(perm) if perm is not None else None if rank is None else list(range(rank))[::-1]


def _transpose(graph: Graph, node: Node) -> bool:
    perm = _perm(graph, node)
    if perm is not None and perm == sorted(perm):
        return bypass(graph, node, node.inputs[0])
    inner = graph.producer(node.inputs[0])
    if perm is None or inner is None or inner.op_type != "Transpose" or _perm(graph, inner) is None:
        return False
    composed = [_perm(graph, inner)[p] for p in perm]  # transpose(transpose(x, p1), p2) = transpose(x, p1[p2])
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


def _unflatten_gemm(graph: Graph, node: Node) -> bool:
    """Reshape(Gemm(Reshape(x, [-1, K]), W, b), [..., N]) is MatMul(x, W) + b.

    Exporters flatten the leading dims only because Gemm is 2-D; MatMul broadcasts over
    them, and the pair of reshapes (with their shape arithmetic) goes away.
    """
    gemm = graph.producer(node.inputs[0])
    if gemm is None or gemm.op_type != "Gemm" or gemm.attrs.get("transA", 0) or graph.num_uses(gemm.outputs[0]) != 1 \
            or gemm.attrs.get("alpha", 1.0) != 1.0 or gemm.attrs.get("beta", 1.0) != 1.0:
        return False
    flat = graph.producer(gemm.inputs[0])
    if flat is None or flat.op_type not in ("Reshape", "Flatten"):
        return False
    x = flat.inputs[0]
    x_shape, out_shape = graph.values[x].type.shape, graph.values[node.outputs[0]].type.shape
    flat_shape = graph.values[flat.outputs[0]].type.shape
    bias = gemm.inputs[2] if len(gemm.inputs) > 2 and gemm.inputs[2] else ""
    weight, transposed = gemm.inputs[1], gemm.attrs.get("transB", 0)
    if x_shape is None or out_shape is None or flat_shape is None or len(x_shape) < 2 \
            or out_shape[:-1] != x_shape[:-1] or flat_shape[-1] != x_shape[-1] \
            or bias and len(graph.values[bias].type.shape or (0, 0)) > 1 \
            or transposed and graph.const_data(weight) is None:
        return False
    if transposed:
        weight = graph.add_constant(graph.const_data(weight).T, f"{weight}_t")
    out = node.outputs[0]
    graph.remove_node(node)
    product = graph.add_node("MatMul", [x, weight], [out] if not bias else 1, name=f"{gemm.name}_matmul")
    if bias:
        graph.add_node("Add", [product.outputs[0], bias], [out], name=f"{gemm.name}_bias")
    return True


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
    "Slice": [_slice],
    "Flatten": [_same_shape_as_input],
    "Transpose": [_transpose],
    "Reshape": [_reshape, _unflatten_gemm],
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


@graph_pass("simplify-rules")
def simplify_rules(graph: Graph) -> bool:
    """One sweep of RULES over every op; a rule that fires may enable another on an op the sweep passed."""
    changed = False
    for node in graph.nodes:
        if node.domain or not graph.has_node(node.name) or graph.node(node.name) is not node:
            continue  # removed, or rebuilt by bypass, earlier in this sweep
        for rule in RULES.get(node.op_type, ()):
            if rule(graph, node):
                changed = True
                break
    return changed


simplify = FixedPoint("simplify", [simplify_rules], cleanup=[eliminate_dead_code, infer_shapes])
"""RULES until nothing changes, with the dead ops they leave removed and types refreshed in between."""
