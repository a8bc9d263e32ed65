"""Norm, activation, gated-MLP and MatMul-epilogue fusions.

Real exporter graphs must come out with the composite ops each architecture implies and
compute what onnxruntime computes on the original model. Hand-built graphs cover each
pattern variant, and near misses that must stay unfused.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest

import ir
from conftest import MODELS, manifest, ort_session, random_feeds
from frontends import onnx as onnx_frontend
from ir import DType, Graph, TensorType
from ir.ops.composite import ACTIVATIONS
from ir.passes import eliminate_dead_code, infer_shapes, optimize
from ir.passes.fuse.activations import fuse_gelu, fuse_silu, fuse_swiglu
from ir.passes.fuse.epilogue import EPILOGUES, fuse_matmul_epilogue
from ir.passes.fuse.norms import fuse_layer_norm, fuse_rms_norm
from ir.passes.fuse.pattern import product

F32, F16 = DType.FLOAT32, DType.FLOAT16


def kind(node: ir.Node) -> str:
    """Op type, with the attribute that changes its meaning: ``Gelu[tanh]``, ``xpuc.FusedMatMul[Relu]``."""
    detail = node.attr("activation") or (node.attr("approximate") if node.attr("approximate") != "none" else None)
    return node.qualified_type + (f"[{detail}]" if detail else "")


def kinds(graph: Graph) -> Counter:
    return Counter(kind(n) for n in graph.nodes)


# ------------------------------------------------------------- real exports
EXPECTED = {
    # family: {op kind: (per layer, outside the layers)}
    "llama": {"RMSNormalization": (2, 1), "xpuc.SwiGLU": (1, 0)},
    "mistral": {"RMSNormalization": (2, 1), "xpuc.SwiGLU": (1, 0)},
    "qwen2": {"RMSNormalization": (2, 1), "xpuc.SwiGLU": (1, 0)},
    "gemma": {"RMSNormalization": (2, 1), "xpuc.FusedMatMul[GeluTanh]": (1, 0)},  # GeGLU gate
    "olmo": {"LayerNormalization": (2, 1), "xpuc.SwiGLU": (1, 0)},
    "phi": {"LayerNormalization": (1, 1), "xpuc.FusedMatMul[GeluTanh]": (1, 0)},  # parallel attn + MLP
    "gpt2": {"LayerNormalization": (2, 1), "xpuc.FusedMatMul[GeluTanh]": (1, 0)},  # Conv1D Gemm -> MatMul, gelu_new
    "bert": {"LayerNormalization": (2, 1), "xpuc.FusedMatMul[Gelu]": (1, 0)},  # embeddings LN + 2 per layer
    "mamba": {"RMSNormalization": (1, 1), "xpuc.SiLU": (1, 0), "xpuc.SwiGLU": (1, 0)},  # y * silu(z) gate
    "bitnet": {"RMSNormalization": (4, 1), "xpuc.FusedMatMul[Relu]": (1, 0)},  # + attn / MLP sub-norms
}
DECOMPOSED = {"ReduceMean", "Sqrt", "Reciprocal", "Pow", "Erf", "Tanh", "Sigmoid"}
"""Ops that only appear in these models as parts of norms and activations..."""
LEFT_ALONE = {"bitnet": {"Pow"}}
"""...except these: BitNet's relu(x)^2 keeps its Pow."""

FIXTURES = [f"{family}_{exporter}" for family in EXPECTED for exporter in ("dynamo", "legacy")]


def fixture_info(name: str) -> dict:
    return next(f for f in manifest()["fixtures"] if f["name"] == name)


@lru_cache(maxsize=None)
def optimized(name: str) -> tuple[Graph, Graph]:
    graph = onnx_frontend.load(MODELS / f"{name}.onnx", input_shapes={"input_ids": (2, 16)})
    return graph, optimize(graph)


@pytest.mark.parametrize("name", FIXTURES)
def test_exported_models_get_their_composite_ops(name):
    _, graph = optimized(name)
    layers = fixture_info(name)["num_layers"]
    found = kinds(graph)
    expected = {op: per * layers + extra for op, (per, extra) in EXPECTED[name.split("_")[0]].items()}
    assert {op: found[op] for op in expected} == expected
    leftover = (DECOMPOSED - LEFT_ALONE.get(name.split("_")[0], set())) & set(found)
    assert not leftover, f"unfused pieces left: {leftover}"


@pytest.mark.parametrize("name", FIXTURES)
def test_fused_models_match_onnxruntime(name):
    original, graph = optimized(name)
    tolerance = fixture_info(name)["tolerance"]
    feeds = random_feeds(original, seed=1, int_high=fixture_info(name)["vocab_size"])
    expected = ort_session(MODELS / f"{name}.onnx").run(None, feeds)
    actual = ort_session(ir.to_onnx(graph)).run(None, feeds)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=tolerance["rtol"], atol=tolerance["atol"])


