"""Products as inference runs them: a layer over a batch is one product, decode's one-row
products take each family's small-product kernels, a Gather reads the rows it gathers.
Every expectation is worked out by hand next to its assertion."""

import functools

import pytest

import backends
from backends.calibration import matmul_graph
from backends.families import gpu
from backends.families.systolic import gemm_cycles
from backends.tiles import Tiling
from backends.work import graph_work
from frontends import onnx as onnx_frontend
from frontends.synthetic import LLAMA3_70B, llama_onnx
from ir import ops
from ir.dtypes import DType
from ir.graph import Graph
from ir.ops import Gemm
from ir.passes import optimize
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

F16 = DType.FLOAT16


@functools.lru_cache(maxsize=None)
def target(name: str) -> backends.Target:
    return backends.load_target(name)


def product(x_shape, w_shape, weight: bool = True) -> Graph:
    graph = Graph("product")
    graph.add_input("x", TensorType(F16, x_shape))
    if weight:
        graph.add_value("w", TensorType(F16, w_shape), const=True)
    else:
        graph.add_input("w", TensorType(F16, w_shape))
    graph.add_node("MatMul", ["x", "w"], ["y"], name="matmul")
    graph.outputs.append("y")
    return infer_shapes(graph)


# ------------------------------------------------------------------ batching folds into M
def test_a_layer_over_a_batch_is_one_product():
    """64 sequences of one token through a 8192 x 1024 weight: one 64-row product, B read once."""
    graph = product((64, 1, 8192), (8192, 1024))
    (c,) = ops.contractions(graph, graph.nodes[0])
    assert c.gemm == Gemm(1, 64, 1024, 8192)
    assert (c.weight.batch_shape, c.weight.row, c.weight.col) == ((), 1024, 1)


def test_products_with_their_own_b_per_batch_entry_stay_batched():
    """Attention's shape: 64 (1 x 128) by (128 x 1) products, each with its own B."""
    graph = product((64, 1, 128), (64, 128, 1), weight=False)
    (c,) = ops.contractions(graph, graph.nodes[0])
    assert c.gemm == Gemm(64, 1, 1, 128)
    assert c.weight.batch_strides == (128,)


@pytest.mark.parametrize("preset", ["h100-sxm", "tpu-v5e", "groq-lpu"])
def test_batch_of_sequences_costs_what_one_longer_sequence_costs(preset):
    by_batch = backends.schedule(product((64, 1, 8192), (8192, 1024)), target(preset)).ops[0]
    by_length = backends.schedule(product((1, 64, 8192), (8192, 1024)), target(preset)).ops[0]
    assert (by_batch.duration_s, by_batch.bytes) == (by_length.duration_s, by_length.bytes)


# ---------------------------------------------------------------- gather: the rows it reads
def test_an_embedding_gather_reads_the_rows_it_gathers():
    """Four ids into a 128256 x 8192 f16 table on h100: 4 x 8192 x 2 B of rows read, as many
    written, 4 x 8 B of ids; the whole 2.1 GB table stays resident. 131,104 B / (3.35e12 B/s
    x 0.80) = 48.9 ns, far under the 4 us launch."""
    graph = Graph("embedding")
    graph.add_input("ids", TensorType(DType.INT64, (1, 4)))
    graph.add_value("table", TensorType(F16, (128256, 8192)), const=True)
    graph.add_node("Gather", ["table", "ids"], ["rows"], name="embed")
    graph.outputs.append("rows")
    t = target("h100-sxm")
    s = backends.schedule(infer_shapes(graph), t)
    (op,) = s.ops
    moved = 4 * 8192 * 2 + 4 * 8192 * 2 + 4 * 8
    assert op.bytes["hbm"] == moved == 131_104
    assert op.duration_s == pytest.approx(4e-6 + moved / (3.35e12 * 0.80))
    assert s.peak_memory["hbm"] >= 128256 * 8192 * 2


# ------------------------------------------------------------------- GPU: small products
def test_gpu_decode_product_shrinks_its_tile_and_splits_k():
    """k_proj of a 70B decode step (1 x 8192 by 8192 x 1024, f16) on a100-80gb, by hand:
    tile 8 x 128 (A and B swapped, so the one row rides the m16n8k16 instruction's n8 side,
    not padded to 128 or 16), 8 tiles across N for 108 SMs: K (256 steps of 32) splits into
    108 // 8 = 13 slices of 20 steps = 640, so 8 x 13 = 104 tiles, one wave, each
    2 x 8 x 128 x 640 FLOP at 1.41e9 Hz x 2048 FLOP/cycle x 0.85 = 0.53 us. HBM: 16,384 + 16,777,216 + 2,048 B / (2.039e12 x 0.85 B/s)
    = 9.69 us: memory-bound, plus the 4 us launch."""
    t = target("a100-80gb")
    g = Gemm(1, 1, 1024, 8192)
    assert gpu.tiling(g, t.engines["tensor"]) == Tiling(8, 128, 640, scaled=2 * 8 * 128 * 640)
    (op,) = backends.schedule(matmul_graph(1, 1024, 8192), t).ops
    hbm = 16_384 + 16_777_216 + 2_048
    assert op.bytes["hbm"] == hbm
    assert op.bytes["l2"] == 2 * (8192 * 8 + 8192 * 1024 + 1024 * 13)  # A per column of tiles, B once, C per slice
    assert op.bound == "memory"
    assert op.duration_s == pytest.approx(4e-6 + hbm / (2.039e12 * 0.85))
    assert 2 * 8 * 128 * 640 / (1.41e9 * 2048 * 0.85) < hbm / (2.039e12 * 0.85)


