"""Deployments against hand-computed values: collectives on a ring and a switch, tensor,
expert and pipeline parallel cuts, stage hops, memory per chip, the smallest deployment that
fits, and steady-state throughput, energy and dollars.

dataflow-generic (teaching numbers) keeps the arithmetic readable: chips of 64 MB SRAM in a
ring, 100 GB/s per direction, 1 us per hop, no collective overhead, no runtime reserve, 10 W
idle, 1 pJ per MAC and 10 pJ per SRAM byte, $0.30 per chip-hour.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest

import backends
from backends import report
from backends.collectives import all_gather_s, all_reduce_s, all_to_all_s, hop_s
from backends.deployment import Deployment
from backends.sharding import COLUMNS, EXPERTS, REPLICATED, ROWS, SPLIT, Shard, piece, pieces
from backends.work import graph_work
from frontends import onnx as onnx_frontend
from frontends.synthetic import TINY, llama_onnx
from ir.dtypes import DType
from ir.graph import Graph
from ir.ops import Gemm
from ir.ops.moe import expert_flops, router_flops
from ir.passes import optimize
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType
from test_architectures import moe_layer
from xpuc.cli import main

F16 = 2
RING = 100e9  # dataflow-generic's link, bytes/s each way
HOP = 1e-6


@functools.lru_cache(maxsize=None)
def target(name: str = "dataflow-generic"):
    return backends.load_target(name)


def chain(m: int, widths: list[int], name: str = "chain") -> Graph:
    """``X[m, widths[0]]`` through MatMuls by weightless f16 weights, a Relu after all but the last."""
    graph = Graph(name)
    graph.add_input("X", TensorType(DType.FLOAT16, (m, widths[0])))
    value = "X"
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        graph.add_value(f"W{i}", TensorType(DType.FLOAT16, (k, n)), const=True)
        graph.add_node("MatMul", [value, f"W{i}"], [f"Y{i}"], name=f"matmul{i}")
        value = f"Y{i}"
        if i < len(widths) - 2:
            graph.add_node("Relu", [value], [f"R{i}"], name=f"relu{i}")
            value = f"R{i}"
    graph.outputs.append(value)
    return infer_shapes(graph)


def records(s, op: str) -> list:
    return [o for o in s.ops if o.op == op]


# ------------------------------------------------------------------ collectives
def test_ring_and_switch_collectives_follow_steps_and_bytes():
    """8 MB over 4 chips: a ring reduce-scatter or all-gather is 3 steps of 1 us, each chip
    sending 3/4 of the tensor (6 MB at 100 GB/s = 60 us); an all-reduce is both. A switch does
    each in one step; the collective's fixed cost comes on top."""
    ring = target().interconnect
    assert all_gather_s(ring, 4, 8e6) == pytest.approx(3e-6 + 60e-6)
    assert all_reduce_s(ring, 4, 8e6) == pytest.approx(2 * (3e-6 + 60e-6))
    switch = dataclasses.replace(ring, topology="switch", collective_latency_s=5e-6, efficiency=0.5)
    assert all_reduce_s(switch, 4, 8e6) == pytest.approx(5e-6 + 2 * (1e-6 + 120e-6))
    assert all_reduce_s(ring, 1, 8e6) == 0.0
    assert hop_s(ring, 1e6) == pytest.approx(1e-6 + 10e-6)


def test_an_all_to_all_relays_around_a_ring_and_crosses_a_switch_once():
    """8 MB per chip over 4 chips, 2 MB for each: a switch sends the 3 other shares at once (one
    step, 6 MB through the chip's port); a ring relays them in 3 steps, the share for the chip d
    places on crossing d links: (1 + 2 + 3) x 2 MB = 12 MB through each link."""
    ring = target().interconnect
    assert all_to_all_s(ring, 4, 8e6) == pytest.approx(3e-6 + 12e6 / RING)
    switch = dataclasses.replace(ring, topology="switch", collective_latency_s=5e-6)
    assert all_to_all_s(switch, 4, 8e6) == pytest.approx(5e-6 + 1e-6 + 6e6 / RING)
    assert all_to_all_s(ring, 2, 8e6) == pytest.approx(1e-6 + 4e6 / RING)  # two chips: a ring is a switch
    assert all_to_all_s(ring, 1, 8e6) == 0.0


