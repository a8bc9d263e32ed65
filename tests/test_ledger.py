"""The fallback ledger: which records it lists, of what kind, and what they cost (by hand)."""

from __future__ import annotations

import pytest

import backends
from backends import ledger, readout
from backends.calibration import matmul_graph
from backends.schedule import OpSchedule
from frontends import onnx as onnx_frontend
from ir import DType, Graph, TensorType
from ir.passes import infer_shapes, optimize, quantize
from xpuc.cli import DEFAULT_MODEL


def _ledger(graph: Graph, target_name: str) -> tuple[ledger.Ledger, backends.Schedule]:
    target = backends.load_target(target_name)
    s = backends.schedule(graph, target)
    return ledger.ledger(s, target, ledger.graph_facts(graph)), s


def test_a_host_fallback_costs_both_link_crossings_its_bytes_and_the_chips_idle_power():
    graph = Graph("negate")
    graph.add_input("x", TensorType(DType.INT64, (1, 1000)))
    graph.add_node("Neg", ["x"], ["y"], name="neg")
    graph.outputs.append("y")
    book, s = _ledger(infer_shapes(graph), "systolic-generic")  # its vector unit has no int64
    (entry,) = book.entries
    assert (entry.kind, entry.op, entry.engine, entry.formats, entry.ops) == ("host", "Neg", "host", "i64", ["neg"])
    assert "not i64" in entry.reason
    moved = 2 * 8000  # int64 in and out over the host link: 10 us latency each way, 8 GB/s, 1e11 FLOP/s
    seconds = 2 * 10e-6 + moved / 8e9 + 1000 / 1e11
    assert entry.time_s == pytest.approx(seconds)
    assert entry.bytes == {"hbm": moved, "host_link": moved}
    # per-MAC spec: 1 pJ per MAC (2 FLOPs), 150 pJ per HBM byte, plus the chip's 5 W idle over the op
    assert entry.energy_j == pytest.approx(1000 / 2 * 1e-12 + moved * 150e-12 + 5 * seconds)
    assert book.porting_share == 1.0 and book.brief() == "host 1 op(s) 22 us"


def test_a_product_on_cuda_cores_for_want_of_an_f32_tensor_core_is_a_vector_fallback():
    book, s = _ledger(matmul_graph(64, 256, 128, "f32"), "gpu-generic")
    (entry,) = book.entries
    assert (entry.kind, entry.engine, entry.formats) == ("vector", "simt", "f32")
    assert entry.reason == "tensor runs f16, bf16, i8, not f32"
    # its kernel's 5 us launch is the kernel's, paid whichever engine runs it
    assert entry.time_s == pytest.approx(s.ops[0].duration_s - 5e-6) and book.porting_share == 1.0


def test_an_auto_cast_is_listed_but_is_no_porting_time():
    book, _ = _ledger(matmul_graph(64, 256, 128, "f32"), "tpu-v4")
    (entry,) = book.entries
    assert (entry.kind, entry.engine, entry.formats, entry.reason) == \
        ("auto-cast", "mxu", "f32->bf16", "mxu converts f32 to bf16")
    assert book.porting_share == 0.0 and entry.time_s > 0


def test_attention_softmax_on_the_vector_unit_beside_the_array_is_no_fallback():
    graph = optimize(onnx_frontend.load(DEFAULT_MODEL, input_shapes={"input_ids": (1, 16)}))
    book, s = _ledger(graph, "tpu-v4")
    assert any(o.name.endswith(".softmax") for o in s.ops)
    assert {e.kind for e in book.entries} == {"auto-cast"}


