"""The quantize pass: its formats table, its calibration (checked against hand-computed codes
and scales), the ONNX it writes, and what it leaves alone."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ir
from frontends import onnx as onnx_frontend
from ir.dtypes import DType
from ir.formats import ALIASES, FORMATS, NAMES, UnknownFormatError, lookup
from ir.passes import optimize, quantize
from ir.passes.quantize import Role, quantize_weight

COST_MODEL_NAMES = ("native", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
"""The ``--precision`` names of the cost model's policy (issue 8): the same table serves both."""


def test_every_cost_model_name_is_a_format():
    assert set(COST_MODEL_NAMES) <= set(NAMES)
    assert lookup("fp8") is FORMATS["fp8-e4m3"] and lookup("int4") is FORMATS["int4-g128"]
    assert all(target in FORMATS for target in ALIASES.values())
    with pytest.raises(UnknownFormatError, match="unknown precision 'int5'.*int4-g32"):
        lookup("int5")


def test_format_fields_name_the_element_types():
    w8a8 = FORMATS["w8a8"]
    assert (w8a8.weights, w8a8.activations, w8a8.accumulator) == (DType.INT8, DType.UINT8, DType.INT32)
    assert FORMATS["int4-g64"].weight_bits == 4 + 32 / 64  # codes plus a float32 scale per 64 weights
    assert FORMATS["ternary"].packed_bits == 2 and FORMATS["ternary"].weights is DType.INT4
    assert not FORMATS["tf32"].changes_graph and FORMATS["bf16"].changes_graph


def _matmul_graph(w: np.ndarray | None, shape=None, op="MatMul", **attrs) -> ir.Graph:
    """y = x @ w, then y + 1 (so the product is not the graph's head)."""
    shape = shape or w.shape
    g = ir.Graph()
    g.add_input("x", ir.TensorType(DType.FLOAT32, (2, shape[1] if attrs.get("transB") else shape[0])))
    g.add_value("w", ir.TensorType(DType.FLOAT32, tuple(shape)), const=True, data=w)
    y = g.add_node(op, ["x", "w"], 1, attrs).outputs[0]
    g.outputs = [g.add_node("Add", [y, g.add_constant(np.float32(1), "one")], 1).outputs[0]]
    return ir.passes.infer_shapes(g)


def _dequantize(g: ir.Graph):
    return next(n for n in g.nodes if n.op_type in ("DequantizeLinear", "Cast") and g.is_const(n.inputs[0]))


def test_int8_scales_per_output_channel_round_half_to_even():
    w = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)  # K=2 rows, N=2 output channels
    dq = _dequantize(g := quantize(_matmul_graph(w), "int8"))
    assert dq.op_type == "DequantizeLinear" and dq.attrs == {"axis": 1}
    np.testing.assert_array_equal(g.const_data(dq.inputs[1]), np.float32([1 / 127, 4 / 127]))
    # 0.5 * 127 = 63.5 -> 64 and -2 / (4/127) = -63.5 -> -64: ties go to the even code
    np.testing.assert_array_equal(g.const_data(dq.inputs[0]), np.int8([[127, -64], [64, 127]]))


def test_int4_scales_per_group_along_the_reduction_axis():
    fmt = dataclasses.replace(FORMATS["int4-g32"], group_size=2)
    w = np.array([[7.0], [-3.5], [1.0], [0.25], [14.0]], np.float32)  # K=5: groups of rows 0-1, 2-3, 4
    a = quantize_weight(w, w.shape, fmt, Role(channel=1, reduction=0))
    assert a.attrs == {"axis": 0, "block_size": 2} and a.scale_shape == (3, 1)
    np.testing.assert_array_equal(a.scale, np.float32([[1.0], [1 / 7], [2.0]]))
    np.testing.assert_array_equal(a.codes.astype(np.int8), np.int8([[7], [-4], [7], [2], [7]]))  # -3.5 -> -4, 1.75 -> 2


def test_gemm_weights_scale_by_their_own_output_axis():
    w = np.array([[1.0, 2.0, 4.0], [8.0, 0.0, -1.0]], np.float32)  # transB: (N=2, K=3)
    dq = _dequantize(g := quantize(_matmul_graph(w, op="Gemm", transB=1), "int8"))
    assert dq.attrs == {"axis": 0}
    np.testing.assert_array_equal(g.const_data(dq.inputs[1]), np.float32([4 / 127, 8 / 127]))


def test_fp8_largest_weight_takes_the_largest_code():
    w = np.array([[0.3, -0.9], [0.001, 0.5]], np.float32)
    dq = _dequantize(g := quantize(_matmul_graph(w), "fp8"))
    codes, scale = g.const_data(dq.inputs[0]), g.const_data(dq.inputs[1])
    assert codes.dtype == ml_dtypes.float8_e4m3fn and scale.shape == ()
    assert scale == np.float32(np.float64(w[0, 1]) / -448)  # max |w| over the largest code
    assert codes[0, 1] == -448
    np.testing.assert_array_equal(codes, (w.astype(np.float64) / np.float64(scale)).astype(ml_dtypes.float8_e4m3fn))


