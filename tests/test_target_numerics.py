"""Target numerics: code compiled for a target computes the way its engines do.

The decision (``backends.numerics``) against the specs by hand; the spec's ``accumulate``
field validated; host code's rounding bit for bit against independent numpy roundings;
every product kernel against a float64 reference on rounded operands (and far from the
unrounded result, so the rounding is really there); vector ops in a 16-bit vector unit's
format; and whole models: a TPU run differs from float32 by a bf16-sized error, fp8 and
int4 weights lose more than bf16 and int8, and ``host_numerics`` is onnxruntime's float32.
"""

from __future__ import annotations

import math
import re
import tomllib

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import backends
import runtime
from backends.codegen import Rounding, lower
from backends.codegen.rounding import round_array
from backends.emulate import TargetNumericsError, rounding_plan
from backends.numerics import numerics, op_numerics
from backends.target import TARGETS_DIR, TargetSpecError, parse_target
from backends.work import graph_work
from conftest import MODELS, fixture_feeds, ort_session
from frontends import onnx as onnx_frontend
from ir.passes import optimize
from runtime.executor import Executor
from runtime.jit import compile_module
from xpuc.cli import main

RNG = np.random.default_rng(5)
LLAMA = MODELS / "llama_dynamo.onnx"
SHAPE = {"input_ids": (1, 8)}


def spec(preset: str) -> dict:
    return tomllib.loads((TARGETS_DIR / f"{preset}.toml").read_text())


def engine_of(data: dict, role: str) -> dict:
    return next(e for e in data["engines"].values() if e["role"] == role)


def tf32_a100() -> backends.Target:
    """The A100 with TF32 tensor cores taking float32 products, as NVIDIA's stacks default to."""
    data = spec("a100-80gb")
    data["sources"]["tf32"] = "NVIDIA A100 datasheet: TF32 tensor cores 156 TFLOP/s dense; PTX ISA: tf32 sums in f32"
    tensor = data["engines"]["tensor"]
    tensor["peak_ops_per_cycle"]["tf32"] = {"value": 1024, "source": "tf32"}
    tensor["accumulate"]["tf32"] = {"value": "f32", "source": "tf32"}
    tensor["auto_cast"] = {"f32": "tf32"}
    return parse_target(data, "a100-tf32")


def model_of(nodes, inputs: dict, outputs: list[str], constants=(), dtype=TensorProto.FLOAT):
    """An opset-23 model of ``nodes``; ``inputs`` maps names to shapes, all of ``dtype``."""
    values = [helper.make_tensor_value_info(n, dtype, shape) for n, shape in inputs.items()]
    graph = helper.make_graph(nodes, "g", values, [helper.make_tensor_value_info(n, dtype, None) for n in outputs],
                              list(constants))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def one_op(op_type: str, dtype=TensorProto.FLOAT):
    """``y = op(x, x)`` on an 8 x 8 ``x``, as a graph and its one op's work."""
    graph = onnx_frontend.load(model_of([helper.make_node(op_type, ["x", "x"], ["y"])], {"x": (8, 8)}, ["y"],
                                        dtype=dtype))
    return graph, graph_work(graph)[0]


# ------------------------------------------------------------------------ the spec field
def test_every_matrix_format_names_its_accumulator():
    data = spec("tpu-v5e")
    del engine_of(data, "matrix")["accumulate"]["i8"]
    with pytest.raises(TargetSpecError, match=r"engines\.mxu\.accumulate: needs an entry for i8"):
        parse_target(data)


@pytest.mark.parametrize("entry, message", [
    (("fp8", {"value": "f32", "source": "gcp"}), r"accumulate: fp8: not a format the engine lists"),
    (("bf16", {"value": "i32", "source": "gcp"}), r"accumulate: bf16: accumulates in i32, another kind"),
    (("bf16", {"value": "f33", "source": "gcp"}), r"unknown number format.*'f33'"),
    (("bf16", "f32"), r"accumulate\.bf16: give \{value = \.\.\., source"),
    (("bf16", {"value": "f32", "source": "blog"}), r"source 'blog' is not in \[sources\]"),
])
def test_accumulate_entries_are_validated(entry, message):
    data = spec("tpu-v5e")
    engine_of(data, "matrix")["accumulate"][entry[0]] = entry[1]
    with pytest.raises(TargetSpecError, match=message):
        parse_target(data)


