"""Cost counted by generated code: ``runtime.compile(model, target=T)`` runs on the host while
counting kernels walk T's tiles, and ``last_cost`` is the schedule those counts give.

On dense weights it must be the analytic schedule, record for record; on an engine that
skips zero weights it must drop by exactly the skipped MACs while the outputs (in the host's
numerics) stay those of the plain CPU compile (and onnxruntime's)."""

import os
import tomllib

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import backends
import runtime
from backends.target import TARGETS_DIR, TargetSpecError, parse_target
from frontends import onnx as onnx_frontend
from ir.errors import XpucError
from ir.passes import optimize

from conftest import LIGHT_CNNS, MODELS, fixture_feeds, ort_session, random_feeds

LLAMA, BITNET = MODELS / "llama_dynamo.onnx", MODELS / "bitnet_dynamo.onnx"
SEQ = {"input_ids": (1, 16)}
SQUEEZENET = next(p for p in LIGHT_CNNS if "squeezenet" in p)
ONE_PER_FAMILY = ["systolic-generic", "tpu-v4", "gpu-generic", "dataflow-generic", "groq-lpu"]


def variant(preset: str, **engine_keys) -> backends.Target:
    """A preset whose matrix engine has extra keys (zero_skipping, another dataflow)."""
    data = tomllib.loads((TARGETS_DIR / f"{preset}.toml").read_text())
    next(e for e in data["engines"].values() if e["role"] == "matrix").update(engine_keys)
    return parse_target(data, f"{preset}+{engine_keys}")


def optimized(model, input_shapes=None):
    return optimize(onnx_frontend.load(model, input_shapes=input_shapes))


def emulate(model, target, feeds, input_shapes=None):
    compiled = runtime.compile(model, target=target, input_shapes=input_shapes, host_numerics=True)
    outputs = compiled.run(feeds)
    return outputs, compiled.last_cost


def assert_same_schedule(emulated, analytic):
    assert emulated.ops == analytic.ops
    assert (emulated.latency_s, emulated.energy_j, emulated.cost_usd, emulated.chips) == \
        (analytic.latency_s, analytic.energy_j, analytic.cost_usd, analytic.chips)
    assert emulated.utilization == analytic.utilization and emulated.peak_memory == analytic.peak_memory


# ------------------------------------------------------------------------- dense: equal
@pytest.mark.parametrize("preset", backends.list_targets())
def test_llama_emulated_cost_equals_schedule(preset):
    target = backends.load_target(preset)
    _, emulated = emulate(LLAMA, target, fixture_feeds(LLAMA, 1, 16), SEQ)
    assert_same_schedule(emulated, backends.schedule(optimized(LLAMA, SEQ), target))


@pytest.mark.parametrize("preset", ONE_PER_FAMILY)
def test_cnn_emulated_cost_equals_schedule(preset):
    target = backends.load_target(preset)
    _, emulated = emulate(SQUEEZENET, target, random_feeds(onnx_frontend.load(SQUEEZENET)))
    assert_same_schedule(emulated, backends.schedule(optimized(SQUEEZENET), target))


def test_zero_skipping_on_dense_weights_counts_every_mac():
    """llama's weights have no zeros: reading them tile by tile must give the dense counts."""
    target = variant("systolic-generic", zero_skipping=True)
    _, emulated = emulate(LLAMA, target, fixture_feeds(LLAMA, 1, 16), SEQ)
    assert_same_schedule(emulated, backends.schedule(optimized(LLAMA, SEQ), target))


# ------------------------------------------------------------- one sparse MatMul, all tilings
M, K, N = 1000, 900, 1100


