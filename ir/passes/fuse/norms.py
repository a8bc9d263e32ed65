"""Normalization fusions: decomposed RMS norms and layer norms become one ONNX op.

Both patterns share a core, matched forward from the ReduceMean of squares:

    mean(c * c, last axis) + eps  ->  sqrt -> reciprocal | 1 / . | c / .   (or pow -0.5)
    normalized = c * that

where ``c`` is the input itself (RMSNormalization) or ``x - mean(x)`` (LayerNormalization).
A tail of a per-channel weight multiply, (LayerNormalization only) a per-channel bias add,
and a Cast back to the input's type (when the input was upcast first) is absorbed too.
Norm ops normalize trailing axes from ``axis``, so only last-axis reductions fuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...graph import Graph, Node
from ..manager import graph_pass
from .pattern import (add_constant_like, operands, private, producer_of, product, replace_with, rewrite, scalar,
                      sole_consumer)


@dataclass
class _Match:
    """What a norm matcher found: its input, epsilon, the ops to replace and the tail it absorbed."""

    x: str
    eps: float
    nodes: list[Node]
    last: Node
    precast: Node | None = None
    scale: str | None = None
    bias: str | None = None
    absorbed: list[Node] = field(default_factory=list)


def _reduces_last_axis(graph: Graph, node: Node) -> bool:
    """A keepdims ReduceMean over exactly the last axis of its input."""
    rank = graph.type_of(node.inputs[0]).rank
    axes = graph.const_data(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    if not rank or axes is None or node.attr("keepdims", 1) != 1:
        return False
    return [int(a) % rank for a in axes.reshape(-1)] == [rank - 1]


def _other(node: Node, value: str) -> str | None:
    """The other input of a binary op that reads ``value``."""
    if len(node.inputs) != 2 or value not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] == value else node.inputs[0]


def _normalize(graph: Graph, mean_sq: Node, centered: str) -> tuple[float, list[Node]] | None:
    """Match ``centered * (mean_sq + eps) ** -0.5`` forward from mean_sq; (eps, ops, last op last)."""
    add = sole_consumer(graph, mean_sq.outputs[0], "Add")
    eps = scalar(graph, _other(add, mean_sq.outputs[0])) if add is not None else None
    if eps is None or eps <= 0:
        return None
    var = add.outputs[0]
    sqrt = sole_consumer(graph, var, "Sqrt")
    if sqrt is None:
        inv = sole_consumer(graph, var, "Pow")
        if inv is None or inv.inputs[0] != var or scalar(graph, inv.inputs[1]) != -0.5:
            return None
        chain = [add, inv]
    else:
        inv = sole_consumer(graph, sqrt.outputs[0], ("Reciprocal", "Div"))
        if inv is None or inv.op_type == "Div" and inv.inputs[1] != sqrt.outputs[0]:
            return None
        if inv.op_type == "Div" and inv.inputs[0] == centered:
            return eps, [add, sqrt, inv]
        if inv.op_type == "Div" and scalar(graph, inv.inputs[0]) != 1.0:
            return None
        chain = [add, sqrt, inv]
    mul = sole_consumer(graph, inv.outputs[0], "Mul")
    if mul is None or _other(mul, inv.outputs[0]) != centered:
        return None
    return eps, chain + [mul]


def _last_dim(graph: Graph, value: str):
    shape = graph.type_of(value).shape
    return shape[-1] if shape else None


def _per_channel(graph: Graph, value: str, like: str) -> bool:
    """``value`` is a vector over the last axis of ``like`` (or one element): a norm scale or bias."""
    shape, dim = graph.type_of(value).shape, _last_dim(graph, like)
    if shape is None or len(shape) > 1:
        return False
    return graph.type_of(value).numel == 1 or dim is not None and shape[-1] == dim


def _core(graph: Graph, mean_sq: Node) -> tuple[str, _Match] | None:
    """("layer" | "rms", match) for the norm whose mean of squares is ``mean_sq``."""
    if not _reduces_last_axis(graph, mean_sq):
        return None
    scale, leaves, squares = product(graph, mean_sq.inputs[0])
    if not squares or scale != 1.0 or len(leaves) != 2 or leaves[0] != leaves[1]:
        return None
    centered = leaves[0]
    found = _normalize(graph, mean_sq, centered)
    if found is None:
        return None
    eps, chain = found
    nodes = [mean_sq, *squares, *chain]
    sub = producer_of(graph, centered, "Sub", single_use=False)
    mean = producer_of(graph, sub.inputs[1], "ReduceMean") if sub is not None else None
    if mean is not None and mean.inputs[0] == sub.inputs[0] and _reduces_last_axis(graph, mean):
        return "layer", _Match(sub.inputs[0], eps, nodes + [sub, mean], chain[-1])
    return "rms", _Match(centered, eps, nodes, chain[-1])


def _absorb_tail(graph: Graph, kind: str, m: _Match) -> None:
    """Extend the match over a per-channel weight, a bias (layer norms) and a cast back to the
    type the input had before an upcast, in whatever order the exporter wrote them."""
    precast = producer_of(graph, m.x, "Cast", single_use=False)
    source = graph.type_of(precast.inputs[0]).dtype if precast is not None else None
    while (nxt := sole_consumer(graph, m.last.outputs[0], ("Mul", "Add", "Cast"))) is not None:
        other = _other(nxt, m.last.outputs[0])
        if nxt.op_type == "Cast":
            if source is None or m.precast is not None or nxt.attr("to") != source.onnx:
                return
            m.precast = precast
        elif nxt.op_type == "Mul" and m.scale is None and m.bias is None and _per_channel(graph, other, m.x):
            m.scale = other
        elif nxt.op_type == "Add" and kind == "layer" and m.bias is None and _per_channel(graph, other, m.x):
            m.bias = other
        else:
            return
        m.absorbed.append(nxt)
        m.last = nxt


def _scale_input(graph: Graph, m: _Match, x: str) -> str | None:
    """The scale operand: the weight found, Gemma's ``1 + w`` folded when w is known, or ones."""
    if m.scale is None:
        dim = _last_dim(graph, x)
        return add_constant_like(graph, np.ones(dim), x, "norm_scale") if isinstance(dim, int) else None
    plus_one = producer_of(graph, m.scale, "Add", single_use=False)
    if plus_one is not None:
        for w, one in operands(plus_one):
            if scalar(graph, one) == 1.0 and graph.const_data(w) is not None:
                return add_constant_like(graph, graph.const_data(w) + 1.0, x, "norm_scale")
    return m.scale


