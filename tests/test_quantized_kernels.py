"""Native code for quantized products: weights decoded from packed panels (every code type,
scale layout and ragged edge), the compile-time fallback layouts, MatMulInteger and
DynamicQuantizeLinear. Checked against onnx's reference evaluator and onnxruntime."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import runtime
from backends.codegen import lower
from conftest import CPU_PATHS, ort_session
from frontends import onnx as onnx_frontend
from ir.passes import optimize

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path / "cache"))


def _model(nodes, inputs, initializers, output=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info("y", output, None)],
                              [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def _product(m: int, k: int, decode: helper.NodeProto, initializers: dict, op="MatMul", **attrs):
    """y = x (m x k) @ decode(weight), the decoding op being ``decode`` writing ``w``."""
    inputs = ["x", "w", "bias"] if op == "Gemm" else ["x", "w"]
    if op == "Gemm":
        n = (initializers[decode.input[0]].shape[0] if attrs.get("transB") else initializers[decode.input[0]].shape[1])
        initializers = {**initializers, "bias": RNG.standard_normal(n).astype(np.float32)}
    return _model([decode, helper.make_node(op, inputs, ["y"], **attrs)], [("x", TensorProto.FLOAT, [m, k])],
                  initializers)


def _dq(codes, scale, zero=None, **attrs):
    names = ["codes", "scale"] + (["zero"] if zero is not None else [])
    arrays = {"codes": codes, "scale": np.asarray(scale, np.float32)} | ({"zero": zero} if zero is not None else {})
    return helper.make_node("DequantizeLinear", names, ["w"], **attrs), arrays


PRODUCTS = ("MatMul", "Gemm", "FusedMatMul", "Conv")


def _check(model, m, k, *, absorbed=True):
    """xpuc matches onnx's reference; the decoded weight is never an intermediate of a run."""
    x = RNG.standard_normal((m, k)).astype(np.float32)
    ours = runtime.compile(model).run({"x": x})[0]
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    graph = optimize(onnx_frontend.load(model))
    lowered = lower(graph)
    decoder = next(n.name for n in graph.nodes if n.op_type in ("DequantizeLinear", "Cast"))
    holder = next(spec for spec in lowered.kernels if decoder in spec.ops)  # absorbed: in the product's kernel
    assert any(graph.node(op).op_type in PRODUCTS for op in holder.ops), holder.ops
    packed = {name: a for name, a in lowered.constants.items() if "_codes__" in name}
    assert bool(packed) == absorbed
    return packed


def _ints(dtype, shape, lo, hi):
    return RNG.integers(lo, hi + 1, shape).astype(dtype)


@pytest.mark.parametrize("m", [1, 30], ids=["decode", "prefill"])
def test_int8_codes_per_output_channel(m):
    k, n = 70, 100
    node, arrays = _dq(_ints(np.int8, (k, n), -127, 127), RNG.random(n) / 100, axis=1)
    _check(_product(m, k, node, arrays), m, k)