# -------------------------------------------------------------- hand-built
class Builder:
    """Tiny graph builder: ``b.op("Mul", a, b)`` returns the output name."""

    def __init__(self, shape=(2, 3, 8), dtype=F32):
        self.g = Graph("unit")
        self.x = self.g.add_input("x", TensorType(dtype, shape)).name
        self.dtype = dtype

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs) -> str:
        return self.g.add_node(op_type, inputs, 1, attrs, domain=domain).outputs[0]

    def const(self, value, dtype=None) -> str:
        return self.g.add_constant(np.asarray(value, (dtype or self.dtype).numpy))

    def axes(self, *axes: int) -> str:
        return self.g.add_constant(np.array(axes, np.int64))

    def done(self, *outputs: str) -> Graph:
        self.g.outputs = list(outputs)
        return infer_shapes(self.g)


def run_fusion(graph: Graph, *passes) -> Graph:
    """Apply ``passes`` (then DCE, as the pipeline does) to a copy, check the IR, and check
    onnxruntime agrees before and after."""
    fused = graph.copy()
    for fuse in passes:
        fused = ir.verify(infer_shapes(fuse(fused)))
    fused = eliminate_dead_code(fused)
    feeds = random_feeds(graph, seed=3)
    expected = ort_session(ir.to_onnx(graph)).run(None, feeds)
    actual = ort_session(ir.to_onnx(fused)).run(None, feeds)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-3 if want.dtype == np.float16 else 1e-5, atol=1e-5)
    assert fused.outputs == graph.outputs
    return fused


def the(graph: Graph, op_type: str) -> ir.Node:
    (node,) = [n for n in graph.nodes if n.op_type == op_type]
    return node


WEIGHT = np.linspace(0.5, 1.5, 8)


def rms(b: Builder, x: str, *, square="pow", inverse="reciprocal", eps=1e-6, axis=-1, eps_after_sqrt=False) -> str:
    """x * rsqrt(mean(x^2) + eps), in one of the spellings exporters use."""
    sq = b.op("Pow", x, b.const(2.0)) if square == "pow" else b.op("Mul", x, x)
    mean = b.op("ReduceMean", sq, b.axes(axis), keepdims=1)
    if eps_after_sqrt:
        return b.op("Div", x, b.op("Add", b.op("Sqrt", mean), b.const(eps)))
    var = b.op("Add", mean, b.const(eps))
    if inverse == "pow":
        return b.op("Mul", x, b.op("Pow", var, b.const(-0.5)))
    root = b.op("Sqrt", var)
    if inverse == "div_x":
        return b.op("Div", x, root)
    inv = b.op("Reciprocal", root) if inverse == "reciprocal" else b.op("Div", b.const(1.0), root)
    return b.op("Mul", inv, x)


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("inverse", ["reciprocal", "div_one", "div_x", "pow"])
def test_rms_norm_spellings(square, inverse):
    b = Builder()
    w = b.const(WEIGHT)
    graph = b.done(b.op("Mul", w, rms(b, b.x, square=square, inverse=inverse)))
    fused = run_fusion(graph, fuse_rms_norm)
    assert kinds(fused) == {"RMSNormalization": 1}
    norm = the(fused, "RMSNormalization")
    assert norm.inputs == [b.x, w] and norm.attr("axis") == -1
    assert norm.attr("epsilon") == pytest.approx(1e-6, rel=1e-6)


def test_rms_norm_without_weight_gets_unit_scale():
    b = Builder()
    graph = b.done(rms(b, b.x, axis=2, eps=1e-5))
    fused = run_fusion(graph, fuse_rms_norm)
    norm = the(fused, "RMSNormalization")
    np.testing.assert_array_equal(fused.const_data(norm.inputs[1]), np.ones(8, np.float32))
    assert norm.attr("epsilon") == pytest.approx(1e-5, rel=1e-6)


def test_rms_norm_in_float32_of_a_half_input():
    """HF: upcast, normalize, cast back, then the weight in the input's type."""
    b = Builder(dtype=F16)
    b.dtype = F32  # constants of the upcast computation
    up = b.op("Cast", b.x, to=F32.onnx)
    down = b.op("Cast", rms(b, up), to=F16.onnx)
    graph = b.done(b.op("Mul", down, b.const(WEIGHT, F16)))
    fused = run_fusion(graph, fuse_rms_norm)
    assert kinds(fused) == {"RMSNormalization": 1}
    assert the(fused, "RMSNormalization").inputs[0] == b.x