def _fuse_norm(graph: Graph, mean_sq: Node, want: str) -> bool:
    if mean_sq.op_type != "ReduceMean" or mean_sq.domain:
        return False
    core = _core(graph, mean_sq)
    if core is None or core[0] != want:
        return False
    kind, m = core
    _absorb_tail(graph, kind, m)
    nodes = m.nodes + m.absorbed + ([m.precast] if m.precast is not None else [])
    x = m.precast.inputs[0] if m.precast is not None else m.x
    dtype = graph.type_of(x).dtype
    if dtype is None or not dtype.is_float or not private(graph, nodes, m.last):
        return False
    scale = _scale_input(graph, m, x)
    if scale is None or any(graph.type_of(v).dtype != dtype for v in (scale, m.bias) if v):
        return False
    op = {"rms": "RMSNormalization", "layer": "LayerNormalization"}[kind]
    inputs = [x, scale] + ([m.bias] if m.bias else [])
    replace_with(graph, nodes, op, inputs, {"axis": -1, "epsilon": m.eps, "stash_type": 1}, root=m.last)
    return True


@graph_pass("fuse-rms-norm")
def fuse_rms_norm(graph: Graph) -> bool:
    """x / sqrt(mean(x^2) + eps) * w  ->  RMSNormalization(x, w)."""
    return rewrite(graph, [lambda g, n: _fuse_norm(g, n, "rms")])


@graph_pass("fuse-layer-norm")
def fuse_layer_norm(graph: Graph) -> bool:
    """(x - mean(x)) / sqrt(var(x) + eps) * g + b  ->  LayerNormalization(x, g, b)."""
    return rewrite(graph, [lambda g, n: _fuse_norm(g, n, "layer")])
