"""Architecture portability inside an LLM: BitNet's ternary weights, routed experts, the
selective scan, each costed by a mechanism checked against hand-computed values."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

import backends
from backends.families.systolic import macs_per_cell
from backends.grouping import group_kernels
from backends.precision import Policy
from conftest import FIXTURES
from frontends import hf
from ir.dtypes import DType
from ir.graph import Graph
from ir.ops.quant import integer_product
from ir.passes import optimize
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

BF16, I4 = DType.BFLOAT16, DType.INT4
TINY = json.loads((FIXTURES / "hf_tiny_configs.json").read_text())["configs"]


@functools.lru_cache(maxsize=None)
def target(name: str) -> backends.Target:
    return backends.load_target(name)


def bitlinear(m: int, k: int, n: int, codes: bool = True, int8_rows: bool = False) -> Graph:
    """y = relu(x @ W) as the BitNet builder writes it: W stored as int4 codes and widened by a
    Cast in front of the product (``codes``), or stored in bf16 (the bf16 form of the layer);
    with ``int8_rows``, x first rounded to int8 codes times one scale per row, as BitNet's
    activations are (transformers' ActQuant: ``clip(round(x * s), -128, 127) / s``)."""
    graph = Graph("bitlinear")
    graph.add_input("x", TensorType(BF16, (m, k)))
    x = "x"
    if int8_rows:
        bound = {name: graph.add_constant(np.array(value, BF16.numpy), name)
                 for name, value in (("q_max", 127.0), ("q_low", -128.0), ("q_high", 127.0))}
        graph.add_node("Abs", ["x"], ["magnitude"], name="abs")
        graph.add_node("ReduceMax", ["magnitude", graph.add_constant(np.array([-1]), "last")], ["top"],
                       {"keepdims": 1}, name="absmax")
        graph.add_node("Div", [bound["q_max"], "top"], ["scale"], name="scale")
        graph.add_node("Mul", ["x", "scale"], ["scaled"], name="scaled")
        graph.add_node("Round", ["scaled"], ["rounded"], name="round")
        graph.add_node("Clip", ["rounded", bound["q_low"], bound["q_high"]], ["clipped"], name="clip")
        x = graph.add_node("Div", ["clipped", "scale"], ["x_q"], name="dequantize").outputs[0]
    if codes:
        graph.add_value("codes", TensorType(I4, (k, n)), const=True)
        graph.add_node("Cast", ["codes"], ["w"], {"to": BF16.onnx}, name="decode")
    else:
        graph.add_value("w", TensorType(BF16, (k, n)), const=True)
    graph.add_node("MatMul", [x, "w"], ["h"], name="matmul")
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


def int8_engine(t: backends.Target):
    """The engine that runs the target's products in int8, if any (a low-bit format)."""
    return next((e for e in t.engines.values() if e.handles("matmul", "MatMul") and e.multiplies("i8")), None)


@pytest.mark.parametrize("preset", backends.list_targets())
def test_ternary_bitnet_layer_costs_less_than_its_bf16_form(preset):
    """BitNet's layer (int8 rows times ternary codes) against its bf16 form, both with BitNet's
    int8 activations. A target whose matrix engine multiplies int8 runs the ternary product
    there (the graph computes on integers) and takes less time than the bf16 form, for a
    prefill's 1024 rows and for one decode row, on every such target. Weights streamed from
    HBM stay packed (an eighth of the bf16 form's bytes, decoded in the product's prologue);
    an SRAM chip with room holds them unpacked in int8 (half the bf16 form's bytes), so its
    vector unit does not unpack them on every pass while the array waits."""
    t = target(preset)
    engine = int8_engine(t)
    held_int8 = engine is not None and t.outer.role == "sram"
    for rows in (1, 1024):
        ternary = backends.schedule(bitlinear(rows, 4096, 4096, int8_rows=True), t, precision="ternary")
        dense = backends.schedule(bitlinear(rows, 4096, 4096, codes=False, int8_rows=True), t, precision="bf16")
        constants = 3 * 2 + 8  # ActQuant's three bf16 bounds and its int64 axis
        assert (ternary.memory[0].weights - constants) * (2 if held_int8 else 8) == \
            dense.memory[0].weights - constants == 4096 * 4096 * 2
        product = record(ternary, "MatMul")
        assert product.engine == record(dense, "MatMul").engine and (product.format == "i8") == bool(engine)
        assert any(o.op == "Cast" for o in ternary.ops) != held_int8  # no decode per pass when held unpacked
        if engine:
            assert ternary.latency_s < dense.latency_s, rows


def test_an_sram_chip_without_room_keeps_the_codes_packed():
    """Groq holds 230 MB per chip: a 16384 x 16384 ternary layer unpacked to int8 (268 MB) does
    not fit the chips its packed codes (67 MB) need, so they stay packed and the vector unit
    decodes them in the product's prologue, as the reason says."""
    t = target("groq-lpu")
    s = backends.schedule(bitlinear(1, 16384, 16384, int8_rows=True), t, precision="ternary")
    assert s.chips == 1 and any(o.op == "Cast" for o in s.ops)
    assert record(s, "MatMul").format_reason.endswith("ternary weights (2 bits) decoded to i8 in the product's "
                                                      "prologue")
    held = backends.schedule(bitlinear(1, 4096, 4096, int8_rows=True), t, precision="ternary")
    assert record(held, "MatMul").format_reason.endswith("ternary weights held as i8, unpacked once at load where "
                                                         "the chips have room")


def test_bitnet_products_are_integer_products():
    """The tiny BitNet's seven projections per layer read int8 rows (its ActQuant) and ternary
    codes: integer products, run in int8 where an engine has it and widened visibly where not
    (Cerebras's cores have no int8); its LM head (float weights, float rows) is not one."""
    graph = optimize(hf.load(TINY["bitnet"], input_shapes={"input_ids": (1, 8)}))
    integer = [n.name for n in graph.nodes if integer_product(graph, n)]
    assert len(integer) == 7 * TINY["bitnet"]["num_hidden_layers"] and not any("lm_head" in n for n in integer)
    for preset, reason in [("tpu-v5e", "the graph's integer product in i8; the graph's i4 weights (4 bits) decoded "
                                       "to i8 in the product's prologue"),
                           ("cerebras-wse3", "the graph's integer product in i8 widened to f16 (no i8 on cores); the "
                                             "graph's i4 weights (4 bits) decoded to f16 in the product's prologue")]:
        s = backends.schedule(graph, target(preset))
        assert {o.format_reason for o in s.ops if o.name in integer} == {reason}


@pytest.mark.parametrize("preset, packed", [("tpu-v5e", 2), ("tpu-v4", 1), ("inferentia2", 2),
                                            ("systolic-generic", 1)])
def test_int8_packs_into_systolic_cells_as_the_peak_says(preset, packed):
    """TPU v5e's MXU does 65,536 int8 ops per cycle on 128 x 128 cells against 32,768 in bf16:
    two int8 multiply-accumulates per cell per cycle, so an int8 product's cycles halve; TPU v4
    lists the same peak in both (one)."""
    engine = int8_engine(target(preset))
    assert macs_per_cell(engine, "i8") == packed and macs_per_cell(engine, "bf16") == 1
    rows, cols = engine.array
    assert engine.ops_per_cycle("i8") == packed * 2 * rows * cols


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