def sparse_matmul(dtype=np.float32, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((K, N)) * (rng.random((K, N)) < 0.5)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "sparse_matmul",
                              [helper.make_tensor_value_info("X", elem, [M, K])],
                              [helper.make_tensor_value_info("Y", elem, [M, N])], [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), w


MATRIX_TARGETS = {
    "systolic-os": (lambda **k: variant("systolic-generic", **k), np.float32),
    "systolic-ws": (lambda **k: variant("systolic-generic", dataflow="ws", **k), np.float32),
    "systolic-is": (lambda **k: variant("systolic-generic", dataflow="is", **k), np.float32),
    "gpu": (lambda **k: variant("gpu-generic", **k), np.float16),
    "dataflow": (lambda **k: variant("dataflow-generic", **k), np.float32),
}


@pytest.mark.parametrize("kind", MATRIX_TARGETS)
def test_zero_skipping_counts_only_nonzero_weights(kind):
    make, dtype = MATRIX_TARGETS[kind]
    model, w = sparse_matmul(dtype)
    x = np.random.default_rng(1).standard_normal((M, K)).astype(dtype)
    dense_out, dense = emulate(model, make(), {"X": x})
    sparse_out, sparse = emulate(model, make(zero_skipping=True), {"X": x})
    assert_same_schedule(dense, backends.schedule(optimized(model), make()))
    np.testing.assert_array_equal(sparse_out[0], dense_out[0])
    np.testing.assert_allclose(sparse_out[0], ort_session(model).run(None, {"X": x})[0],
                               rtol=1e-2 if dtype == np.float16 else 1e-4, atol=1e-2 if dtype == np.float16 else 1e-4)
    (d,), (s,) = dense.ops, sparse.ops
    assert s.engine == d.engine and make().engines[s.engine].role == "matrix"
    assert s.flops == d.flops - 2 * M * int((w == 0).sum())
    assert s.duration_s < d.duration_s and sparse.latency_s < dense.latency_s and sparse.energy_j < dense.energy_j


def test_bitnet_ternary_weights_cost_less_with_zero_skipping():
    target = variant("systolic-generic", zero_skipping=True)
    feeds = fixture_feeds(BITNET, 1, 16)
    outputs, emulated = emulate(BITNET, target, feeds, SEQ)
    graph = optimized(BITNET, SEQ)
    analytic = backends.schedule(graph, target)
    skipped = 0
    for node in graph.nodes:
        w = graph.const_data(node.inputs[1]) if node.op_type in ("MatMul", "FusedMatMul") else None
        if w is not None:
            rows = int(np.prod(graph.type_of(node.inputs[0]).shape[:-1]))
            skipped += 2 * rows * int((w == 0).sum())
    assert skipped > 0
    assert sum(o.flops for o in emulated.ops) == sum(o.flops for o in analytic.ops) - skipped
    assert emulated.latency_s < analytic.latency_s and emulated.energy_j < analytic.energy_j
    cpu = runtime.compile(BITNET, input_shapes=SEQ).run(feeds)
    for got, want in zip(outputs, cpu):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(outputs, ort_session(BITNET).run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- spec and API edges
def test_zero_skipping_is_validated():
    with pytest.raises(TargetSpecError, match="zero_skipping: expected true or false"):
        variant("systolic-generic", zero_skipping="yes")
    data = tomllib.loads((TARGETS_DIR / "systolic-generic.toml").read_text())
    data["engines"]["vector"]["zero_skipping"] = True
    with pytest.raises(TargetSpecError, match="only a matrix engine"):
        parse_target(data)


def test_cpu_compile_counts_nothing():
    model, _ = sparse_matmul()
    compiled = runtime.compile(model)
    compiled.run({"X": np.ones((M, K), np.float32)})
    assert compiled.last_cost is None


def test_unknown_target_is_one_clear_error():
    model, _ = sparse_matmul()
    with pytest.raises(XpucError, match="unknown target 'tpu-v9'"):
        runtime.compile(model, target="tpu-v9")
    with pytest.raises(XpucError, match="does not exist"):
        runtime.compile(model, target=os.path.join("no", "such.toml"))
    with pytest.raises(XpucError, match="target must be"):
        runtime.compile(model, target=3)