def test_ternary_rounds_by_absmean_and_refits_the_scale():
    w = np.array([[0.9, -0.1, -1.1], [0.05, 0.0, 2.0]], np.float32)  # mean |w| = 4.15 / 6
    a = quantize_weight(w, w.shape, FORMATS["ternary"], Role(1, 0))
    np.testing.assert_array_equal(a.codes.astype(np.int8), [[1, 0, -1], [0, 0, 1]])
    assert a.scale == np.float32((0.9 + 1.1 + 2.0) / 3)  # the mean magnitude of the kept weights
    ternary = np.float32(0.0997) * np.array([[1, 0, -1], [-1, 1, 1]], np.float32)  # already a * {-1, 0, 1}
    again = quantize_weight(ternary, ternary.shape, FORMATS["ternary"], Role(1, 0))
    np.testing.assert_array_equal(again.codes.astype(np.float32) * again.scale, ternary)


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_16_bit_formats_cast_weights_and_activations(name):
    w = np.array([[1 + 2 ** -12, 3.0]], np.float32)
    g = quantize(_matmul_graph(w), name)
    cast = _dequantize(g)
    assert cast.op_type == "Cast" and g.const_data(cast.inputs[0]).dtype == FORMATS[name].weights.numpy
    product = next(n for n in g.nodes if n.op_type == "MatMul")
    narrow = g.producer(g.producer(product.inputs[0]).inputs[0])
    assert narrow.op_type == "Cast" and narrow.attrs["to"] == FORMATS[name].activations.onnx


def test_w8a8_writes_an_integer_product_with_the_gemm_epilogue():
    w = np.arange(6, dtype=np.float32).reshape(2, 3) - 2  # transB: (N=2, K=3)
    g = _matmul_graph(w, op="Gemm", transB=1, alpha=0.5, beta=2.0)
    g.set_input(g.nodes[0], 2, g.add_constant(np.float32([1, -1]), "bias"))
    g = quantize(g, "w8a8")
    ops = [n.op_type for n in g.nodes]
    assert ops.index("DynamicQuantizeLinear") < ops.index("MatMulInteger") < ops.index("Cast")
    product = next(n for n in g.nodes if n.op_type == "MatMulInteger")
    assert g.type_of(product.inputs[1]).shape == (3, 2)  # the weight is stored (K, N)


def test_weightless_weights_become_weightless_codes():
    g = quantize(_matmul_graph(None, shape=(4096, 1024)), "int4-g128")
    dq = _dequantize(g)
    codes, scale = (g.values[v] for v in dq.inputs[:2])
    assert codes.weightless and codes.type == ir.TensorType(DType.INT4, (4096, 1024))
    assert scale.weightless and scale.type == ir.TensorType(DType.FLOAT32, (32, 1024))


def test_the_head_keeps_float32_unless_asked():
    w = np.ones((4, 3), np.float32)
    g = ir.Graph()
    g.add_input("x", ir.TensorType(DType.FLOAT32, (2, 4)))
    g.add_value("w", ir.TensorType(DType.FLOAT32, (4, 3)), const=True, data=w)
    y = g.add_node("MatMul", ["x", "w"], 1).outputs[0]
    g.outputs = [g.add_node("Reshape", [y, g.add_constant(np.int64([6]), "s")], 1).outputs[0]]
    g = ir.passes.infer_shapes(g)
    assert "DequantizeLinear" not in {n.op_type for n in quantize(g.copy(), "int8").nodes}
    assert "DequantizeLinear" in {n.op_type for n in quantize(g.copy(), "int8", keep_head=False).nodes}


def test_shared_activation_is_quantized_once():
    g = _matmul_graph(np.ones((3, 3), np.float32))
    w2 = g.add_constant(np.full((3, 3), 2, np.float32), "w2")
    other = g.add_node("MatMul", ["x", w2], 1).outputs[0]
    g.outputs.append(g.add_node("Relu", [other], 1).outputs[0])
    g = quantize(ir.passes.infer_shapes(g), "w8a8")
    assert [n.op_type for n in g.nodes].count("DynamicQuantizeLinear") == 1
    assert [n.op_type for n in g.nodes].count("MatMulInteger") == 2


@pytest.mark.parametrize("name, stored", [("int4-g32", DType.INT4), ("bf16", DType.BFLOAT16)])
def test_optimizing_again_keeps_weights_stored_narrow(name, stored):
    """Folding would turn DequantizeLinear(codes) or Cast(bf16) back into a float32 constant."""
    g = optimize(quantize(_matmul_graph(np.ones((8, 8), np.float32)), name))
    assert g.type_of(_dequantize(g).inputs[0]).dtype is stored


def test_an_onnx_qdq_model_imports_with_its_formats():
    """DequantizeLinear with block_size and int4 codes survives import, optimization and export."""
    codes = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(8, 2).astype(ml_dtypes.int4), "q")
    scale = numpy_helper.from_array(np.float32([[0.5, 1.0], [2.0, 4.0]]), "s")
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=0, block_size=4),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [codes, scale])
    g = optimize(onnx_frontend.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])))
    dq = _dequantize(g)
    assert dq.attrs == {"axis": 0, "block_size": 4} and g.type_of(dq.inputs[0]).dtype is DType.INT4
    exported = ir.to_onnx(g)
    assert {t.data_type for t in exported.graph.initializer} == {TensorProto.INT4, TensorProto.FLOAT}
