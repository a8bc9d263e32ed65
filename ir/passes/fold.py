"""Constant folding.

Two sources of constants: shape arithmetic that symbolic shape inference fully resolved
(``Shape`` of a static tensor and everything computed from it), and ops whose inputs are
all constants, evaluated with ``onnx.reference`` (never a hand-written interpreter). Folding
never grows the model much: an op whose result is far larger than its inputs (an Expand
or ConstantOfShape of a big shape) stays an op.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..export import attribute_proto
from ..graph import Graph, Node
from ..types import TensorType
from .dce import eliminate_dead_code
from .shape_inference import symbolic_values

MAX_GROWTH_BYTES = 1 << 20
"""A folded result may exceed its inputs' size by at most this much (1 MiB)."""

NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def fold_constants(graph: Graph) -> Graph:
    known = symbolic_values(graph)
    for node in graph.nodes:
        if node.op_type in NEVER_FOLD or node.domain:
            continue
        outs = [o for o in node.outputs if o]
        resolved = [_concrete(known.get(o), graph.values[o].type) for o in outs]
        if outs and all(r is not None for r in resolved):
            for name, data in zip(outs, resolved):
                graph.make_constant(name, data)
        elif _foldable(graph, node):
            for name, data in zip(node.outputs, _evaluate(graph, node)):
                if name:
                    graph.make_constant(name, data)
    return eliminate_dead_code(graph)


def _concrete(value: np.ndarray | None, t: TensorType) -> np.ndarray | None:
    """A symbolically computed value, if it holds no symbols, in the value's dtype."""
    if value is None or t.dtype is None:
        return None
    if value.dtype == object and not all(isinstance(x, (int, np.integer)) for x in value.flat):
        return None
    return np.asarray(value.astype(np.int64) if value.dtype == object else value).astype(t.dtype.numpy)


def _foldable(graph: Graph, node: Node) -> bool:
    inputs = [v for v in node.inputs if v]
    if not all(graph.const_data(v) is not None for v in inputs):
        return False
    in_bytes = sum(graph.const_data(v).nbytes for v in inputs)
    out_bytes = 0
    for o in node.outputs:
        if o:
            nbytes = graph.values[o].type.nbytes
            if nbytes is None:
                return False
            out_bytes += nbytes
    return out_bytes <= in_bytes + MAX_GROWTH_BYTES


def _evaluate(graph: Graph, node: Node) -> list[np.ndarray]:
    """Run one op on its constant inputs with onnx's reference implementation."""
    inputs = [v for v in node.inputs if v]
    proto = helper.make_node(node.op_type, node.inputs, node.outputs, domain=node.domain)
    proto.attribute.extend(attribute_proto(node, k, v, graph.opset) for k, v in node.attrs.items())
    model = helper.make_model(
        helper.make_graph([proto], "fold", [], [helper.make_value_info(o, onnx.TypeProto()) for o in node.outputs if o],
                          [numpy_helper.from_array(np.asarray(graph.const_data(v)), v) for v in inputs]),
        opset_imports=[helper.make_opsetid("", graph.opset)])
    results = ReferenceEvaluator(model).run(None, {})
    it = iter(results)
    return [np.asarray(next(it)) if o else None for o in node.outputs]