def test_a_vector_unit_names_the_format_it_computes_narrow_floats_in():
    data = spec("tpu-v4")
    del engine_of(data, "vector")["accumulate"]["bf16"]
    with pytest.raises(TargetSpecError, match=r"engines\.vpu\.accumulate: needs an entry for bf16"):
        parse_target(data)
    assert "f32" not in backends.load_target("tpu-v4").engines["vpu"].accumulate  # f32 computes in f32


# ---------------------------------------------------------------------- the decision
@pytest.mark.parametrize("target, op, dtype, expected", [
    ("tpu-v5e", "MatMul", TensorProto.FLOAT, ("mxu", "f32", "bf16", "f32")),  # XLA's one bf16 pass, f32 sums
    ("tpu-v5e", "Add", TensorProto.FLOAT, ("vpu", "f32", "f32", "f32")),
    ("tpu-v5e", "Add", TensorProto.FLOAT16, ("vpu", "f16", "bf16", "bf16")),  # auto_cast f16 -> bf16 ALUs
    ("tpu-v4", "Add", TensorProto.BFLOAT16, ("vpu", "bf16", "bf16", "f32")),  # no bf16 ALUs: computed in f32
    ("h100-sxm", "MatMul", TensorProto.FLOAT16, ("tensor", "f16", "f16", "f32")),
    ("h100-sxm", "Mul", TensorProto.FLOAT16, ("simt", "f16", "f16", "f16")),
    ("groq-lpu", "MatMul", TensorProto.FLOAT, ("mxm", "f32", "f16", "f32")),
    ("h100-sxm", "MatMul", TensorProto.FLOAT, ("tensor", "f32", "tf32", "f32")),  # TF32 tensor cores by default
])
def test_numerics_follow_the_spec(target, op, dtype, expected):
    _, work = one_op(op, dtype)
    n = op_numerics(work, backends.load_target(target))
    assert (n.engine, n.stored, n.operands, n.accumulate) == expected


def test_tf32_tensor_cores_and_the_host():
    _, work = one_op("MatMul")
    n = op_numerics(work, tf32_a100())
    assert (n.engine, n.operands, n.accumulate) == ("tensor", "tf32", "f32")
    assert numerics(None, "bf16", "f32") == type(n)(None, "f32", "f32", "f32")  # a host fallback computes as stored


def test_rounding_plan_rounds_products_and_narrow_vector_work():
    graph, _ = one_op("MatMul")
    assert rounding_plan(graph, backends.load_target("tpu-v5e")) == {graph.nodes[0].name: Rounding(operands="bf16")}
    assert rounding_plan(graph, backends.load_target("h100-sxm")) == {graph.nodes[0].name: Rounding(operands="tf32")}
    graph, _ = one_op("Mul", TensorProto.FLOAT16)
    assert rounding_plan(graph, backends.load_target("h100-sxm")) == {graph.nodes[0].name: Rounding(results="f16")}


def test_what_host_code_cannot_reproduce_is_refused_with_the_spec_key():
    data = spec("tpu-v5e")
    engine_of(data, "matrix")["accumulate"]["bf16"]["value"] = "bf16"
    graph, _ = one_op("MatMul")
    key = r"accumulates bf16 products in bf16 \(engines\.mxu\.accumulate\.bf16\)"
    with pytest.raises(TargetNumericsError, match=key):
        rounding_plan(graph, parse_target(data))
    data = spec("h100-sxm")
    data["engines"]["tensor"]["auto_cast"] = {"f32": "f8e4m3"}
    with pytest.raises(TargetNumericsError, match=r"multiplies in f8e4m3, which host code rounds to only with scales"):
        rounding_plan(graph, parse_target(data))


# ----------------------------------------------------------------- rounding, bit for bit
def run_lowered(model, numerics_of, feeds):
    """Compile ``model`` with the roundings ``numerics_of(graph)`` gives and run it."""
    graph = optimize(onnx_frontend.load(model))
    lowered = lower(graph, numerics=numerics_of(graph))
    executor = Executor(graph, lowered, compile_module(lowered.module, use_cache=False), threads=1,
                        min_parallel_work=1 << 62)
    return executor.run(feeds)


