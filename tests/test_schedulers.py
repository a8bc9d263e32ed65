"""Schedulers on every preset: fixture transformers and the onnx-shipped CNNs, checked
against physics (rooflines, idle energy, compulsory traffic), plus placement and fallback."""

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import pytest

import backends
from backends import report
from backends.calibration import matmul_graph
from backends.schedule import BOUNDS
from backends.families.systolic import gemm_cycles
from backends.work import graph_work
from ir.ops import Gemm
from frontends import onnx as onnx_frontend
from ir.dtypes import DType
from ir.formats import engine_storage
from ir.graph import Graph
from ir.passes import optimize
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

from conftest import LIGHT_CNNS, MODELS

PRESETS = backends.list_targets()
TRANSFORMERS = sorted(p.name for p in Path(MODELS).glob("*.onnx"))
CNNS = [os.path.basename(p) for p in LIGHT_CNNS]


@functools.lru_cache(maxsize=None)
def model(name: str) -> Graph:
    if name in CNNS:
        return optimize(onnx_frontend.load(LIGHT_CNNS[CNNS.index(name)]))
    return optimize(onnx_frontend.load(MODELS / name, input_shapes={"input_ids": (1, 16)}))


@functools.lru_cache(maxsize=None)
def target(name: str):
    return backends.load_target(name)


def test_fixture_models_are_present():
    assert len(TRANSFORMERS) >= 10 and len(CNNS) == 9


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", TRANSFORMERS + CNNS)
def test_schedule_obeys_physics(preset, name):
    graph, t = model(name), target(preset)
    s = backends.schedule(graph, t)
    assert s.ops and s.latency_s > 0 and s.chips >= 1 and s.family == t.family
    for o in s.ops:
        assert o.bound in BOUNDS
        assert o.duration_s >= _roofline(o, t) * (1 - 1e-9), o
        assert o.start_s >= 0 and 0 <= o.utilization <= 1 + 1e-9
    assert s.energy_j >= s.latency_s * t.power.idle_w * s.chips
    assert s.cost_usd > 0
    assert all(0 <= u <= 1 + 1e-9 for u in s.utilization.values())
    for level, needed in _compulsory_bytes(graph, s, t).items():
        assert sum(o.bytes.get(level, 0) for o in s.ops) >= needed * (1 - 1e-6), level
    assert s.peak_memory[t.outer.name] >= sum(v.type.nbytes or 0 for v in graph.initializers()) / s.chips


def _roofline(o, t) -> float:
    """The least time the op could take: its FLOPs at peak, and each level's bytes at full bandwidth."""
    bound = max([size / t.bandwidth(level) for level, size in o.bytes.items()], default=0.0)
    if o.engine in t.engines:
        bound = max(bound, o.flops / t.engines[o.engine].peak(o.format))
    elif o.engine == "host":
        bound = max(bound, o.flops / t.host.flops_per_s)
    return bound


def _compulsory_bytes(graph, s, t) -> dict[str, float]:
    """Weights must reach the engine that uses them through every level on its path, in the
    format that engine runs; outputs of the graph are written to the outer level."""
    scheduled = {o.name.split("[")[0]: o for o in s.ops}
    need = {m.name: 0.0 for m in t.memory}
    for work in graph_work(graph):
        record = scheduled.get(work.name)
        if record is None or not work.weight_bytes:
            continue
        stored = DType.from_short(work.fmt).itemsize
        levels = [t.outer.name] if record.engine == "host" else list(need)
        for level in levels:
            scale = 1 if level == t.outer.name else engine_storage(record.format).itemsize / stored
            need[level] += work.weight_bytes * scale
    need[t.outer.name] += sum(graph.values[v].type.nbytes or 0 for v in graph.outputs
                              if graph.producer(v) is not None and graph.producer(v).name in scheduled)
    return need


def test_schedules_are_deterministic():
    graph, t = model(TRANSFORMERS[0]), target("groq-lpu")
    assert report.to_json(backends.schedule(graph, t)) == report.to_json(backends.schedule(graph, t))


def test_gpu_kernels_are_labelled_by_what_limits_them():
    t = target("a100-80gb")
    bounds = {shape: backends.schedule(matmul_graph(*shape), t).ops[0].bound
              for shape in [(8192, 8192, 8192), (16, 12288, 12288), (64, 64, 64)]}
    assert bounds == {(8192, 8192, 8192): "compute", (16, 12288, 12288): "memory", (64, 64, 64): "launch"}


def test_wave_quantization_makes_one_more_tile_cost_a_wave():
    t = target("a100-80gb")
    tm, tn, _ = t.engines["tensor"].tile
    sms = int(t.engines["tensor"].count)
    rows, cols = 12, sms // 12  # one full wave of tiles, square enough to be compute-bound
    full = backends.schedule(matmul_graph(tm * rows, tn * cols, 4096), t).ops[0]
    spill = backends.schedule(matmul_graph(tm * rows + 1, tn * cols, 4096), t).ops[0]
    assert full.bound == spill.bound == "compute"
    assert spill.duration_s - t.launch_overhead_s > 1.8 * (full.duration_s - t.launch_overhead_s)


