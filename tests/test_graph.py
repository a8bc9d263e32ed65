"""The Graph data structure: building, rewiring, verification, printing and DOT."""

import numpy as np
import pytest

import ir
from ir import DType, Graph, TensorType
from ir.errors import VerificationError
from ir.passes import infer_shapes

F32 = DType.FLOAT32


def small_graph() -> Graph:
    g = Graph("small")
    g.add_input("x", TensorType(F32, ("batch", 8)))
    w = g.add_constant(np.ones((8, 4), np.float32), "w")
    mm = g.add_node("MatMul", ["x", w], ["h"])
    g.add_node("Relu", [mm.outputs[0]], ["y"])
    g.outputs.append("y")
    return infer_shapes(g)


def test_edges_follow_values():
    g = small_graph()
    (src, dst, data), = g.nx.edges(data=True)
    assert g.node(src).op_type == "MatMul" and g.node(dst).op_type == "Relu"
    assert data == {"value": "h", "src_index": 0, "dst_index": 0}
    assert g.producer("h").op_type == "MatMul"
    assert [(n.op_type, i) for n, i in g.consumers("h")] == [("Relu", 0)]


def test_types_are_inferred_with_symbols():
    g = small_graph()
    assert g.values["y"].type == TensorType(F32, ("batch", 4))


def test_rewiring_keeps_edges_in_step():
    g = small_graph()
    relu = g.producer("y")
    g.set_input(relu, 0, "x")
    assert g.nx.number_of_edges() == 0
    assert g.consumers("h") == []
    g.set_input(relu, 0, "h")
    assert g.nx.number_of_edges() == 1


def test_second_producer_is_rejected():
    g = small_graph()
    with pytest.raises(VerificationError, match="two producers"):
        g.add_node("Relu", ["x"], ["y"])


def test_cycle_is_reported():
    g = Graph("cyclic")
    g.add_input("x", TensorType(F32, (2,)))
    g.add_node("Add", ["x", "b"], ["a"], name="first")
    g.add_node("Relu", ["a"], ["b"], name="second")
    g.outputs.append("b")
    with pytest.raises(VerificationError, match="cycle"):
        ir.verify(g)


def test_undefined_input_is_reported():
    g = Graph("dangling")
    g.add_node("Relu", ["nowhere"], ["y"])
    g.outputs.append("y")
    with pytest.raises(VerificationError, match="nothing defines"):
        ir.verify(g)


def test_copy_is_independent():
    g = small_graph()
    c = g.copy()
    c.remove_node(c.producer("y"))
    assert len(g) == 2 and len(c) == 1
    assert g.producer("y") is not None


def test_printer_is_stable_and_readable():
    text = ir.format_graph(small_graph())
    assert text == ir.format_graph(small_graph())
    assert "%h = MatMul(%x, %w_0) : tensor<batchx4xf32>" in text
    assert text.splitlines()[0] == "graph small(%x: tensor<batchx8xf32>) -> (%y) {"


def test_dot_export_names_every_op():
    dot = ir.to_dot(small_graph())
    assert dot.startswith('digraph "small"') and '"MatMul' in dot and "->" in dot
