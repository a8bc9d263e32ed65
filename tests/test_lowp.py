"""The low-precision dot kernels (``backends.codegen.lowp``) bit for bit against a numpy
emulation of the instructions: bf16 x bf16 -> fp32 (vdpbf16ps) via a product compiled for a
target whose matrix engine multiplies bf16 (tpu-v5e), where the CPU has it, and float32
multiply-adds of bf16-rounded operands on the AVX2 and baseline paths; u8 x s8 -> int32 via
MatMulInteger on every path (vpdpbusd, or its exact emulation)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from backends.codegen import Rounding, host_tiling, lower
from backends.codegen.rounding import round_array
from conftest import CPU_PATHS, matmul_model, ort_session
from frontends import onnx as onnx_frontend

RNG = np.random.default_rng(11)
FLT_MIN = np.float32(2.0 ** -126)


def rounded_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The product of the operands rounded to bf16, in float64: what float32 multiply-adds of
    rounded operands compute, up to float32 summation error."""
    return round_array(a, "bf16").astype(np.float64) @ round_array(b, "bf16").astype(np.float64)


def bf16_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """vdpbf16ps over K: operands rounded to bf16 (nearest even; denormals read as zero), per
    pair of K the odd product added first, then the even one, each sum rounded to fp32 and
    flushed to zero if denormal; an odd K is padded with a zero pair member."""
    def operand(x):
        bits = x.astype(ml_dtypes.bfloat16).astype(np.float32).view(np.uint32)
        return np.where(bits & 0x7F800000 == 0, bits & 0x80000000, bits).view(np.float32)

    def flush(x):
        return np.where(np.abs(x) < FLT_MIN, np.copysign(np.float32(0), x), x).astype(np.float32)

    k = a.shape[1]
    a_, b_ = np.zeros((a.shape[0], k + k % 2), np.float32), np.zeros((k + k % 2, b.shape[1]), np.float32)
    a_[:, :k], b_[:k] = operand(a), operand(b)
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for pair in range(0, k, 2):
        for kk in (pair + 1, pair):
            acc = flush(acc + a_[:, kk, None] * b_[None, kk, :])
    return acc


BF16_TARGET = "tpu-v5e"
"""A preset whose MXU multiplies bf16 and accumulates in f32: float32 products compiled for it take the bf16 dot."""


@pytest.mark.parametrize("cpu", CPU_PATHS, ids=list(CPU_PATHS))
@pytest.mark.parametrize("constant", [False, True], ids=["b_input", "b_constant"])
@pytest.mark.parametrize("m, k, n", [(40, 33, 50), (1, 64, 100), (5, 7, 3)])
def test_bf16_products_match_the_instruction_bit_for_bit(m, k, n, constant, cpu, monkeypatch, tmp_path):
    """Bit for bit the instruction where the CPU has it; elsewhere float32 multiply-adds of the
    rounded operands, within float32 summation error of their exact product."""
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path))
    a = (RNG.standard_normal((m, k)) * 10.0 ** RNG.integers(-2, 3, (m, k))).astype(np.float32)
    b = RNG.standard_normal((k, n)).astype(np.float32)
    model = matmul_model(a.shape, b.shape, weight=b if constant else None)
    feeds = {"a": a} if constant else {"a": a, "b": b}
    y = runtime.compile(model, BF16_TARGET).run(feeds)[0]
    if host_tiling().bf16_dot:
        np.testing.assert_array_equal(y.view(np.uint32), bf16_reference(a, b).view(np.uint32))
    else:
        magnitude = np.abs(round_array(a, "bf16")).astype(np.float64) @ np.abs(round_array(b, "bf16"))
        assert (np.abs(y - rounded_reference(a, b)) <= k * 2.0 ** -24 * magnitude).all()


