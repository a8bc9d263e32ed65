"""Architecture portability inside an LLM: BitNet's ternary weights, routed experts, the
selective scan, each costed by a mechanism checked against hand-computed values."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

import backends
from backends.grouping import group_kernels
from backends.precision import Policy
from conftest import FIXTURES
from frontends import hf
from ir.dtypes import DType
from ir.graph import Graph
from ir.passes import optimize
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

BF16, I4 = DType.BFLOAT16, DType.INT4
TINY = json.loads((FIXTURES / "hf_tiny_configs.json").read_text())["configs"]


@functools.lru_cache(maxsize=None)
def target(name: str) -> backends.Target:
    return backends.load_target(name)


def bitlinear(m: int, k: int, n: int, codes: bool = True) -> Graph:
    """y = relu(x @ W) as the BitNet builder writes it: W stored as int4 codes and widened by a
    Cast in front of the product (``codes``), or stored in bf16 (the bf16 form of the layer)."""
    graph = Graph("bitlinear")
    graph.add_input("x", TensorType(BF16, (m, k)))
    if codes:
        graph.add_value("codes", TensorType(I4, (k, n)), const=True)
        graph.add_node("Cast", ["codes"], ["w"], {"to": BF16.onnx}, name="decode")
    else:
        graph.add_value("w", TensorType(BF16, (k, n)), const=True)
    graph.add_node("MatMul", ["x", "w"], ["h"], name="matmul")
    graph.add_node("Relu", ["h"], ["y"], name="relu")
    graph.outputs.append("y")
    return infer_shapes(graph)


def record(s: backends.Schedule, op: str):
    return next(o for o in s.ops if o.op == op)


# ------------------------------------------------------------------------- BitNet
def test_ternary_codes_are_decoded_in_the_products_prologue_not_folded():
    """The Cast of int4 codes read as a product's weight runs in the product's kernel (never
    widened before the model runs); the same Cast read by an Add is an ordinary folded constant."""
    graph = bitlinear(1, 64, 32)
    grouping = group_kernels(graph)
    (kernel,) = grouping.kernels
    assert [n.name for n in kernel.ops] == ["decode", "matmul", "relu"] and not grouping.folded
    other = Graph("not_a_weight")
    other.add_input("x", TensorType(BF16, (64, 32)))
    other.add_value("codes", TensorType(I4, (64, 32)), const=True)
    other.add_node("Cast", ["codes"], ["c"], {"to": BF16.onnx}, name="decode")
    other.add_node("Add", ["x", "c"], ["y"], name="add")
    other.outputs.append("y")
    assert [g.root.name for g in group_kernels(infer_shapes(other)).folded] == ["decode"]


def test_decode_row_through_ternary_weights_on_h100_by_hand():
    """One row through 8192 x 8192 BitNet weights on h100, memory-bound at 3.35e12 x 0.80 B/s:
    native reads the graph's int4 codes (8192^2 / 2 B), ternary packs them four to a byte
    (8192^2 / 4 B), the bf16 form reads 8192^2 x 2 B; each plus the 8192 x 2 B bf16 row (the
    product's output stays on chip for its Relu). The decode's record moves nothing."""
    row = 8192 * 2
    expected = {"native": (8192 * 8192 / 2, "the graph's bf16; the graph's i4 weights (4 bits) decoded to bf16 in "
                                             "the product's prologue"),
                "ternary": (8192 * 8192 / 4, "precision ternary: bf16; ternary weights (2 bits) decoded to bf16 in "
                                             "the product's prologue")}
    for precision, (weights, reason) in expected.items():
        s = backends.schedule(bitlinear(1, 8192, 8192), target("h100-sxm"), precision=precision)
        op = record(s, "MatMul")
        assert (op.engine, op.format, op.format_reason) == ("tensor", "bf16", reason)
        assert op.bytes["hbm"] == weights + row and record(s, "Cast").bytes["hbm"] == 0
        assert op.bound == "memory" and op.duration_s == pytest.approx((weights + row) / (3.35e12 * 0.80))
    dense = record(backends.schedule(bitlinear(1, 8192, 8192, codes=False), target("h100-sxm")), "MatMul")
    assert dense.bytes["hbm"] == 8192 * 8192 * 2 + row


@pytest.mark.parametrize("preset", backends.list_targets())
def test_ternary_bitnet_layer_costs_less_than_its_bf16_form(preset):
    """Every target stores the ternary layer in an eighth of the bf16 form's bytes; where the
    bf16 product waits for its weights to stream (memory-bound), the ternary one takes less
    time. (Where weights sit in SRAM next to a compute-bound array, the decode's conversions on
    the vector unit are the price of the smaller footprint: Groq's VXM takes 4096^2 / 4.6e12 s.)"""
    t = target(preset)
    ternary = backends.schedule(bitlinear(1, 4096, 4096), t, precision="ternary")
    dense = backends.schedule(bitlinear(1, 4096, 4096, codes=False), t, precision="bf16")
    assert ternary.memory[0].weights * 8 == dense.memory[0].weights == 4096 * 4096 * 2
    if t.outer.role == "hbm" and record(dense, "MatMul").bound == "memory":
        assert ternary.latency_s < dense.latency_s


def test_bitnet_weights_are_weight_products_under_every_policy():
    """The tiny BitNet's seven projections (q, k, v, o: 64 x 64, 64 x 32 twice, 64 x 64; gate,
    up: 64 x 96; down: 96 x 64) are int4 codes: 4 bits natively, 2 under ternary, and kept at
    4 under bf16 (a format never widens codes a graph stores narrower)."""
    graph = hf.load(TINY["bitnet"], input_shapes={"input_ids": (1, 8)})
    codes = [n for n, v in graph.values.items() if v.const and v.type.dtype is I4]
    assert sum(graph.values[n].type.numel for n in codes) == 64 * 64 * 2 + 64 * 32 * 2 + 64 * 96 * 2 + 96 * 64
    for precision, bits in [("native", 4), ("ternary", 2), ("bf16", 4)]:
        sizes = Policy(precision).sizes(graph)
        assert all(sizes[n] == graph.values[n].type.numel * bits / 8 for n in codes), precision


def test_bitnet_codes_stay_codes_through_optimize():
    """Folding leaves the ternary codes int4 (the product decodes them), so the random-weight
    model runs on 2-bit panels; its outputs are checked against onnxruntime in test_hf_models."""
    graph = optimize(hf.load(TINY["bitnet"], weights="random", input_shapes={"input_ids": (1, 8)}))
    casts = [n for n in graph.nodes if n.op_type == "Cast" and graph.type_of(n.inputs[0]).dtype is I4]
    assert len(casts) == 7
    assert all(np.isin(graph.values[n.inputs[0]].data.astype(np.int8), (-1, 0, 1)).all() for n in casts)


def test_a_prologue_decode_overlaps_its_product_on_a_systolic_chip():
    """On a TPU the vector unit decodes while the array multiplies (XLA fuses the convert into
    the dot's operand): the product starts when its decode starts, not after it."""
    s = backends.schedule(bitlinear(64, 4096, 4096), target("tpu-v5e"), precision="ternary")
    decode, product = record(s, "Cast"), record(s, "MatMul")
    assert (decode.engine, product.engine) == ("vpu", "mxu") and product.start_s == decode.start_s


# ------------------------------------------------------------------- mixture of experts
def moe_layer(tokens: int, hidden: int = 64, experts: int = 8, inter: int = 96, top_k: int = 2) -> Graph:
    graph = Graph("moe")
    graph.add_input("x", TensorType(BF16, (tokens, hidden)))
    for name, shape in [("router", (hidden, experts)), ("gate_up", (experts, hidden, 2 * inter)),
                        ("down", (experts, inter, hidden))]:
        graph.add_value(name, TensorType(BF16, shape), const=True)
    graph.add_node("MixtureOfExperts", ["x", "router", "gate_up", "down"], ["y"], {"top_k": top_k},
                   name="moe", domain="xpuc")
    graph.outputs.append("y")
    return infer_shapes(graph)


@pytest.mark.parametrize("tokens, active", [(1, 2), (4, 5), (64, 8)])
def test_routed_experts_read_only_the_experts_a_batch_reaches(tokens, active):
    """Top-2 of 8 experts: a batch of B tokens reaches 8 (1 - (3/4)^B) distinct experts in
    expectation: 2 at B = 1, 5.47 -> 5 at B = 4, 8.0 at B = 64. The op reads the router and
    those experts' gate/up (64 x 192) and down (96 x 64) matrices, bf16, while all 8 stay
    resident; its FLOPs count each token's 2 experts only."""
    from backends.work import graph_work
    from ir.ops.moe import expected_experts

    assert expected_experts(4, 8, 2) == pytest.approx(8 * (1 - 0.75 ** 4)) == pytest.approx(5.46875)
    (work,) = graph_work(moe_layer(tokens))
    expert = (64 * 192 + 96 * 64) * 2
    assert work.weights == {"router": 64 * 8 * 2, "gate_up": 8 * 64 * 192 * 2, "down": 8 * 96 * 64 * 2}
    assert work.weight_bytes == 64 * 8 * 2 + active * expert
    assert [g.batch for g in work.gemms] == [1, active, active]
    assert [g.m for g in work.gemms][1] == -(-tokens * 2 // active)
