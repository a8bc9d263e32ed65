"""Products as inference runs them: a layer over a batch is one product, decode's one-row
products take each family's small-product kernels, a Gather reads the rows it gathers.
Every expectation is worked out by hand next to its assertion."""

import functools

import pytest

import backends
from ir import ops
from ir.dtypes import DType
from ir.graph import Graph
from ir.ops import Gemm
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
    x 0.90) = 43.5 ns, far under the 4 us launch."""
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
    assert op.duration_s == pytest.approx(4e-6 + moved / (3.35e12 * 0.90))
    assert s.peak_memory["hbm"] >= 128256 * 8192 * 2