def test_gemma_one_plus_weight_folds_into_the_scale():
    b = Builder()
    scale = b.op("Add", b.const(1.0), b.const(WEIGHT - 1))
    graph = b.done(b.op("Mul", rms(b, b.x), scale))
    fused = run_fusion(graph, fuse_rms_norm)
    assert kinds(fused) == {"RMSNormalization": 1}
    np.testing.assert_allclose(fused.const_data(the(fused, "RMSNormalization").inputs[1]), WEIGHT, rtol=1e-6)


def test_gemma_one_plus_weightless_weight_keeps_the_add():
    b = Builder()
    w = b.g.add_value("w", TensorType(F32, (8,)), const=True).name
    scale = b.op("Add", w, b.const(1.0))
    graph = b.done(b.op("Mul", rms(b, b.x), scale))
    fused = ir.verify(fuse_rms_norm(graph.copy()))
    assert kinds(fused) == {"RMSNormalization": 1, "Add": 1}
    assert the(fused, "RMSNormalization").inputs == [b.x, scale]


def test_rms_norm_near_misses_stay_unfused():
    b = Builder()
    eps_outside = rms(b, b.x, eps_after_sqrt=True)
    wrong_axis = rms(b, b.x, axis=1)
    cube = b.op("Mul", b.x, b.op("Reciprocal", b.op("Sqrt", b.op("Add", b.op(
        "ReduceMean", b.op("Pow", b.x, b.const(3.0)), b.axes(-1), keepdims=1), b.const(1e-6)))))
    graph = b.done(eps_outside, wrong_axis, cube)
    assert kinds(run_fusion(graph, fuse_rms_norm)) == kinds(graph)


def test_rms_norm_with_a_shared_intermediate_stays_unfused():
    b = Builder()
    norm = rms(b, b.x)
    inv = b.g.producer(norm).inputs[0]  # Mul(inv, x): the reciprocal is also a model output
    graph = b.done(norm, inv)
    assert "RMSNormalization" not in kinds(run_fusion(graph, fuse_rms_norm))


def layer_norm(b: Builder, x: str, *, square="pow", axis=-1, affine=True) -> tuple[str, str]:
    """(output, centered) of the decomposed torch layer norm."""
    centered = b.op("Sub", x, b.op("ReduceMean", x, b.axes(axis), keepdims=1))
    sq = b.op("Pow", centered, b.const(2.0)) if square == "pow" else b.op("Mul", centered, centered)
    var = b.op("Add", b.op("ReduceMean", sq, b.axes(-1), keepdims=1), b.const(1e-5))
    out = b.op("Div", centered, b.op("Sqrt", var))
    if affine:
        out = b.op("Add", b.op("Mul", out, b.const(WEIGHT)), b.const(WEIGHT[::-1] - 1))
    return out, centered


@pytest.mark.parametrize("square", ["pow", "mul"])
def test_layer_norm_with_gamma_and_beta(square):
    b = Builder()
    graph = b.done(layer_norm(b, b.x, square=square)[0])
    fused = run_fusion(graph, fuse_layer_norm)
    assert kinds(fused) == {"LayerNormalization": 1}
    norm = the(fused, "LayerNormalization")
    assert len(norm.inputs) == 3 and norm.attr("epsilon") == pytest.approx(1e-5, rel=1e-6)


def test_non_parametric_layer_norm():
    """OLMo: no gamma, no beta."""
    b = Builder()
    graph = b.done(layer_norm(b, b.x, affine=False)[0])
    fused = run_fusion(graph, fuse_layer_norm)
    assert kinds(fused) == {"LayerNormalization": 1}
    assert len(the(fused, "LayerNormalization").inputs) == 2


def test_layer_norm_near_misses_stay_unfused():
    b = Builder()
    wrong_axis, _ = layer_norm(b, b.x, axis=1)
    shared, centered = layer_norm(b, b.op("Neg", b.x))
    graph = b.done(wrong_axis, shared, centered)
    assert "LayerNormalization" not in kinds(run_fusion(graph, fuse_layer_norm))


def gelu_erf(b: Builder, x: str, *, divide=True, half=0.5) -> str:
    arg = b.op("Div", x, b.const(math.sqrt(2))) if divide else b.op("Mul", x, b.const(1 / math.sqrt(2)))
    bracket = b.op("Add", b.op("Erf", arg), b.const(1.0))
    return b.op("Mul", b.op("Mul", x, b.const(half)), bracket)


def gelu_tanh(b: Builder, x: str, *, cube="pow", coeff=0.044715) -> str:
    x3 = b.op("Pow", x, b.const(3.0)) if cube == "pow" else b.op("Mul", b.op("Mul", x, x), x)
    inner = b.op("Add", x, b.op("Mul", x3, b.const(coeff)))
    t = b.op("Tanh", b.op("Mul", inner, b.const(math.sqrt(2 / math.pi))))
    return b.op("Mul", b.op("Mul", b.const(0.5), x), b.op("Add", b.const(1.0), t))