def test_hopper_tiles_shrink_to_a_warpgroup_or_swap():
    """On h100 wgmma's least M is 64 rows, its least N 8: one row swaps A and B to ride N (8 x
    128 tiles), 8 tiles across N, 132 // 8 = 16 slices of 256 / 16 = 16 steps of 32. 64 rows
    pad nothing either way, and the tie keeps A and B in place (64 x 128 tiles)."""
    engine = target("h100-sxm").engines["tensor"]
    assert gpu.tiling(Gemm(1, 1, 1024, 8192), engine) == Tiling(8, 128, 512, scaled=2 * 8 * 128 * 512)
    assert gpu.tiling(Gemm(1, 64, 1024, 8192), engine).tm == 64


def test_gpu_products_with_enough_tiles_are_not_split():
    """A 28672-column decode product has 224 tiles on a100's 108 SMs: no split; a 4096-row
    prefill keeps the full 128 x 128 tile."""
    engine = target("a100-80gb").engines["tensor"]
    assert gpu.tiling(Gemm(1, 1, 28672, 8192), engine) == Tiling(8, 128, None, scaled=2 * 8 * 128 * 8192)
    assert gpu.tiling(Gemm(1, 4096, 28672, 8192), engine) == Tiling(128, 128, None, scaled=2 * 128 * 128 * 8192)


# ------------------------------------------------------------ systolic: loading weights
def test_weight_stationary_decode_is_bound_by_loading_weights():
    """tpu-v5e's MXUs shift the next 128 x 128 weight fold in (128 cycles) while the current
    one streams. One row (decode) through 8192 x 1024: 64 x 8 = 512 folds on 4 MXUs = 128
    rounds of max(1, 128) cycles, plus the first stream and the fill/drain once: 1 + 254, less
    the one-cycle overlap: 128 x 128 + 255 - 1. A 4096-row stream through one fold: 4096
    cycles, the first load (128) and fill/drain (254) exposed once."""
    mxu = target("tpu-v5e").engines["mxu"]
    assert gemm_cycles(Gemm(1, 1, 1024, 8192), mxu) == 128 * 128 + 1 + 254 - 1
    assert gemm_cycles(Gemm(1, 4096, 128, 128), mxu) == 4096 + 128 + 254 - 1


def test_weight_stationary_decode_on_a_tpu_is_memory_bound():
    """The same product scheduled on tpu-v5e: 16,638 cycles / 1.5e9 Hz = 11.1 us of array time
    against 16,795,648 B / 819e9 B/s = 20.5 us of HBM, after the HBM latency (0.5 us) and the
    first fold's operands ((1 x 8192 + 8192 x 128) x 2 B / 819e9 B/s = 2.58 us)."""
    t = target("tpu-v5e")
    (op,) = backends.schedule(matmul_graph(1, 1024, 8192), t).ops
    hbm = 16_384 + 16_777_216 + 2_048
    first = (8192 + 8192 * 128) * 2
    assert op.bound == "memory"
    assert op.duration_s == pytest.approx(500e-9 + first / 819e9 + hbm / 819e9)
    assert (128 * 128 + 254) / 1.5e9 < hbm / 819e9


# --------------------------------------------------- a 70B-shaped model, batch and decode
@functools.lru_cache(maxsize=None)
def llama(batch: int, seq: int) -> Graph:
    """Two 70B-shaped layers, the 128256-word embedding and head (f16)."""
    config = LLAMA3_70B.with_layers(2)
    return optimize(onnx_frontend.load(llama_onnx(config, batch=batch, seq=seq), weights=False))


@pytest.mark.parametrize("preset", backends.list_targets())
def test_a_batch_of_64_tokens_costs_about_one_64_token_sequence(preset):
    by_batch = backends.schedule(llama(64, 1), target(preset)).latency_s
    by_length = backends.schedule(llama(1, 64), target(preset)).latency_s
    assert 1 / 1.5 < by_batch / by_length < 1.5


MEMORY_BOUND = [p for p in backends.list_targets() if target(p).family in ("gpu", "systolic")]


@pytest.mark.parametrize("preset", MEMORY_BOUND)
def test_decode_streams_weights_near_the_memory_floor(preset):
    """Batch-1 decode reads every weight once: the floor is the weight bytes it moves over the
    outer memory's effective bandwidth (chips in a pipeline stream theirs one after another).
    Launches, norms and the first fold's exposed load may add to it, not 30%."""
    t, graph = target(preset), llama(1, 1)
    s = backends.schedule(graph, t)
    streamed = sum(w.weight_bytes for w in graph_work(graph))
    floor = streamed / t.outer.effective_bandwidth
    assert floor <= s.latency_s <= 1.3 * floor
    bounds = {o.bound for o in s.ops if o.op == "MatMul"}
    if preset == "systolic-generic":
        # One output-stationary 128 x 128 array takes in 128 weights a cycle: 128 x 1e9 Hz x 2 B
        # = 256 GB/s, exactly its HBM's bandwidth, so each fold's fill and drain tips it over.
        array = t.engines["array"]
        assert array.count * array.clock_hz * array.array[1] * 2 == t.outer.effective_bandwidth
        assert bounds == {"compute"}
    else:  # a small product on h200 streams its weights in less than the 4 us launch
        assert "memory" in bounds and bounds <= {"memory", "launch"}