def special_values() -> np.ndarray:
    bits = np.array([0x3F808000, 0x3F818000, 0x3F801000, 0x3F803000, 0x7F7FFFFF, 0x477FF000, 0x477FE000,
                     0x00000001, 0x00800000, 0x387FC000, 0x33000000, 0x7F800000, 0xFF800000, 0x7FC00001,
                     0x7F800001, 0x80000000], np.uint32)  # ties, overflow, subnormals, inf, NaN
    values = np.concatenate([bits.view(np.float32), RNG.standard_normal(1000).astype(np.float32) * 300])
    return np.concatenate([values, -values]).reshape(8, -1)


def independent_rounding(x: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "bf16":
        return x.astype(ml_dtypes.bfloat16).astype(np.float32)
    if fmt == "f16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    mantissa, exponent = np.frexp(x.astype(np.float64))  # TF32: 11 significant bits, float32's exponent
    with np.errstate(over="ignore"):
        return np.ldexp(np.round(mantissa * 2.0 ** 11) / 2.0 ** 11, exponent).astype(np.float32)


@pytest.mark.parametrize("fmt", ["bf16", "f16", "tf32"])
def test_rounding_is_bit_exact_in_generated_code_and_numpy(fmt):
    x = special_values()
    model = model_of([helper.make_node("Mul", ["x", "one"], ["y"])], {"x": x.shape}, ["y"],
                     [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    y, = run_lowered(model, lambda g: {g.nodes[0].name: Rounding(results=fmt)}, {"x": x})
    expected, nan = round_array(x, fmt), np.isnan(x)  # NaN stays NaN; payloads are the CPU's business
    np.testing.assert_array_equal(y[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isnan(y[nan]).all() and np.isnan(expected[nan]).all()
    checked = ~nan & (np.abs(x) >= 2.0 ** -126 if fmt == "tf32" else True)  # the TF32 reference takes normal numbers
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(expected[checked], independent_rounding(x[checked], fmt))


# --------------------------------------------------------------------------- products
def products_model():
    """Each product kernel once: MatMul over a constant B (tiles), a runtime B (runtime panels),
    a decode-shaped runtime B (streamed), a narrow constant B (scalar), Gemm (transB, alpha,
    bias), Conv and Attention."""
    f32 = lambda *shape: (RNG.standard_normal(shape) * 1.5).astype(np.float32)  # noqa: E731
    weights = {"w1": f32(40, 36), "w3": f32(40, 5), "w4": f32(36, 40), "c4": f32(36), "wc": f32(4, 3, 3, 3)}
    inputs = {"a": f32(24, 40), "b": f32(40, 36), "s": f32(3, 40), "x": f32(1, 3, 9, 9), "q": f32(1, 2, 6, 8),
              "k": f32(1, 2, 7, 8), "v": f32(1, 2, 7, 8)}
    nodes = [helper.make_node("MatMul", ["a", "w1"], ["y1"]), helper.make_node("MatMul", ["a", "b"], ["y2"]),
             helper.make_node("MatMul", ["s", "b"], ["y3"]), helper.make_node("MatMul", ["a", "w3"], ["y4"]),
             helper.make_node("Gemm", ["a", "w4", "c4"], ["y5"], transB=1, alpha=0.5),
             helper.make_node("Conv", ["x", "wc"], ["y6"], pads=[1, 1, 1, 1]),
             helper.make_node("Attention", ["q", "k", "v"], ["y7"])]
    model = model_of(nodes, {n: a.shape for n, a in inputs.items()}, [f"y{i}" for i in range(1, 8)],
                     [numpy_helper.from_array(w, n) for n, w in weights.items()])
    return model, inputs, weights


def products_reference(inputs, weights, fmt: str | None) -> list[np.ndarray]:
    """The products in float64 on operands rounded to ``fmt`` (None: not rounded)."""
    r = (lambda t: round_array(t, fmt).astype(np.float64)) if fmt else (lambda t: t.astype(np.float64))  # noqa: E731
    a, b, s, x = r(inputs["a"]), r(inputs["b"]), r(inputs["s"]), inputs["x"]
    padded = r(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))))
    wc = r(weights["wc"])
    conv = np.zeros((1, 4, 9, 9))
    for i in range(9):
        for j in range(9):
            conv[0, :, i, j] = np.einsum("chw,ochw->o", padded[0, :, i:i + 3, j:j + 3], wc)
    root = np.float32(math.sqrt(1 / math.sqrt(8)))
    q, k = (r(inputs[n] * root) for n in "qk")
    scores = q @ k.transpose(0, 1, 3, 2)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p = r((p / p.sum(-1, keepdims=True)).astype(np.float32))
    return [a @ r(weights["w1"]), a @ b, s @ b, a @ r(weights["w3"]), 0.5 * (a @ r(weights["w4"]).T) + weights["c4"],
            conv, p @ r(inputs["v"])]


def rel(x, y) -> float:
    return float(np.linalg.norm(x - y) / np.linalg.norm(y))


@pytest.mark.parametrize("target", ["tpu-v5e", "groq-lpu", "a100-tf32"])
def test_every_product_kernel_rounds_its_operands(target):
    hardware = tf32_a100() if target == "a100-tf32" else backends.load_target(target)
    model, inputs, weights = products_model()
    outputs = runtime.compile(model, hardware, cache=False).run(inputs)
    fmt = {"tpu-v5e": "bf16", "groq-lpu": "f16", "a100-tf32": "tf32"}[target]
    rounded, plain = products_reference(inputs, weights, fmt), products_reference(inputs, weights, None)
    for i, (y, want, unrounded) in enumerate(zip(outputs, rounded, plain), 1):
        assert rel(y, want) < 0.05 * rel(unrounded, want), f"y{i}: {rel(y, want):.3g} vs {rel(unrounded, want):.3g}"


def test_a_16_bit_vector_unit_rounds_every_result():
    """Two f16 multiplies fused in one kernel: the host rounds once, at the store; a GPU's
    CUDA cores compute f16 in f16, rounding after each."""
    x = (RNG.standard_normal((4, 64)) * 3).astype(np.float16)
    model = model_of([helper.make_node("Mul", ["x", "c"], ["t"]), helper.make_node("Mul", ["t", "c"], ["y"])],
                     {"x": x.shape}, ["y"], [helper.make_tensor("c", TensorProto.FLOAT16, [], [np.float16(1.2345)])],
                     dtype=TensorProto.FLOAT16)
    c16 = np.float16(1.2345).astype(np.float32)
    each = ((x.astype(np.float32) * c16).astype(np.float16).astype(np.float32) * c16).astype(np.float16)
    once = (x.astype(np.float32) * c16 * c16).astype(np.float16)
    assert (each != once).any()
    np.testing.assert_array_equal(runtime.compile(model, "h100-sxm", cache=False).run({"x": x})[0], each)
    np.testing.assert_array_equal(runtime.compile(model, "h100-sxm", cache=False, host_numerics=True)
                                  .run({"x": x})[0], once)


# ------------------------------------------------------------------------ whole models
@pytest.fixture(scope="module")
def llama():
    feeds = fixture_feeds(LLAMA, *SHAPE["input_ids"])
    return feeds, runtime.compile(LLAMA, input_shapes=SHAPE).run(feeds)[0]


def test_a_tpu_run_differs_from_float32_by_a_bf16_sized_error(llama, capsys):
    assert main(["run", str(LLAMA), "--input-shape", "input_ids=1x8", "--random", "-t", "tpu-v5e", "--accuracy"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(li for li in out if li.startswith("logits on tpu-v5e against float32: "))
    assert 1e-4 < float(re.search(r"rel L2 ([0-9.e-]+)", line).group(1)) < 5e-2


def test_narrower_formats_lose_more_on_the_target(llama):
    feeds, reference = llama
    error = {p: rel(runtime.compile(LLAMA, "tpu-v5e", input_shapes=SHAPE, precision=p).run(feeds)[0], reference)
             for p in ("bf16", "fp8", "int8", "int4")}
    assert error["fp8"] > error["bf16"] > 1e-4 and error["int4"] > error["int8"] > 1e-4, error


def test_host_numerics_on_a_target_is_onnxruntimes_float32(llama):
    feeds, reference = llama
    y = runtime.compile(LLAMA, "tpu-v5e", input_shapes=SHAPE, host_numerics=True).run(feeds)[0]
    np.testing.assert_array_equal(y, reference)
    np.testing.assert_allclose(y, ort_session(LLAMA).run(None, feeds)[0], rtol=1e-4, atol=1e-4)