@pytest.mark.parametrize("cpu", ["host", "avx2"])
def test_bf16_denormals_flush_only_on_the_instruction(cpu, monkeypatch, tmp_path):
    """vdpbf16ps reads denormal bf16 operands as zero and flushes denormal sums; float32
    multiply-adds of rounded operands keep both."""
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path))
    a = np.float32([[2.0 ** -130, 1.0, 2.0 ** -70, 3.0], [2.0 ** -60, -2.0 ** -60, 0.0, 0.0]])
    b = np.float32([[2.0 ** 120, 2.0 ** -66], [1.0, 2.0 ** -67], [2.0 ** -70, 7.0], [0.25, 9.0]])
    y = runtime.compile(matmul_model(a.shape, b.shape), BF16_TARGET).run({"a": a, "b": b})[0]
    if host_tiling().bf16_dot:
        expected = bf16_reference(a, b)
        # 2^-130 reads as 0 (else + 2^-10); the first sum, -2^-127, flushes to -0 (else the total is 2^-127)
        assert expected[0, 0] == 1.75 and expected[1, 1] == 2.0 ** -126
    else:
        expected = rounded_reference(a, b).astype(np.float32)
        assert expected[0, 0] == 1.75 + 2.0 ** -10 and expected[1, 1] == 2.0 ** -127
    np.testing.assert_array_equal(y.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("cpu, instruction", [("host", True), ("avx2", False)])
def test_bf16_instruction_is_used_only_where_present(cpu, instruction, monkeypatch):
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    graph = onnx_frontend.load(matmul_model((8, 32), (32, 64), weight=RNG.standard_normal((32, 64)).astype(np.float32)))
    numerics = {graph.nodes[0].name: Rounding(operands="bf16")}
    declared = {f.name for f in lower(graph, numerics=numerics).module.functions if f.is_declaration}
    uses = any(name.startswith("llvm.x86.avx512bf16.dpbf16ps") for name in declared)
    assert uses == (instruction and host_tiling().bf16_dot)


def _matmul_integer(a_shape, weight: np.ndarray | None, b_shape, za=None, zb=None, a_type=TensorProto.UINT8,
                    b_type=TensorProto.INT8):
    inputs = [helper.make_tensor_value_info("a", a_type, a_shape)]
    inits, names = [], ["a", "b"]
    if weight is None:
        inputs.append(helper.make_tensor_value_info("b", b_type, b_shape))
    else:
        inits.append(numpy_helper.from_array(weight, "b"))
    for name, value in (("za", za), ("zb", zb)):
        names.append(name if value is not None else "")
        if value is not None:
            inits.append(numpy_helper.from_array(value, name))
    while names[-1] == "":
        names.pop()
    graph = helper.make_graph([helper.make_node("MatMulInteger", names, ["y"])], "mmi", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def int8_reference(a, b, za=0, zb=0) -> np.ndarray:
    return ((a.astype(np.int64) - np.asarray(za, np.int64).reshape(-1, 1)) @ (b.astype(np.int64) - zb)).astype(np.int32)


@pytest.mark.parametrize("cpu", CPU_PATHS, ids=list(CPU_PATHS))
@pytest.mark.parametrize("m, k, n, za", [(40, 70, 50, np.uint8(128)), (1, 64, 100, None), (6, 9, 33, np.uint8(3)),
                                         (5, 16, 20, np.arange(5, dtype=np.uint8) * 40)])
def test_int8_products_are_exact(m, k, n, za, cpu, monkeypatch, tmp_path):
    """uint8 A x constant int8 B (the u8 x s8 quad dot), A's zero point per tensor or per row."""
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path))
    a = RNG.integers(0, 256, (m, k)).astype(np.uint8)
    b = RNG.integers(-128, 128, (k, n)).astype(np.int8)
    model = _matmul_integer(a.shape, b, b.shape, za=za)
    y = runtime.compile(model).run({"a": a})[0]
    expected = int8_reference(a, b, 0 if za is None else za)
    np.testing.assert_array_equal(y, expected)
    if np.ndim(za) == 0:  # onnxruntime takes per-tensor zero points only
        np.testing.assert_array_equal(y, ort_session(model).run(None, {"a": a})[0])


@pytest.mark.parametrize("cpu, instruction", [("host", True), ("avx2", False)])
def test_int8_instruction_is_used_only_where_present(cpu, instruction, monkeypatch):
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    b = RNG.integers(-128, 128, (32, 64)).astype(np.int8)
    graph = onnx_frontend.load(_matmul_integer((8, 32), b, b.shape))
    declared = {f.name for f in lower(graph).module.functions if f.is_declaration}
    uses = any(name.startswith("llvm.x86.avx512.vpdpbusd") for name in declared)
    assert uses == (instruction and host_tiling().int8_dot)


@pytest.mark.parametrize("a_type, b_type, constant", [(TensorProto.INT8, TensorProto.INT8, False),
                                                      (TensorProto.UINT8, TensorProto.UINT8, True),
                                                      (TensorProto.UINT8, TensorProto.INT8, False)])
def test_other_integer_layouts_take_the_exact_widened_kernel(a_type, b_type, constant):
    """Signed A, unsigned B, a runtime B or a B zero point: int32 widening, zero points subtracted."""
    a_np, b_np = (helper.tensor_dtype_to_np_dtype(t) for t in (a_type, b_type))
    a = RNG.integers(np.iinfo(a_np).min, np.iinfo(a_np).max + 1, (7, 19)).astype(a_np)
    b = RNG.integers(np.iinfo(b_np).min, np.iinfo(b_np).max + 1, (19, 11)).astype(b_np)
    za, zb = np.array(3, a_np), np.array(5, b_np)
    model = _matmul_integer(a.shape, b if constant else None, b.shape, za=za, zb=zb, a_type=a_type, b_type=b_type)
    feeds = {"a": a} if constant else {"a": a, "b": b}
    y = runtime.compile(model).run(feeds)[0]
    np.testing.assert_array_equal(y, int8_reference(a, b, za, zb))
    np.testing.assert_array_equal(y, ort_session(model).run(None, feeds)[0])


def test_a_rounding_host_code_lacks_is_refused():
    from backends.codegen import CodegenError
    with pytest.raises(CodegenError, match="cannot round to 'f8e4m3'"):
        Rounding(operands="f8e4m3")
