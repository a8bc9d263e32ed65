"""Export the IR back to ONNX, so any optimized graph opens in Netron and runs in onnxruntime.

Composite ``xpuc`` ops are emitted as model-local functions carrying their ONNX bodies.
Weightless constants become external-data references to a file that does not exist: the
structure is exact, the numbers are absent, as they were on import.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import Graph, Node, Value
from .ops import composite
from .types import TensorType

IR_VERSION = 10
"""ONNX IR version written: the newest that onnxruntime 1.20+ reads."""


def to_onnx(graph: Graph) -> onnx.ModelProto:
    """An ONNX model equivalent to ``graph``."""
    functions: dict[str, onnx.FunctionProto] = {}
    nodes = [_node_proto(graph, node, functions) for node in graph.nodes]
    used = {v for n in nodes for v in n.input} | set(graph.outputs)
    initializers = [_initializer(v, graph.name) for v in graph.initializers() if v.name in used]
    internal = {o for n in graph.nodes for o in n.outputs if o} - set(graph.outputs)
    g = helper.make_graph(
        nodes, graph.name,
        [_value_info(n, graph.values[n].type) for n in graph.inputs],
        [_value_info(n, graph.values[n].type) for n in graph.outputs],
        initializers,
        value_info=[_value_info(n, graph.values[n].type) for n in sorted(internal)
                    if graph.values[n].type.dtype is not None],
    )
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(graph.opsets.items()) if d != composite.DOMAIN]
    if functions:
        opsets.append(helper.make_opsetid(composite.DOMAIN, 1))
    model = helper.make_model(g, opset_imports=opsets, ir_version=IR_VERSION, producer_name="xpuc",
                              functions=list(functions.values()))
    for key, value in sorted(graph.metadata.items()):
        model.metadata_props.add(key=key, value=value)
    return model


def _node_proto(graph: Graph, node: Node, functions: dict[str, onnx.FunctionProto]) -> onnx.NodeProto:
    op_type = node.op_type
    if node.domain == composite.DOMAIN:
        op_type = composite.function_name(node.op_type, node.attrs, len(node.inputs))
        if op_type not in functions:
            functions[op_type] = composite.function_body(node.op_type, node.attrs, len(node.inputs), graph.opset)
        attrs = {}
    else:
        attrs = {k: attribute_proto(node, k, v, graph.opsets.get(node.domain, graph.opset)) for k, v in node.attrs.items()}
    proto = helper.make_node(op_type, node.inputs, node.outputs, name=node.name, domain=node.domain)
    proto.attribute.extend(attrs.values())
    return proto


def attribute_proto(node: Node, key: str, value, opset: int) -> onnx.AttributeProto:
    if isinstance(value, np.ndarray):
        return helper.make_attribute(key, numpy_helper.from_array(value))
    if isinstance(value, (list, tuple)) and not value:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        return helper.make_attribute(key, [], attr_type=schema.attributes[key].type)
    return helper.make_attribute(key, value)


def _initializer(value: Value, graph_name: str) -> onnx.TensorProto:
    if value.data is not None:
        return numpy_helper.from_array(np.asarray(value.data), value.name)
    tensor = onnx.TensorProto(name=value.name, data_type=value.type.dtype.onnx, dims=list(value.type.shape))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=f"{graph_name}.weightless")
    return tensor


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    dtype = t.dtype.onnx if t.dtype is not None else onnx.TensorProto.UNDEFINED
    shape = None if t.shape is None else [d if isinstance(d, int) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, dtype, shape)
