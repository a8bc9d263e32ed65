"""MatMul epilogue fusion: MatMul [+ per-column bias] [+ activation] -> xpuc.FusedMatMul.

Accelerators apply the bias and activation while the output tile is still in registers /
the systolic array's drain, so the three ops become one. A step joins only when the value
before it has no other reader, so nothing else ever needs the un-fused intermediate.
Gemm (2-D, transB, bias) already is such an op and stays as it is.
"""

from __future__ import annotations

from ...graph import Graph, Node
from ...ops.composite import DOMAIN
from ..manager import graph_pass
from .pattern import replace_with, rewrite

EPILOGUES: dict[tuple[str, str, str | None], str] = {
    ("", "Relu", None): "Relu",
    ("", "Gelu", "none"): "Gelu",
    ("", "Gelu", "tanh"): "GeluTanh",
    (DOMAIN, "SiLU", None): "SiLU",
    ("", "Sigmoid", None): "Sigmoid",
    ("", "Tanh", None): "Tanh",
}
"""(domain, op type, Gelu's approximate) of an activation op -> FusedMatMul's activation name
(the keys of ``composite.ACTIVATIONS``)."""


def _only_reader(graph: Graph, value: str) -> Node | None:
    readers = graph.consumers(value)
    return readers[0][0] if graph.num_uses(value) == 1 and len(readers) == 1 else None


def _activation(node: Node) -> str | None:
    approximate = node.attr("approximate", "none") if node.op_type == "Gelu" else None
    return EPILOGUES.get((node.domain, node.op_type, approximate))


def _bias(graph: Graph, add: Node, product: str) -> str | None:
    """The constant operand of ``add`` when it varies along the last axis only and keeps the shape."""
    if add.domain or add.op_type != "Add" or len(add.inputs) != 2:
        return None
    bias = add.inputs[1] if add.inputs[0] == product else add.inputs[0]
    shape = graph.type_of(bias).shape
    if not graph.is_const(bias) or shape is None or any(d != 1 for d in shape[:-1]) \
            or graph.type_of(add.outputs[0]) != graph.type_of(product):
        return None
    return bias


def _fuse_epilogue(graph: Graph, matmul: Node) -> bool:
    if matmul.op_type != "MatMul" or matmul.domain:
        return False
    nodes, inputs, attrs = [matmul], list(matmul.inputs), {}
    reader = _only_reader(graph, matmul.outputs[0])
    bias = _bias(graph, reader, matmul.outputs[0]) if reader is not None else None
    if bias is not None:
        nodes.append(reader)
        inputs.append(bias)
        reader = _only_reader(graph, reader.outputs[0])
    activation = _activation(reader) if reader is not None else None
    if activation is not None:
        nodes.append(reader)
        attrs["activation"] = activation
    if len(nodes) == 1:
        return False
    replace_with(graph, nodes, "FusedMatMul", inputs, attrs, domain=DOMAIN, root=nodes[-1])
    return True


@graph_pass("fuse-matmul-epilogue")
def fuse_matmul_epilogue(graph: Graph) -> bool:
    return rewrite(graph, [_fuse_epilogue])
