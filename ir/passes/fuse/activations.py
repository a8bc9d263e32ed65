"""Activation fusions: decomposed GELU, SiLU and the SwiGLU gated MLP.

Products are matched through :func:`pattern.product`, so every association and operand
order of ``0.5 * x * (1 + ...)`` an exporter writes (``x * 0.5``, ``x / 2``, the 0.5 applied
before or after the bracket) looks the same, and constants are compared with a tolerance.
"""

from __future__ import annotations

import math

from ...graph import Graph, Node
from ...ops.composite import DOMAIN
from ..manager import graph_pass
from .pattern import close, operands, private, producer_of, product, replace_with, rewrite, scalar

TANH_COEFF = 0.044715
"""The cubic coefficient of the tanh approximation of GELU (Hendrycks & Gimpel)."""


def _one_plus(graph: Graph, value: str, op_type: str) -> tuple[Node, Node] | None:
    """Match ``1 + op_type(a)``: (the Add, the op), both single-use."""
    add = producer_of(graph, value, "Add")
    if add is None:
        return None
    for one, other in operands(add):
        inner = producer_of(graph, other, op_type)
        if scalar(graph, one) == 1.0 and inner is not None:
            return add, inner
    return None


def _erf_argument(graph: Graph, erf: Node, x: str) -> list[Node] | None:
    """erf's argument is x / sqrt(2): returns the ops computing it."""
    scale, leaves, nodes = product(graph, erf.inputs[0])
    return nodes if leaves == [x] and nodes and close(scale, 1 / math.sqrt(2)) else None


def _tanh_argument(graph: Graph, tanh: Node, x: str) -> list[Node] | None:
    """tanh's argument is sqrt(2/pi) * (x + 0.044715 * x^3): returns the ops computing it."""
    scale, leaves, outer = product(graph, tanh.inputs[0])
    add = producer_of(graph, leaves[0], "Add") if len(leaves) == 1 and outer else None
    if add is None or not close(scale, math.sqrt(2 / math.pi)):
        return None
    for lin, cubic in operands(add):
        coeff, factors, inner = product(graph, cubic)
        if lin == x and factors == [x, x, x] and inner and close(coeff, TANH_COEFF):
            return outer + [add] + inner
    return None


GELU_FORMS = {"none": ("Erf", _erf_argument), "tanh": ("Tanh", _tanh_argument)}
"""Gelu ``approximate`` attribute -> the op inside ``1 + op(...)`` and its argument matcher."""


def _fuse_gelu(graph: Graph, root: Node) -> bool:
    if root.op_type != "Mul" or root.domain:
        return False
    scale, leaves, nodes = product(graph, root.outputs[0])
    if len(leaves) != 2 or not close(scale, 0.5):
        return False
    for x, bracket in (leaves, leaves[::-1]):
        for approximate, (op_type, argument) in GELU_FORMS.items():
            found = _one_plus(graph, bracket, op_type)
            arg_nodes = argument(graph, found[1], x) if found is not None else None
            pattern = nodes + list(found or ()) + (arg_nodes or [])
            if arg_nodes is not None and private(graph, pattern, root):
                attrs = {"approximate": "tanh"} if approximate == "tanh" else {}
                replace_with(graph, pattern, "Gelu", [x], attrs, root=root)
                return True
    return False


def _fuse_silu(graph: Graph, root: Node) -> bool:
    """x * Sigmoid(x) -> xpuc.SiLU(x)."""
    if root.op_type != "Mul" or root.domain:
        return False
    for x, s in operands(root):
        sigmoid = producer_of(graph, s, "Sigmoid")
        if sigmoid is not None and sigmoid.inputs[0] == x:
            replace_with(graph, [root, sigmoid], "SiLU", [x], domain=DOMAIN, root=root)
            return True
    return False


def _fuse_swiglu(graph: Graph, root: Node) -> bool:
    """SiLU(gate) * up -> xpuc.SwiGLU(gate, up), when the SiLU feeds nothing else."""
    if root.op_type != "Mul" or root.domain:
        return False
    for s, up in operands(root):
        silu = graph.producer(s)
        if silu is not None and (silu.domain, silu.op_type) == (DOMAIN, "SiLU") and graph.num_uses(s) == 1 \
                and graph.type_of(silu.inputs[0]) == graph.type_of(up):
            replace_with(graph, [root, silu], "SwiGLU", [silu.inputs[0], up], domain=DOMAIN, root=root)
            return True
    return False


@graph_pass("fuse-gelu")
def fuse_gelu(graph: Graph) -> bool:
    """0.5 * x * (1 + erf(x / sqrt 2)) -> Gelu; the tanh form -> Gelu(approximate="tanh")."""
    return rewrite(graph, [_fuse_gelu])


@graph_pass("fuse-silu")
def fuse_silu(graph: Graph) -> bool:
    return rewrite(graph, [_fuse_silu])


@graph_pass("fuse-swiglu")
def fuse_swiglu(graph: Graph) -> bool:
    return rewrite(graph, [_fuse_swiglu])
