"""Concat and Split as parallel copy kernels: every axis, inlined producers, and a parallel
extent equal to the rows they are cut into (hand-computed), checked against numpy; and the
executor keeping a packed weight's panels only, never its original beside them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime

RNG = np.random.default_rng(3)


def _model(nodes, inputs, outputs, initializers=()):
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, f, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, f, None) for n in outputs], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _kernel(compiled, op_type):
    return next(k for k in compiled._last.lowered.kernels if op_type in k.name)


@pytest.mark.parametrize("axis, rows", [(0, 11), (1, 4 * 11), (2, 4 * 11)])
def test_concat_matches_numpy_and_runs_in_parallel_rows(axis, rows):
    """rows: the dims up to and including the axis (axis 0: 3 + 6 + 2; axis 1: 4 x 11), or the
    dims before it when the axis is the last one (4 x 11)."""
    shapes = [tuple(size if d == axis else (4, 11, 5)[d] for d in range(3)) for size in (3, 6, 2)]
    xs = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    nodes = [helper.make_node("Relu", ["x0"], ["r0"]),  # a producer the kernel computes inline
             helper.make_node("Concat", ["r0", "x1", "x2"], ["y"], axis=axis)]
    compiled = runtime.compile(_model(nodes, [(f"x{i}", s) for i, s in enumerate(shapes)], ["y"]))
    y, = compiled.run({f"x{i}": x for i, x in enumerate(xs)})
    np.testing.assert_array_equal(y, np.concatenate([np.maximum(xs[0], 0), xs[1], xs[2]], axis=axis))
    assert _kernel(compiled, "Concat").extent == rows


@pytest.mark.parametrize("axis, rows", [(0, 12), (1, 4 * 11), (2, 4 * 11)])
def test_split_matches_numpy_and_runs_in_parallel_rows(axis, rows):
    shape = {0: [12, 4, 5], 1: [4, 11, 5], 2: [4, 11, 12]}[axis]
    sizes = [3, 6, shape[axis] - 9]
    x = RNG.standard_normal(shape).astype(np.float32)
    split = numpy_helper.from_array(np.array(sizes, np.int64), "sizes")
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=axis),
             helper.make_node("Neg", ["b"], ["nb"])]
    compiled = runtime.compile(_model(nodes, [("x", shape)], ["a", "nb", "c"], [split]))
    a, nb, c = compiled.run({"x": x})
    want = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    for got, expected in zip((a, -nb, c), want):
        np.testing.assert_array_equal(got, expected)
    assert _kernel(compiled, "Split").extent == rows


def test_packed_weight_is_held_once():
    w = RNG.standard_normal((64, 96)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (32, 64))], ["y"],
                   [numpy_helper.from_array(w, "w")])
    compiled = runtime.compile(model, cache=False)
    executor = compiled._last
    held = [a for a in executor.constants.values() if a.size >= w.size]
    assert len(held) == 1 and held[0].ndim == 3 and held[0].shape[1] == 64  # (N / nr, K, nr) panels
    assert "w" not in executor.constants
    assert executor.graph.values["w"].data is None and compiled.graph.values["w"].data is None
    x = RNG.standard_normal((32, 64)).astype(np.float32)
    np.testing.assert_allclose(compiled.run({"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)