@pytest.mark.parametrize("make, approximate", [
    (lambda b: gelu_erf(b, b.x), "none"),
    (lambda b: gelu_erf(b, b.x, divide=False), "none"),
    (lambda b: gelu_tanh(b, b.x), "tanh"),
    (lambda b: gelu_tanh(b, b.x, cube="mul"), "tanh"),
])
def test_gelu_forms(make, approximate):
    b = Builder()
    graph = b.done(make(b))
    fused = run_fusion(graph, fuse_gelu)
    assert kinds(fused) == {"Gelu" + ("[tanh]" if approximate == "tanh" else ""): 1}
    assert the(fused, "Gelu").inputs == [b.x]


def test_gelu_near_misses_stay_unfused():
    b = Builder()
    no_half = gelu_erf(b, b.x, half=1.0)
    wrong_coeff = gelu_tanh(b, b.x, coeff=0.05)
    shared = gelu_erf(b, b.op("Neg", b.x))
    erf = b.g.producer(b.g.producer(shared).inputs[1]).inputs[0]
    graph = b.done(no_half, wrong_coeff, shared, erf)
    assert kinds(run_fusion(graph, fuse_gelu)) == kinds(graph)


def test_silu_and_swiglu():
    b = Builder()
    gate = b.op("MatMul", b.x, b.const(np.eye(8) * 0.5))
    up = b.op("MatMul", b.x, b.const(np.eye(8)[::-1]))
    silu = b.op("Mul", b.op("Sigmoid", gate), gate)
    graph = b.done(b.op("Mul", up, silu), b.op("Mul", b.x, b.op("Sigmoid", b.x)))
    fused = run_fusion(graph, fuse_silu, fuse_swiglu, fuse_matmul_epilogue)
    assert kinds(fused) == {"MatMul": 2, "xpuc.SwiGLU": 1, "xpuc.SiLU": 1}
    assert the(fused, "SwiGLU").inputs == [gate, up]


def test_silu_near_misses_stay_unfused():
    b = Builder()
    y = b.op("Neg", b.x)
    sig = b.op("Sigmoid", b.x)
    graph = b.done(b.op("Mul", b.x, b.op("Sigmoid", y)), b.op("Mul", b.x, sig), sig)
    assert kinds(run_fusion(graph, fuse_silu)) == kinds(graph)


def test_epilogue_table_covers_every_composite_activation():
    assert set(EPILOGUES.values()) == set(ACTIVATIONS) - {""}


@pytest.mark.parametrize("key", list(EPILOGUES), ids=list(EPILOGUES.values()))
@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_bias_activation_epilogue(key, bias_first):
    domain, op_type, approximate = key
    b = Builder()
    mm = b.op("MatMul", b.x, b.const(np.random.default_rng(0).standard_normal((8, 5))))
    bias = b.const(np.arange(5.0) / 10)
    biased = b.op("Add", *([bias, mm] if bias_first else [mm, bias]))
    attrs = {"approximate": approximate} if approximate else {}
    graph = b.done(b.op(op_type, biased, domain=domain, **attrs))
    fused = run_fusion(graph, fuse_matmul_epilogue)
    assert kinds(fused) == {f"xpuc.FusedMatMul[{EPILOGUES[key]}]": 1}
    assert the(fused, "FusedMatMul").inputs[2] == bias


def test_matmul_epilogue_partial_chains():
    b = Builder()
    bias_only = b.op("Add", b.op("MatMul", b.x, b.const(np.eye(8))), b.const(np.ones(8)))
    act_only = b.op("Relu", b.op("MatMul", b.x, b.const(-np.eye(8))))
    graph = b.done(bias_only, act_only)
    assert kinds(run_fusion(graph, fuse_matmul_epilogue)) == {"xpuc.FusedMatMul": 1, "xpuc.FusedMatMul[Relu]": 1}


def test_matmul_epilogue_near_misses_stay_unfused():
    b = Builder()
    shared = b.op("MatMul", b.x, b.const(np.eye(8)))
    row_bias = b.op("Add", b.op("MatMul", b.x, b.const(np.eye(8))), b.const(np.ones((3, 8))))
    variable = b.op("Add", b.op("MatMul", b.x, b.const(np.eye(8))), b.x)
    graph = b.done(b.op("Relu", b.op("Add", shared, b.const(np.ones(8)))), shared, row_bias, variable)
    assert kinds(run_fusion(graph, fuse_matmul_epilogue)) == kinds(graph)


def test_product_sees_through_association_and_division():
    b = Builder()
    halved = b.op("Div", b.op("Mul", b.const(3.0), b.x), b.const(6.0))
    squared = b.op("Pow", b.x, b.const(2.0))
    b.done(halved, squared)
    assert product(b.g, halved)[:2] == (0.5, [b.x])
    assert product(b.g, squared)[:2] == (1.0, [b.x, b.x])