@pytest.mark.parametrize("dataflow, tall_vs_wide", [("os", 0), ("ws", -1), ("is", 1)])
def test_systolic_dataflow_decides_which_dimension_streams(dataflow, tall_vs_wide):
    """os folds M x N (tall and wide cost the same); ws streams M (tall is cheap); is streams N."""
    engine = dataclasses.replace(target("systolic-generic").engines["array"], dataflow=dataflow)
    tall, wide = gemm_cycles(Gemm(1, 4096, 128, 128), engine), gemm_cycles(Gemm(1, 128, 4096, 128), engine)
    assert (tall > wide) - (tall < wide) == tall_vs_wide


def test_unsupported_formats_fall_back_to_the_host_visibly():
    graph = Graph("int64_cumsum")
    graph.add_input("x", TensorType(DType.INT64, (1, 1024)))
    graph.add_value("axis", TensorType(DType.INT64, ()), const=True)
    graph.add_node("CumSum", ["x", "axis"], ["y"], name="positions")
    graph.outputs.append("y")
    s = backends.schedule(infer_shapes(graph), target("systolic-generic"))
    (op,) = s.ops
    assert (op.engine, op.bound) == ("host", "host")
    assert op.bytes["host_link"] >= 2 * 1024 * 8
    link = target("systolic-generic").host
    assert op.duration_s >= 2 * link.latency_s + op.bytes["host_link"] / link.bandwidth_bytes_per_s


def test_groq_chip_count_follows_from_sram_capacity():
    from frontends.synthetic import LLAMA3_70B, llama_onnx
    graph = onnx_frontend.load(llama_onnx(LLAMA3_70B, batch=1, seq=16), weights=False)
    t = target("groq-lpu")
    weights = sum(v.type.nbytes for v in graph.initializers())
    s = backends.schedule(graph, t)
    minimum = math.ceil(weights / t.outer.capacity_bytes)
    assert minimum > 600
    assert minimum <= s.chips <= 1.1 * minimum
    assert {o.chip for o in s.ops} == set(range(s.chips))
    assert any(o.engine == "interconnect" for o in s.ops)
    assert s.peak_memory["sram"] <= t.outer.capacity_bytes


def test_report_json_table_and_trace():
    s = backends.schedule(model(TRANSFORMERS[0]), target("tpu-v4"))
    data = json.loads(report.to_json(s))
    assert set(data["totals"]) == {"latency_s", "energy_j", "cost_usd", "chips", "kernels", "period_s", "throughput_per_s",
                                   "joules_per_pass", "usd_per_pass", "tokens_per_pass", "tokens_per_s",
                                   "joules_per_token", "usd_per_token"}
    assert {"name", "op", "engine", "chip", "start_s", "duration_s", "flops", "bytes", "bound"} <= set(data["ops"][0])
    assert len(data["ops"]) == len(s.ops)
    table = report.format_table(s)
    assert all(report.short_name(o.name) in table for o in s.ops) and "latency" in table
    trace = report.to_chrome_trace(s)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(s.ops)
    assert {e["pid"] for e in spans} == {o.chip for o in s.ops}
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert {names[(e["pid"], e["tid"])] for e in spans} == {o.engine for o in s.ops}
    json.dumps(trace)


@pytest.mark.parametrize("preset", ["systolic-generic", "tpu-v4", "inferentia2"])
def test_systolic_attention_runs_its_softmax_on_the_vector_unit(preset):
    """The array does the two products; scale, mask, exp, sum and divide go to the vector unit at the same time."""
    graph, t = model("llama_dynamo.onnx"), target(preset)
    s = backends.schedule(graph, t)
    attention = [w for w in graph_work(graph) if w.node.op_type == "Attention"]
    assert attention
    matrix, vector = ({e.role: e.name for e in t.engines.values()}[role] for role in ("matrix", "vector"))
    for work in attention:
        records = {o.engine: o for o in s.ops if o.name.split(".")[0] == work.name and o.op == "Attention"}
        assert set(records) == {matrix, vector}
        scores = work.gemms[0]
        assert records[vector].flops == 5 * scores.batch * scores.m * scores.n
        assert records[matrix].flops + records[vector].flops == work.flops
        assert records[matrix].start_s == records[vector].start_s
    assert s.utilization[vector] > 0


def test_ops_inside_a_kernel_do_not_wait_for_hbm_on_a_systolic_chip():
    """A fused chain of 10 f32 Relus on tpu-v4's vector unit: the first op reads x0 from HBM
    and the last writes x10 (each waits the HBM latency once); the 8 between pass values on
    chip and cost their arithmetic alone: 64 ops / (2 cores x 1.05e9 Hz x 2048 f32 ops per cycle)."""
    t = target("tpu-v4")
    graph = Graph("relu_chain")
    graph.add_input("x0", TensorType(DType.FLOAT32, (1, 64)))
    for i in range(10):
        graph.add_node("Relu", [f"x{i}"], [f"x{i + 1}"], name=f"relu{i}")
    graph.outputs.append("x10")
    s = backends.schedule(infer_shapes(graph), t)
    assert s.kernels == 1
    assert [o.duration_s for o in s.ops[1:-1]] == [pytest.approx(64 / (2 * 1.05e9 * 2048))] * 8
    hbm = t.outer
    for o in (s.ops[0], s.ops[-1]):
        assert o.duration_s == pytest.approx(hbm.latency_s + 256 / hbm.effective_bandwidth)
