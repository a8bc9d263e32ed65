"""runtime.compile end to end on small graphs: numerics vs onnxruntime, fusion, dtypes, feeds, cache."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from conftest import ort_session
from ir.errors import ShapeError, XpucError
from runtime.memory_plan import plan_memory

RNG = np.random.default_rng(0)


def model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              [numpy_helper.from_array(a, n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def assert_matches_ort(m, feeds, **options):
    ours = runtime.compile(m, **options).run(feeds)
    for a, r in zip(ours, ort_session(m).run(None, feeds)):
        assert a.dtype == r.dtype and a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("m,k,n,batch", [(37, 50, 45, ()), (64, 64, 64, ()), (5, 3, 17, (2,)), (1, 40, 33, (3,))])
def test_matmul_bias_relu_fused(m, k, n, batch):
    f = TensorProto.FLOAT
    mdl = model([helper.make_node("MatMul", ["a", "b"], ["mm"]), helper.make_node("Add", ["mm", "c"], ["s"]),
                 helper.make_node("Relu", ["s"], ["y"])],
                [("a", f, (*batch, m, k)), ("b", f, (k, n)), ("c", f, (n,))], [("y", f, None)])
    feeds = {"a": RNG.standard_normal((*batch, m, k), np.float32), "b": RNG.standard_normal((k, n), np.float32),
             "c": RNG.standard_normal(n, np.float32)}
    assert_matches_ort(mdl, feeds)


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes_with_constant_weight(trans_a, trans_b):
    a = RNG.standard_normal((24, 19) if trans_a else (19, 24), np.float32)
    w = RNG.standard_normal((33, 24) if trans_b else (24, 33), np.float32)
    f = TensorProto.FLOAT
    mdl = model([helper.make_node("Gemm", ["a", "w", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)],
                [("a", f, a.shape)], [("y", f, None)], [("w", w), ("c", RNG.standard_normal((1, 33), np.float32))])
    assert_matches_ort(mdl, {"a": a})


def test_elementwise_chain_broadcast_and_negative_axes():
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Mul", ["t", "s"], ["m"]), helper.make_node("Tanh", ["m"], ["h"]),
             helper.make_node("Softmax", ["h"], ["p"], axis=-2),
             helper.make_node("ReduceSum", ["p", "axes"], ["y"], keepdims=0)]
    mdl = model(nodes, [("x", f, (2, 5, 7)), ("s", f, (1, 5))], [("y", f, None)],
                [("axes", np.array([-1], np.int64))])
    assert_matches_ort(mdl, {"x": RNG.standard_normal((2, 5, 7), np.float32), "s": RNG.standard_normal((1, 5), np.float32)})


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8, TensorProto.INT32,
                                TensorProto.INT64, TensorProto.BOOL])
def test_cast_round_trip(to):
    f = TensorProto.FLOAT
    mdl = model([helper.make_node("Cast", ["x"], ["c"], to=to), helper.make_node("Cast", ["c"], ["y"], to=f)],
                [("x", f, (3, 17))], [("y", f, None)])
    x = (RNG.standard_normal((3, 17)) * 50).astype(np.float32)
    assert_matches_ort(mdl, {"x": x})


def test_nan_and_inf_are_computed_through():
    f = TensorProto.FLOAT
    mdl = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])],
                [("x", f, (4,))], [("y", f, None)])
    y, = runtime.compile(mdl).run({"x": np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)})
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf and y[3] == 2.0


def test_feeds_are_validated_before_running():
    f = TensorProto.FLOAT
    compiled = runtime.compile(model([helper.make_node("Neg", ["x"], ["y"])], [("x", f, (2, 3))], [("y", f, None)]))
    good = np.arange(6, dtype=np.float32).reshape(2, 3)
    with pytest.raises(XpucError, match="missing"):
        compiled.run({})
    with pytest.raises(XpucError, match="unknown"):
        compiled.run({"x": good, "z": good})
    with pytest.raises(XpucError, match="dtype"):
        compiled.run({"x": good.astype(np.float64)})
    with pytest.raises(ShapeError, match="rank"):
        compiled.run({"x": good.reshape(6)})
    with pytest.raises(ShapeError, match="dimension 1"):
        compiled.run({"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(XpucError, match="numpy array"):
        compiled.run({"x": [[1.0, 2.0, 3.0]] * 2})
    strided = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2]
    readonly = good.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(compiled.run({"x": strided})[0], -strided)
    np.testing.assert_array_equal(compiled.run({"x": readonly})[0], -good)


def test_symbolic_dims_specialize_per_shape():
    f = TensorProto.FLOAT
    compiled = runtime.compile(model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
                                     [("x", f, ("batch", 8))], [("y", f, ("batch", 8))]))
    assert compiled.peak_bytes is None
    for batch in (1, 3, 1):
        x = RNG.standard_normal((batch, 8), np.float32)
        y, = compiled.run({"x": x})
        np.testing.assert_allclose(y, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-5)
    assert len(compiled._specs) == 2


def test_constructing_a_compiled_model_compiles_nothing():
    """compile() compiles a static model eagerly (and would cache it); the constructor only
    holds the graph, so building one (as a cache hit does) costs no compile and writes nothing."""
    f = TensorProto.FLOAT
    compiled = runtime.compile(model([helper.make_node("Relu", ["x"], ["y"])], [("x", f, (2, 8))], [("y", f, (2, 8))]),
                               cache=False)
    assert compiled.peak_bytes is not None
    fresh = runtime.CompiledModel(compiled.graph, compiled.options)
    assert fresh.peak_bytes is None and fresh.static_shapes == {"x": (2, 8)}
    x = RNG.standard_normal((2, 8), np.float32)
    np.testing.assert_array_equal(fresh.run({"x": x})[0], np.maximum(x, 0))


def test_disk_cache_and_llvm_dump(tmp_path):
    f = TensorProto.FLOAT
    mdl = model([helper.make_node("Sigmoid", ["x"], ["y"])], [("x", f, (4, 4))], [("y", f, None)])
    first = runtime.compile(mdl, dump_llvm_dir=tmp_path / "ll")
    second = runtime.compile(mdl)
    assert not next(iter(first._specs.values())).library.cached
    assert next(iter(second._specs.values())).library.cached
    dumped = list((tmp_path / "ll").glob("*.ll"))
    assert dumped and "define void" in dumped[0].read_text()


def test_memory_plan_reuses_buffers():
    plan = plan_memory({"a": 100, "b": 100, "c": 100}, {"a": (0, 1), "b": (1, 2), "c": (2, 3)})
    assert plan.offsets["a"] == plan.offsets["c"] != plan.offsets["b"]
    assert plan.peak_bytes == 256 and plan.total_bytes == 384


def test_bad_options_and_targets_are_clear_errors():
    f = TensorProto.FLOAT
    mdl = model([helper.make_node("Neg", ["x"], ["y"])], [("x", f, (2,))], [("y", f, None)])
    with pytest.raises(XpucError, match="unknown target"):
        runtime.compile(mdl, "tpu")
    with pytest.raises(XpucError, match="unknown compile option"):
        runtime.compile(mdl, tile=3)