def test_nvlink_all_reduce_matches_nccls_latency_model():
    """h100-sxm: NCCL's 6.6 us base and 0.6 us per NVLink hop; on NVSwitch one hop per phase;
    16 KB (one decode token of an 8192-wide model in f16) across 8 GPUs at 0.82 x 450 GB/s."""
    link = target("h100-sxm").interconnect
    size = 8192 * F16
    assert all_reduce_s(link, 8, size) == pytest.approx(6.6e-6 + 2 * (0.6e-6 + 7 / 8 * size / (0.82 * 450e9)))


# ------------------------------------------------------------- tensor parallel
def test_two_products_split_by_columns_then_rows_with_one_all_reduce():
    """X[64,1024] @ W0[1024,4096] -> Relu -> @ W1[4096,1024] on 2 chips: W0 by columns (each
    chip half the FLOPs and weights, its output half), Relu on its half, W1 by rows, leaving
    partial sums that one ring all-reduce of the 64x1024 f16 output completes."""
    m, k, n = 64, 1024, 4096
    s = backends.schedule(chain(m, [k, n, k]), target(), tp=2)
    assert (s.deployment.tp, s.deployment.pp, s.chips) == (2, 1, 2)
    products = records(s, "MatMul")
    assert sorted(o.chip for o in products) == [0, 0, 1, 1]
    assert all(o.flops == m * n * k for o in products)  # 2mnk / 2 chips
    (first,) = [o for o in s.ops if o.name == "matmul0[0]"]
    assert first.bytes["sram"] == (m * k + k * n // 2) * F16  # whole X, half W0; Y0 stays in the kernel for Relu
    (relu,) = [o for o in s.ops if o.name == "relu0[0]"]
    assert relu.flops == m * n // 2 and relu.bytes["sram"] == m * n // 2 * F16  # writes its half of R0
    reduces = records(s, "AllReduce")
    assert sorted(o.chip for o in reduces) == [0, 1] and not records(s, "AllGather")
    size = m * k * F16
    assert reduces[0].duration_s == pytest.approx(2 * (HOP + size / 2 / RING))
    assert reduces[0].bytes["interconnect"] == size  # 2 (n-1)/n of it, n = 2
    assert s.memory[0].weights == pytest.approx(2 * k * n * F16 / 2)


def test_a_split_graph_output_is_all_gathered():
    m, k, n = 16, 512, 2048
    s = backends.schedule(chain(m, [k, n]), target(), tp=4)
    gathers = records(s, "AllGather")
    assert len(gathers) == 4 and not records(s, "AllReduce")
    assert gathers[0].duration_s == pytest.approx(3 * HOP + 3 / 4 * m * n * F16 / RING)


def test_a_transformer_layer_all_reduces_twice_and_splits_its_kv_cache():
    """Megatron: q/k/v and gate/up by columns, attention by heads, o_proj and down by rows (two
    all-reduces per layer), the embedding by vocabulary rows (one more), logits gathered."""
    graph = optimize(onnx_frontend.load(llama_onnx(TINY, batch=1, seq=8, external_data=None)))
    whole = backends.schedule(graph, target("h100-sxm"), tp=1)
    split = backends.schedule(graph, target("h100-sxm"), tp=2)
    per_chip = [o for o in records(split, "AllReduce") if o.chip == 0]
    assert len(per_chip) == 2 * TINY.layers + 1
    assert len([o for o in records(split, "AllGather") if o.chip == 0]) == 1
    assert split.memory[0].kv == pytest.approx(whole.memory[0].kv / 2) and whole.memory[0].kv > 0
    kinds = {o.name.split("[")[0].rsplit(".", 1)[-1] for o in records(split, "AllReduce")}
    assert kinds == {"allreduce"}


def test_shard_kinds_of_a_two_product_chain():
    from backends.grouping import group_kernels
    from backends.sharding import plan_shards
    from backends.work import graph_work

    graph = chain(8, [64, 256, 64])
    grouping = group_kernels(graph)
    shards = plan_shards(graph_work(graph, grouping=grouping), grouping, graph.outputs, 2)
    assert [s.kind for s in shards] == [COLUMNS, SPLIT, ROWS]
    narrow = chain(8, [64, 1])  # one output column cannot be cut two ways: it runs whole on both
    grouping = group_kernels(narrow)
    assert [s.kind for s in plan_shards(graph_work(narrow, grouping=grouping), grouping, narrow.outputs, 2)] == \
        [REPLICATED]


# ------------------------------------------------------------ expert parallel
BF16 = 2
ROUTER = 64 * 8 * BF16                # moe_layer: H 64, E 8 experts, I 96, top 2, bf16
EXPERT = (64 * 192 + 96 * 64) * BF16  # one expert's gate/up and down: 36,864 B


@pytest.mark.parametrize("topology", ["ring", "switch"])
def test_an_experts_cut_holds_e_over_tp_experts_and_exchanges_tokens_twice(topology):
    """64 tokens, 8 experts, top 2, on 4 chips: each chip holds 2 whole experts and the router;
    it routes its 16 tokens and sends their 2 rows each (16 x 2 x 64 bf16 = 4 kB, a quarter for
    each chip) to the experts' chips, gets the results back, then all-gathers its tokens'
    outputs (64 x 64 bf16). No all-reduce. A ring relays the all-to-all (each link carries
    (1 + 2 + 3) kB), a switch sends 3 kB at once."""
    link = dataclasses.replace(target().interconnect, topology=topology)
    graph, ring = moe_layer(64), target()
    s = backends.schedule(graph, dataclasses.replace(ring, interconnect=link), tp=4, ep=True)
    tp = backends.schedule(graph, ring, tp=4)
    assert s.deployment == Deployment(4, 1, ep=True)
    assert s.memory[0].weights == ROUTER + 2 * EXPERT
    assert tp.memory[0].weights == (ROUTER + 8 * EXPERT) / 4
    assert not records(s, "AllReduce") and len(records(tp, "AllReduce")) == 4
    dispatch, combine = ([o for o in records(s, "AllToAll") if o.name.startswith(f"moe.{step}")]
                         for step in ("dispatch", "combine"))
    buffer = 16 * 2 * 64 * BF16
    crossed = {"ring": (1 + 2 + 3) / 4 * buffer, "switch": 3 / 4 * buffer}[topology]
    steps = {"ring": 3, "switch": 1}[topology]
    for exchange in (dispatch, combine):
        assert len(exchange) == 4 and exchange[0].bytes["interconnect"] == crossed
        assert exchange[0].duration_s == pytest.approx(steps * HOP + crossed / RING)
    (moe,) = [o for o in s.ops if o.name == "moe[0]"]
    assert dispatch[0].end_s <= moe.start_s and combine[0].start_s >= moe.end_s
    gathers = records(s, "AllGather")
    assert len(gathers) == 4 and gathers[0].start_s >= combine[0].end_s
    assert gathers[0].duration_s == pytest.approx(steps * HOP + 3 / 4 * 64 * 64 * BF16 / RING)
    pairs = 64 * 2 // 4
    assert moe.flops == pairs * expert_flops(64, 96, "SiLU") + 16 * router_flops(64, 8, 2)
    assert sum(o.flops for o in records(s, "xpuc.MixtureOfExperts")) == \
        sum(o.flops for o in records(tp, "xpuc.MixtureOfExperts")) == graph_work(graph)[0].flops


@pytest.mark.parametrize("tokens, dealt, rows", [(64, [2, 2, 2, 2], 16), (4, [2, 1, 1, 1], 2)])
def test_an_experts_chip_runs_whole_products_of_the_experts_dealt_to_it(tokens, dealt, rows):
    """64 tokens reach all 8 experts (16 rows each): each chip runs its 2, whole in N (gate/up
    64 x 192, down 96 x 64), where tensor parallelism runs all 8 with a quarter of their
    columns. 4 tokens reach 5 experts (2 rows each): dealt out over 4 chips, the first runs 2
    and reads 2 experts' weights, the others 1; together they read the 5 that tensor
    parallelism reads a quarter of on each chip, and the stage waits for the first."""
    (work,) = graph_work(moe_layer(tokens))
    chips = pieces(work, Shard(EXPERTS, True), 4)
    pair = expert_flops(64, 96, "SiLU")
    for mine, count in zip(chips, dealt):
        assert mine.gemms == [Gemm(1, tokens // 4, 8, 64), Gemm(count, rows, 192, 64), Gemm(count, rows, 64, 96)]
        assert mine.weight_bytes == ROUTER + count * EXPERT
        assert mine.flops == tokens // 4 * router_flops(64, 8, 2) + count * rows * pair
        assert mine.weights == {"router": ROUTER, "gate_up": 2 * 64 * 192 * BF16, "down": 2 * 96 * 64 * BF16}
    split = piece(work, Shard("partial"), 4)
    assert split.gemms[1] == Gemm(sum(dealt), rows, 192 // 4, 64)
    assert split.weight_bytes == (ROUTER + sum(dealt) * EXPERT) / 4


def test_expert_parallelism_needs_experts_that_the_tp_chips_divide():
    with pytest.raises(backends.ScheduleError, match="--ep cuts mixtures of experts by experts, and chain has none"):
        backends.schedule(chain(8, [64, 64]), target(), ep=True)
    with pytest.raises(backends.ScheduleError, match="--tp 3 does not divide 8 experts"):
        backends.schedule(moe_layer(64), target(), tp=3, ep=True)
    with pytest.raises(backends.ScheduleError, match="no tensor-parallel degree --chips 6 allows divides 8 experts"):
        backends.schedule(moe_layer(64), target(), chips=6, pp=1, ep=True)
    assert backends.schedule(moe_layer(64), target(), chips=4, ep=True).deployment == Deployment(4, 1, ep=True)
    with pytest.raises(backends.ScheduleError, match=r"whole experts on a chip \(tp divides 8\)"):
        backends.schedule(moe_layer(16, hidden=4096, inter=8192), target(), ep=True)  # one expert: 201 MB > 64 MB


# ------------------------------------------------------------------- pipeline
def test_a_pipeline_hop_carries_the_stage_boundary_value():
    """Two stages: the Relu output (64 x 4096 f16) crosses from chip 0 to chip 1 once."""
    m, k, n = 64, 1024, 4096
    s = backends.schedule(chain(m, [k, n, k]), target(), pp=2, tp=1)
    (hop,) = records(s, "Transfer")
    size = m * n * F16
    assert (hop.chip, hop.bytes["interconnect"]) == (0, size)
    assert hop.duration_s == pytest.approx(HOP + size / RING)
    (last,) = [o for o in s.ops if o.name == "matmul1"]
    assert last.chip == 1 and last.start_s >= hop.end_s


# -------------------------------------------------------------------- memory
def test_memory_per_chip_counts_weights_kv_activations_and_the_reserve():
    """h100-sxm keeps 10% of its 80 GB for the runtime. Attention over K and V inputs
    (1 x 128 x 512 f16 each: the pass's KV cache), then a 512 x 512 projection."""
    s_len, width = 128, 512
    graph = Graph("attend")
    for name in "QKV":
        graph.add_input(name, TensorType(DType.FLOAT16, (1, s_len, width)))
    graph.add_value("Wo", TensorType(DType.FLOAT16, (width, width)), const=True)
    graph.add_node("Attention", ["Q", "K", "V"], ["A"], {"q_num_heads": 8, "kv_num_heads": 8}, name="attention")
    graph.add_node("MatMul", ["A", "Wo"], ["Z"], name="o_proj")
    graph.outputs.append("Z")
    s = backends.schedule(infer_shapes(graph), target("h100-sxm"))
    (m,) = s.memory
    tensor = s_len * width * F16
    assert m.weights == width * width * F16
    assert m.kv == 2 * tensor
    assert m.activations == 2 * tensor  # Q and A while attention runs, A and Z while o_proj does
    assert m.reserve == pytest.approx(0.10 * 80e9)
    assert m.free == pytest.approx(80e9 - m.weights - m.kv - m.activations - m.reserve)
    assert s.peak_memory["hbm"] == m.weights + m.kv + m.activations
    piped = backends.schedule(infer_shapes(graph), target("h100-sxm"), tp=1, pp=2)
    assert [m.kv for m in piped.memory] == [2 * 2 * tensor, 0]  # a full pipeline: two passes' KV in flight
    assert [m.weights for m in piped.memory] == [0, width * width * F16]


def test_default_is_the_smallest_deployment_that_fits():
    """Three 4500 x 4500 f16 weights (40.5 MB each) on 64 MB chips: alone, two never share a
    chip (3 chips, pp 3); split two ways, all three halves fit one pair (2 chips)."""
    graph = chain(16, [4500] * 4)
    s = backends.schedule(graph, target())
    assert (s.deployment.tp, s.deployment.pp) == (2, 1)
    assert s.memory[0].weights == pytest.approx(3 * 4500 * 4500 * F16 / 2)
    pipeline = backends.schedule(graph, target(), tp=1)
    assert (pipeline.deployment.pp, [round(m.weights / 1e6, 2) for m in pipeline.memory]) == (3, [40.5] * 3)
    with pytest.raises(backends.ScheduleError,
                       match=r"chips 1: tp 1 x pp 1 puts weights 122 MB.*smallest deployment that fits is tp 2"):
        backends.schedule(graph, target(), chips=1)
    with pytest.raises(backends.ScheduleError, match="tp 1 x pp 2 puts weights 81 MB"):
        backends.schedule(graph, target(), tp=1, pp=2)
    with pytest.raises(backends.ScheduleError, match="--chips 3 is not --tp 2 x --pp 2"):
        backends.schedule(graph, target(), chips=3, tp=2, pp=2)
    with pytest.raises(backends.ScheduleError, match="--chips 6 is not a multiple of --tp 4"):
        backends.schedule(graph, target(), chips=6, tp=4)
    assert backends.schedule(graph, target(), chips=6, pp=2).deployment == Deployment(3, 2)


def test_an_op_too_large_for_any_cut_is_a_clear_error():
    """A 128 MB table of one column: the embedding cut splits its rows, but it takes 2+ chips of
    64 MB even then; with tp 1 it cannot fit at all."""
    graph = Graph("narrow_table")
    graph.add_input("ids", TensorType(DType.INT64, (1, 16)))
    graph.add_value("table", TensorType(DType.FLOAT16, (64_000_000, 1)), const=True)
    graph.add_node("Gather", ["table", "ids"], ["rows"], name="lookup")
    graph.outputs.append("rows")
    with pytest.raises(backends.ScheduleError, match="one op's share alone needs weights 128 MB"):
        backends.schedule(infer_shapes(graph), target(), tp=1)
    assert backends.schedule(infer_shapes(graph), target()).deployment.tp == 4


# --------------------------------------------------------------- steady state
def test_steady_state_of_a_two_stage_pipeline():
    """Two equal stages: a pass takes both stages and the hop, but the deployment kept full
    completes one per stage span; idle power is charged for that period only."""
    m, k = 256, 2048
    s = backends.schedule(chain(m, [k, k, k]), target(), pp=2, tp=1)
    spans = []
    for chip in (0, 1):
        mine = [o for o in s.ops if o.chip == chip and o.op != "Transfer"]
        spans.append(max(o.end_s for o in mine) - min(o.start_s for o in mine))
    period = max(spans)
    assert s.steady.period_s == pytest.approx(period) and period < s.latency_s / 1.5
    assert s.steady.throughput_per_s == pytest.approx(1 / period)
    dynamic = sum(o.flops / 2 * 1e-12 + o.bytes.get("sram", 0) * 10e-12 for o in s.ops)
    assert s.steady.joules_per_pass == pytest.approx(2 * 10 * period + dynamic)
    assert s.energy_j == pytest.approx(2 * 10 * s.latency_s + dynamic)
    assert s.steady.usd_per_pass == pytest.approx(2 * 0.30 / 3600 * period)


def test_one_stage_steady_state_is_the_single_pass_and_tokens_come_from_input_ids():
    graph = optimize(onnx_frontend.load(llama_onnx(TINY, batch=2, seq=8, external_data=None)))
    s = backends.schedule(graph, target("a100-80gb"))
    assert s.steady.period_s == pytest.approx(s.latency_s)
    assert s.steady.joules_per_pass == pytest.approx(s.energy_j)
    assert s.steady.usd_per_pass == pytest.approx(s.cost_usd)
    assert s.steady.tokens_per_pass == 16
    totals = report.to_dict(s)["totals"]
    assert totals["tokens_per_s"] == pytest.approx(16 / s.latency_s)
    assert totals["usd_per_token"] == pytest.approx(s.cost_usd / 16)


# ------------------------------------------------------------------------ CLI
def test_cli_takes_the_deployment_and_reports_memory_per_chip(tmp_path, capsys):
    path = tmp_path / "plan.json"
    code = main(["schedule", "llama-2-7b", "--input-shape", "input_ids=1x16", "-t", "h100-sxm", "--tp", "2",
                 "--pp", "2", "--limit", "1", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "deployment: 4 chip(s) = tp 2 x pp 2" in out and "memory per chip (hbm" in out
    data = json.loads(path.read_text())
    assert data["deployment"] == {"chips": 4, "tp": 2, "pp": 2, "ep": False}
    stages = data["memory_per_chip"]
    assert [m["chips"] for m in stages] == [[0, 1], [2, 3]]
    for m in stages:
        assert m["free"] == pytest.approx(m["capacity"] - m["weights"] - m["kv"] - m["activations"] - m["reserve"])
        assert m["reserve"] == pytest.approx(8e9)


def test_cli_cuts_mixtral_by_experts_and_holds_the_router_whole(tmp_path, capsys):
    """Mixtral-8x7B on 8 H100s: either cut holds one of each layer's 8 experts' bytes per chip;
    the experts cut keeps each layer's 4096 x 8 bf16 router whole where tensor parallelism
    holds an eighth, 32 layers x 7/8 x 64 kB more per chip."""
    plans = {}
    for flags in ([], ["--ep"]):
        path = tmp_path / f"plan{len(flags)}.json"
        assert main(["schedule", "mixtral-8x7b", "--input-shape", "input_ids=1x16", "-t", "h100-sxm", "--tp", "8",
                     "--limit", "1", "--json", str(path), *flags]) == 0
        plans[bool(flags)] = json.loads(path.read_text())
    assert "deployment: 8 chip(s) = tp 8 x pp 1, experts over each stage's tp chips (ep)" in capsys.readouterr().out
    assert plans[True]["deployment"] == {"chips": 8, "tp": 8, "pp": 1, "ep": True}
    weights = [plans[ep]["memory_per_chip"][0]["weights"] for ep in (False, True)]
    assert weights[1] - weights[0] == pytest.approx(32 * 7 / 8 * 4096 * 8 * F16)
    assert {o["op"] for o in plans[True]["ops"]} >= {"AllToAll"} and \
        not any(o["op"] == "AllReduce" and ".mlp." in o["name"] for o in plans[True]["ops"])


def test_cli_refuses_a_deployment_that_does_not_fit(capsys):
    code = main(["schedule", "llama-2-70b", "--input-shape", "input_ids=1x16", "-t", "h100-sxm", "--chips", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not fit h100-sxm chips with chips 1" in err and "smallest deployment that fits is tp 2 x pp 1" in err