def test_conversions_between_number_formats_are_listed_and_index_casts_are_not():
    graph = Graph("casts")
    graph.add_input("x", TensorType(DType.FLOAT32, (16, 64)))
    graph.add_input("ids", TensorType(DType.INT64, (16, 64)))
    graph.add_value("w", TensorType(DType.FLOAT32, (64, 32)), const=True)
    graph.add_node("Cast", ["ids"], ["ids_f"], {"to": 1}, name="ids_to_float")
    graph.add_node("Add", ["x", "ids_f"], ["h"], name="add")
    graph.add_node("MatMul", ["h", "w"], ["p"], name="matmul")
    graph.add_node("Relu", ["p"], ["y"], name="relu")  # so the product is no model head, which keeps float32
    graph.outputs.append("y")
    graph = quantize(infer_shapes(graph), "bf16")
    book, s = _ledger(graph, "h100-sxm")
    conversions = [e for e in book.entries if e.kind == "conversion"]
    assert {e.formats for e in conversions} == {"f32->bf16", "bf16->f32"}
    assert "ids_to_float" not in {op for e in book.entries for op in e.ops}
    # kernel 0 opens with the index cast, kernel 1 with the weight's decode (inlined into its product):
    # each carries its kernel's 4 us launch, which the ledger leaves to the kernel
    assert readout.launch_seconds(s, backends.load_target("h100-sxm")) == \
        [4e-6 if o.name in ("ids_to_float", "matmul_weight") else 0.0 for o in s.ops]
    casts = [o for o in s.ops if o.op == "Cast" and o.name != "ids_to_float"]
    assert sum(e.time_s for e in conversions) == pytest.approx(sum(o.duration_s for o in casts) - 4e-6)


def test_an_op_cut_over_chips_costs_its_all_gather():
    graph = matmul_graph(8, 4096, 8192, "f16")  # 64 MiB of weights: more than a 64 MB chip holds
    book, s = _ledger(graph, "dataflow-generic")
    (split,) = [e for e in book.entries if e.kind == "split"]
    gathers = [o for o in s.ops if o.op == "AllGather"]
    assert s.chips >= 2 and len(gathers) == s.chips
    assert (split.op, split.engine, split.ops, split.records) == ("MatMul", "interconnect", ["matmul"], s.chips)
    assert split.time_s == pytest.approx(sum(o.duration_s for o in gathers))
    assert split.bytes == {"interconnect": sum(o.bytes["interconnect"] for o in gathers)}


def test_a_row_parallel_products_all_reduce_is_a_split_of_that_product_not_an_auto_cast():
    """X[64,1024] @ W0[1024,4096] @ W1[4096,1024] in f16 on 2 dataflow-generic chips: W0 cut by
    columns, W1 by rows, whose partial sums one ring all-reduce of the 64x1024 output completes
    on each chip: 2 steps of 1 us hop + 64 KiB (half the output) at 100 GB/s."""
    graph = Graph("two")
    graph.add_input("x", TensorType(DType.FLOAT16, (64, 1024)))
    for i, (k, n) in enumerate([(1024, 4096), (4096, 1024)]):
        graph.add_value(f"w{i}", TensorType(DType.FLOAT16, (k, n)), const=True)
        graph.add_node("MatMul", ["x" if i == 0 else "y0", f"w{i}"], [f"y{i}"], name=f"matmul{i}")
    graph.outputs.append("y1")
    target = backends.load_target("dataflow-generic")
    s = backends.schedule(infer_shapes(graph), target, tp=2)
    book = ledger.ledger(s, target, ledger.graph_facts(graph))
    (split,) = book.entries
    assert (split.kind, split.op, split.engine, split.formats, split.ops, split.records) == \
        ("split", "MatMul", "interconnect", "f16", ["matmul1"], 2)
    assert split.reason == "cut over chips: its partial sums all-reduced on each"
    assert split.time_s == pytest.approx(2 * 2 * (1e-6 + 64 * 1024 * 2 / 2 / 100e9))


@pytest.mark.parametrize("record, node", [("a.b", "a.b"), ("a.b[1]", "a.b"), ("x.softmax", "x"),
                                          ("x[2].softmax", "x"), ("w.allgather[0]", "w"), ("v->chip1", None)])
def test_records_are_traced_to_their_node_through_the_schedulers_suffixes(record, node):
    r = OpSchedule(record, "MatMul", "mxu", 0, 0.0, 0.0, 0, {}, "compute", 0.0)
    assert readout.record_node(r, {"a.b", "x", "w"}) == node
