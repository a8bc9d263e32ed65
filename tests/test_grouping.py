"""One kernel grouping for both sides: the GPU schedule launches exactly the kernels CPU code
generation emits, and what the cost model treats as free is exactly what emits no kernel."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import backends
import runtime
from backends.codegen import lower, rules
from backends.grouping import ABSORBS, INLINED, group_kernels
from conftest import LIGHT_CNNS, MODELS, ort_session
from frontends import onnx as onnx_frontend
from ir import ops
from ir.ops import Pattern
from ir.passes import optimize

FIXTURES = sorted(MODELS.glob("*.onnx"))
CNNS = [p for p in LIGHT_CNNS if "squeezenet" in p or "inception_v1" in p]  # inception_v1 builds weights at load


@functools.lru_cache(maxsize=None)
def optimized(path):
    return optimize(onnx_frontend.load(path, input_shapes={"input_ids": (1, 16)} if path in FIXTURES else None))


def cpu_kernels(graph) -> list[frozenset[str]]:
    """The ops of each kernel the host code runs per inference (no counting kernels: no target)."""
    return [frozenset(k.ops) for k in lower(graph).kernels if not k.once]


def scheduled_kernels(schedule) -> list[frozenset[str]]:
    kernels: dict[int, set[str]] = {}
    for o in schedule.ops:
        kernels.setdefault(o.kernel, set()).add(o.name)
    return [frozenset(v) for v in kernels.values()]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_gpu_schedule_launches_the_kernels_code_generation_emits(path):
    graph, target = optimized(path), backends.load_target("h100-sxm")
    schedule = backends.schedule(graph, target)
    emitted = cpu_kernels(graph)
    assert schedule.kernels == len(emitted) > 0
    assert sorted(scheduled_kernels(schedule), key=sorted) == sorted(emitted, key=sorted)
    assert schedule.latency_s >= schedule.kernels * target.launch_overhead_s  # one stream, one launch each


@pytest.mark.parametrize("path", FIXTURES[:3], ids=lambda p: p.stem)
def test_a_cuda_graph_pays_one_launch_instead_of_one_per_kernel(path):
    """One GPU runs its kernels one after another on its stream, so the latency is the sum of
    the records: on a stream each kernel adds its 4 us launch, as one CUDA Graph only the
    first does: the two differ by (kernels - 1) x 4 us exactly."""
    graph, target = optimized(path), backends.load_target("h100-sxm")
    stream = backends.schedule(graph, target)
    graph_launch = backends.schedule(graph, dataclasses.replace(target, launch="graph"))
    assert stream.kernels == graph_launch.kernels > 1 and stream.chips == 1
    assert stream.latency_s - graph_launch.latency_s == pytest.approx((stream.kernels - 1) * 4e-6, rel=1e-9)
    assert graph_launch.ops[0].duration_s >= target.graph_launch_overhead_s == 4e-6


@pytest.mark.parametrize("path", FIXTURES + CNNS, ids=lambda p: str(p).rsplit("/", 1)[-1])
def test_what_the_cost_model_treats_as_free_emits_no_kernel(path):
    graph = optimized(path)
    costed = {o.name for o in backends.schedule(graph, backends.load_target("h100-sxm")).ops}
    in_kernels = set().union(*cpu_kernels(graph))
    assert costed == in_kernels
    free = {n.name for n in graph.nodes} - in_kernels
    assert all(ops.lookup(n.op_type, n.domain).pattern in (Pattern.VIEW, Pattern.SHAPE)
               or group_kernels(graph).of[n.name].once for n in graph.nodes if n.name in free)


def test_inception_builds_its_weights_once_not_per_run():
    """ConstantOfShape weights (too big for the folding pass) are folded kernels: free per run."""
    graph = optimized(next(p for p in CNNS if "inception_v1" in p))
    folded = [k for k in lower(graph).kernels if k.once]
    assert folded and all(graph.node(op).op_type == "ConstantOfShape" for k in folded for op in k.ops)


def test_every_op_a_reader_may_compute_inline_has_a_pointwise_rule():
    """The grouping inlines elementwise, broadcast and injective ops into readers that absorb
    producers; code generation must then be able to evaluate each at one index."""
    for domain, op_type in ops.supported_ops():
        key, pattern = rules.key(op_type, domain), ops.lookup(op_type, domain).pattern
        if key in rules.ANCHORS and pattern in INLINED:
            assert key in rules.POINTWISE, key
        if key in rules.ANCHORS or key in rules.POINTWISE:
            assert pattern in (*ABSORBS, Pattern.CONTRACTION, Pattern.OPAQUE), key


def _model(nodes, inputs, outputs, initializers=()):
    return helper.make_model(
        helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(v, k) for k, v in initializers]),
        opset_imports=[helper.make_opsetid("", 21)])


def test_concat_computed_inside_its_reader_matches_onnxruntime():
    """Concat(Neg(a), b, Exp(c)) read only by a Relu: one kernel, each element from one input."""
    model = _model([helper.make_node("Neg", ["a"], ["na"]), helper.make_node("Exp", ["c"], ["ec"]),
                    helper.make_node("Concat", ["na", "b", "ec"], ["cat"], axis=1),
                    helper.make_node("Relu", ["cat"], ["y"])],
                   [("a", [2, 3, 4]), ("b", [2, 1, 4]), ("c", [2, 5, 4])], [("y", [2, 9, 4])])
    graph = onnx_frontend.load(model)
    assert len(cpu_kernels(optimize(graph))) == 1
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in (("a", (2, 3, 4)), ("b", (2, 1, 4)),
                                                                        ("c", (2, 5, 4)))}
    np.testing.assert_allclose(runtime.compile(model).run(feeds)[0], ort_session(model).run(None, feeds)[0],
                               rtol=1e-6, atol=1e-6)


def test_an_epilogue_waits_for_inputs_computed_after_its_root():
    """SwiGLU(gate, up) reads two MatMuls: it rides on the later one (its other input is ready
    before that root), so the kernels run in an order where every input exists."""
    w = np.ones((4, 4), np.float32)
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [helper.make_node("MatMul", ["x", "wg"], ["g"]), helper.make_node("MatMul", ["x", "wu"], ["u"]),
         helper.make_node("Sigmoid", ["g"], ["s"]), helper.make_node("Mul", ["g", "s"], ["sg"]),
         helper.make_node("Mul", ["sg", "u"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "wg"), numpy_helper.from_array(2 * w, "wu")]),
        opset_imports=[helper.make_opsetid("", 21)])
    graph = optimize(onnx_frontend.load(model))
    grouping = group_kernels(graph)
    swiglu = next(n for n in graph.nodes if n.op_type == "SwiGLU")
    assert grouping.of[swiglu.name].root.inputs[1] == "wu"
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    np.testing.assert_allclose(runtime.compile(model).run({"x": x})[0], ort_session(model).run(None, {"x": x})[0],
                               rtol=1e-5)