@pytest.mark.parametrize("k", [81, 96], ids=["ragged", "whole"])
def test_int4_codes_per_group_pack_two_to_a_byte(k):
    n, group = 40, 32
    node, arrays = _dq(_ints(ml_dtypes.int4, (k, n), -8, 7), RNG.random((-(-k // group), n)) / 10,
                       axis=0, block_size=group)
    packed, = _check(_product(5, k, node, arrays), 5, k).values()
    assert packed.dtype == np.uint8 and packed.shape[1] == -(-k // 2)  # K/2 byte rows: two codes a byte


def test_ternary_codes_pack_four_to_a_byte():
    k, n = 67, 33
    node, arrays = _dq(_ints(ml_dtypes.int4, (k, n), -1, 1), 0.05)
    packed, = _check(_product(4, k, node, arrays), 4, k).values()
    assert packed.shape[1] == -(-k // 4)


def test_unsigned_codes_with_a_zero_zero_point_decode_packed():
    k, n = 20, 48
    node, arrays = _dq(_ints(np.uint8, (k, n), 0, 255), RNG.random(n) / 100, np.zeros(n, np.uint8), axis=1)
    _check(_product(3, k, node, arrays), 3, k)


@pytest.mark.parametrize("dtype", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2], ids=["e4m3fn", "e5m2"])
def test_float8_codes_decode_through_float16_bits(dtype):
    """Every finite code, subnormals and both zeros included."""
    codes = np.arange(256, dtype=np.uint8).view(dtype)
    codes = codes[np.isfinite(codes.astype(np.float32))]
    k = 64
    node, arrays = _dq(RNG.permutation(np.resize(codes, k * 32)).reshape(k, 32), 0.37)
    _check(_product(6, k, node, arrays), 6, k)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_narrow_float_weights_cast_to_float32(dtype):
    k, n = 50, 64
    w = RNG.standard_normal((k, n)).astype(dtype)
    _check(_product(7, k, helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT), {"w16": w}), 7, k)


@pytest.mark.parametrize("cpu", CPU_PATHS)
@pytest.mark.parametrize("stored", ["int4_per_group", "bf16_cast"])
def test_decode_rows_equal_prefill_rows_bit_for_bit(stored, cpu, monkeypatch):
    """A decode-shaped product decodes each row of the weight inside its tile's K loop, a taller
    one decodes whole panels into scratch first: the same values summed in the same order, so a
    row computed alone equals that row of the taller product exactly."""
    k, n, m = 200, 70, 12  # m past the decode shape (8 rows); K with a ragged last group
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    if stored == "bf16_cast":
        node, arrays = helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT), \
            {"w16": RNG.standard_normal((k, n)).astype(ml_dtypes.bfloat16)}
    else:
        node, arrays = _dq(_ints(ml_dtypes.int4, (k, n), -8, 7), RNG.random((-(-k // 32), n)) / 10,
                           axis=0, block_size=32)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    tall = runtime.compile(_product(m, k, node, arrays)).run({"x": x})[0]
    for rows in (slice(0, 1), slice(3, 8)):
        alone = runtime.compile(_product(rows.stop - rows.start, k, node, arrays)).run({"x": x[rows]})[0]
        np.testing.assert_array_equal(alone, tall[rows])


@pytest.mark.parametrize("m", [1, 12], ids=["decode", "prefill"])
def test_deep_weights_stay_packed(m):
    """K = 8200: a 64-column panel of it (AVX-512) decoded to float32 would be 2 MB. Decode rows
    never hold one; a taller product narrows its panel to fit half of L2, not the whole weight
    decoded at compile time."""
    k, n = 8200, 64
    node, arrays = _dq(_ints(ml_dtypes.int4, (k, n), -8, 7), RNG.random((k // 8, n)) / 10, axis=0, block_size=8)
    _check(_product(m, k, node, arrays), m, k)


@pytest.mark.parametrize("attrs, scale_shape", [({"axis": 0}, (24,)), ({"axis": 1, "block_size": 16}, (24, 3))],
                         ids=["per_channel", "per_group"])
def test_gemm_with_transposed_codes(attrs, scale_shape):
    k, n = 40, 24
    node, arrays = _dq(_ints(np.int8, (n, k), -127, 127), RNG.random(scale_shape) / 50, **attrs)
    _check(_product(9, k, node, arrays, op="Gemm", transB=1, alpha=0.5, beta=2.0), 9, k)


@pytest.mark.parametrize("case", ["zero_point", "scale_per_row", "narrow", "nan_code"])
def test_other_layouts_decode_once_at_compile_time(case):
    """A zero point, a scale per reduction row, a weight narrower than a vector or a float8 NaN:
    the product reads the weight dequantized at compile time, still no per-run copy."""
    k, n = 24, 3 if case == "narrow" else 40
    if case == "zero_point":
        node, arrays = _dq(_ints(ml_dtypes.uint4, (k, n), 0, 15), RNG.random(n), _ints(ml_dtypes.uint4, (n,), 1, 15),
                           axis=1)
    elif case == "scale_per_row":
        node, arrays = _dq(_ints(np.int8, (k, n), -9, 9), RNG.random(k), axis=0)
    elif case == "narrow":
        node, arrays = _dq(_ints(np.int8, (k, n), -9, 9), RNG.random(n), axis=1)
    else:
        codes = RNG.standard_normal((k, n)).astype(ml_dtypes.float8_e4m3fn)
        codes[3, 5] = np.nan
        node, arrays = _dq(codes, 0.5)
    model = _product(4, k, node, arrays)
    if case == "nan_code":
        x = RNG.standard_normal((4, k)).astype(np.float32)
        y = runtime.compile(model).run({"x": x})[0]
        assert np.isnan(y[:, 5]).all() and not np.isnan(np.delete(y, 5, axis=1)).any()
    else:
        _check(model, 4, k, absorbed=False)


def test_conv_reads_its_dequantized_weight_inline():
    codes = _ints(np.int8, (6, 4, 3, 3), -127, 127)
    node, arrays = _dq(codes, RNG.random(6) / 100, axis=0)
    model = _model([node, helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [("x", TensorProto.FLOAT, [2, 4, 9, 9])], arrays)
    x = RNG.standard_normal((2, 4, 9, 9)).astype(np.float32)
    compiled = runtime.compile(model)
    np.testing.assert_allclose(compiled.run({"x": x})[0], ort_session(model).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
    assert compiled.intermediate_bytes == 0


# ----------------------------------------------------------------- integer ops
@pytest.mark.parametrize("constant", [True, False], ids=["b_packed", "b_input"])
@pytest.mark.parametrize("a_type, b_type", [(np.uint8, np.int8), (np.int8, np.uint8), (np.uint8, np.uint8)])
@pytest.mark.parametrize("zero_points", ["none", "scalar", "per_row_column"])
def test_matmul_integer_is_exact(a_type, b_type, zero_points, constant):
    m, k, n = 5, 300, 37  # K large enough that a float32 sum would round; N past a whole vector
    info_a, info_b = np.iinfo(a_type), np.iinfo(b_type)
    a = RNG.integers(info_a.min, info_a.max + 1, (2, m, k)).astype(a_type)
    b = RNG.integers(info_b.min, info_b.max + 1, (k, n)).astype(b_type)
    za = {"none": None, "scalar": np.asarray(a_type(3)), "per_row_column": _ints(a_type, (m,), 0, 9)}[zero_points]
    zb = {"none": None, "scalar": np.asarray(b_type(5)), "per_row_column": _ints(b_type, (n,), 0, 9)}[zero_points]
    inits = ({"b": b} if constant else {}) | ({"za": za, "zb": zb} if za is not None else {})
    names = ["a", "b"] + (["za", "zb"] if za is not None else [])
    tensor = lambda t: helper.np_dtype_to_tensor_dtype(np.dtype(t))  # noqa: E731
    inputs = [("a", tensor(a_type), [2, m, k])] + ([] if constant else [("b", tensor(b_type), [k, n])])
    model = _model([helper.make_node("MatMulInteger", names, ["y"])], inputs, inits, TensorProto.INT32)
    got = runtime.compile(model).run({"a": a} if constant else {"a": a, "b": b})[0]
    za64 = np.zeros(1) if za is None else za.astype(np.int64).reshape(-1, 1)
    zb64 = 0 if zb is None else zb.astype(np.int64)
    want = np.einsum("bmk,kn->bmn", a.astype(np.int64) - za64, b.astype(np.int64) - zb64)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("values", ["normal", "positive", "zeros"])
def test_dynamic_quantize_matches_onnxruntime(values):
    x = {"normal": RNG.standard_normal((7, 33)), "positive": RNG.random((7, 33)) + 1,
         "zeros": np.zeros((7, 33))}[values].astype(np.float32)
    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    for got, want in zip(runtime.compile(model).run({"x": x}), ort_session(model).run(None, {"x": x})):
        np.testing.assert_array_equal(got, want)
