"""Each optimization pass on small hand-built graphs, with onnxruntime checking the numbers.

Every case builds an ONNX model with ``onnx.helper``, imports it, runs one pass, exports the
result and compares onnxruntime on the export with onnxruntime on the original.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ir
import ir.export
from conftest import ort_session
from frontends import onnx as onnx_frontend
from ir.passes import eliminate_common_subexpressions, eliminate_dead_code, fold_constants, infer_shapes, simplify

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    """inputs/outputs: (name, shape) pairs of float tensors; a shape may hold symbols."""
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, FLOAT, s) for n, s in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=ir.export.IR_VERSION)


def _run_pass(model: onnx.ModelProto, pass_fn, feeds: dict | None = None, **load) -> ir.Graph:
    """Import, run ``pass_fn`` (after shape inference), verify, and check the export against the original."""
    graph = pass_fn(infer_shapes(onnx_frontend.load(model, **load)))
    ir.verify(graph)
    exported = ir.to_onnx(graph)
    onnx.checker.check_model(exported)
    if feeds is None:
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
                 for i in model.graph.input}
    for expected, actual in zip(ort_session(model).run(None, feeds), ort_session(exported).run(None, feeds)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    assert [o.name for o in exported.graph.output] == [o.name for o in model.graph.output]
    return graph


def _op_types(graph: ir.Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# ------------------------------------------------------------------ fold_constants
def test_fold_shape_of_static_tensor():
    model = _model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["y", "s"], ["out"])],
                   [("x", [2, 3]), ("y", [3, 2])], [("out", [2, 3])])
    graph = _run_pass(model, fold_constants)
    assert _op_types(graph) == ["Reshape"]
    np.testing.assert_array_equal(graph.const_data(graph.nodes[0].inputs[1]), [2, 3])


def test_fold_static_dim_of_symbolic_tensor():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["cols"]),
             helper.make_node("Cast", ["cols"], ["f"], to=FLOAT),
             helper.make_node("Mul", ["x", "f"], ["out"])]
    model = _model(nodes, [("x", ["n", 4])], [("out", ["n", 4])], [("one", _i64(1))])
    graph = _run_pass(model, fold_constants, {"x": np.ones((3, 4), np.float32)})
    assert _op_types(graph) == ["Mul"]


def test_fold_symbolic_shape_arithmetic_keeps_what_needs_the_run_time_size():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["rows"]),
             helper.make_node("Range", ["zero", "rows", "one"], ["r"]),
             helper.make_node("Cast", ["r"], ["f"], to=FLOAT),
             helper.make_node("Unsqueeze", ["f", "one_axis"], ["column"]),
             helper.make_node("Add", ["x", "column"], ["out"])]
    model = _model(nodes, [("x", ["n", 4])], [("out", ["n", 4])],
                   [("zero", _i64(0)), ("one", _i64(1)), ("one_axis", _i64([1]))])
    graph = _run_pass(model, fold_constants, {"x": np.ones((3, 4), np.float32)})
    assert _op_types(graph) == ["Shape", "Gather", "Range", "Cast", "Unsqueeze", "Add"]
    assert graph.values["r"].type.shape == ("n",)


def test_fold_rewrites_symbolic_reshape_target_with_copied_dims():
    """[n, 4] computed from Shape(x) becomes the constant [0, 4]: 0 copies n at run time."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["cols"]),
             helper.make_node("Gather", ["s", "zero"], ["rows"]),
             helper.make_node("Concat", ["rows", "cols"], ["target"], axis=0),
             helper.make_node("Reshape", ["y", "target"], ["out"], allowzero=1)]
    model = _model(nodes, [("x", ["n", 4]), ("y", ["n", 2, 2])], [("out", ["n", 4])],
                   [("one", _i64([1])), ("zero", _i64([0]))])
    graph = _run_pass(model, fold_constants, {"x": np.ones((3, 4), np.float32),
                                              "y": np.arange(12, dtype=np.float32).reshape(3, 2, 2)})
    assert _op_types(graph) == ["Reshape"]
    assert graph.const_data(graph.nodes[0].inputs[1]).tolist() == [0, 4]
    assert graph.values["out"].type.shape == ("n", 4)


def test_fold_all_constant_ops_with_onnxruntime():
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("Mul", ["wt", "two"], ["w2"]),
             helper.make_node("MatMul", ["x", "w2"], ["out"])]
    w = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    model = _model(nodes, [("x", [2, 4])], [("out", [2, 5])], [("w", w), ("two", np.float32(2))])
    graph = _run_pass(model, fold_constants)
    assert _op_types(graph) == ["MatMul"]
    np.testing.assert_array_equal(graph.const_data(graph.nodes[0].inputs[1]), w.T * 2)


def test_fold_decides_comparisons_on_symbols():
    """A dim symbol is never -1: Equal(Shape(x), -1) folds although the shape is symbolic."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Equal", ["s", "minus_one"], ["is_free"]),
             helper.make_node("Cast", ["is_free"], ["f"], to=FLOAT),
             helper.make_node("Add", ["x", "f"], ["out"])]
    model = _model(nodes, [("x", ["n", 2])], [("out", ["n", 2])], [("minus_one", _i64(-1))])
    graph = _run_pass(model, fold_constants, {"x": np.ones((3, 2), np.float32)})
    assert _op_types(graph) == ["Add"]


@pytest.mark.parametrize("shape, folded", [([1024, 1024], False), ([2, 3], True)])
def test_fold_refuses_constant_of_shape_that_creates_a_huge_tensor(shape, folded):
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Add", ["x", "big"], ["out"])]
    model = _model(nodes, [("x", shape)], [("out", shape)], [("shape", _i64(shape))])
    graph = _run_pass(model, fold_constants)
    assert ("ConstantOfShape" not in _op_types(graph)) == folded


def test_fold_growth_is_bounded_along_a_chain():
    """Each Tile doubles a folded constant; the chain stops folding before it outgrows the bound."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["t0"],
                              value=numpy_helper.from_array(np.array([1.0], np.float32)))]
    nodes += [helper.make_node("Tile", [f"t{i}", "twice"], [f"t{i + 1}"]) for i in range(4)]
    nodes.append(helper.make_node("Add", ["x", "t4"], ["out"]))
    rows = 1 << 16  # t0 is 256 KiB, t4 is 4 MiB
    model = _model(nodes, [("x", [16 * rows, 1])], [("out", [16 * rows, 1])],
                   [("shape", _i64([rows, 1])), ("twice", _i64([2, 1]))])
    graph = _run_pass(model, fold_constants)
    folded = [v.data.nbytes for v in graph.initializers() if v.data is not None]
    assert max(folded) <= (1 << 20) + 16
    assert "Tile" in _op_types(graph)


# ------------------------------------------------------------------------ simplify
NO_OPS = {
    "reshape": ([helper.make_node("Reshape", ["x", "same"], ["y"])], [("same", _i64([2, 3]))]),
    "transpose": ([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1])], []),
    "cast": ([helper.make_node("Cast", ["x"], ["y"], to=FLOAT)], []),
    "expand": ([helper.make_node("Expand", ["x", "shape"], ["y"])], [("shape", _i64([1, 3]))]),
    "dropout": ([helper.make_node("Dropout", ["x"], ["y"])], []),
    "times-one": ([helper.make_node("Mul", ["x", "one"], ["y"])], [("one", np.ones(3, np.float32))]),
    "one-times": ([helper.make_node("Mul", ["one", "x"], ["y"])], [("one", np.float32(1))]),
    "plus-zero": ([helper.make_node("Add", ["x", "zero"], ["y"])], [("zero", np.float32(0))]),
    "identity": ([helper.make_node("Identity", ["x"], ["y"])], []),
    "transpose-twice": ([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                         helper.make_node("Transpose", ["t"], ["y"])], []),
}


@pytest.mark.parametrize("case", NO_OPS.values(), ids=NO_OPS.keys())
def test_simplify_removes_no_ops(case):
    nodes, initializers = case
    model = _model(nodes + [helper.make_node("Relu", ["y"], ["out"])], [("x", [2, 3])], [("out", [2, 3])],
                   initializers)
    graph = _run_pass(model, simplify)
    assert _op_types(graph) == ["Relu"]
    assert graph.nodes[0].inputs == ["x"]


def test_simplify_removes_no_op_before_graph_output_keeping_its_name():
    model = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["out"], to=FLOAT)],
                   [("x", [2, 3])], [("out", [2, 3])])
    graph = _run_pass(model, simplify)
    assert _op_types(graph) == ["Relu"] and graph.nodes[0].outputs == ["out"]


def test_simplify_keeps_no_op_between_graph_input_and_output():
    model = _model([helper.make_node("Identity", ["x"], ["out"])], [("x", [2, 3])], [("out", [2, 3])])
    graph = _run_pass(model, simplify)
    assert _op_types(graph) == ["Identity"]


def test_simplify_keeps_no_op_whose_source_is_also_read_elsewhere():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["out"]),
             helper.make_node("Sigmoid", ["r"], ["other"])]
    graph = _run_pass(_model(nodes, [("x", [2, 3])], [("out", [2, 3]), ("other", [2, 3])]), simplify)
    assert sorted(_op_types(graph)) == ["Identity", "Relu", "Sigmoid"]


def test_simplify_composes_transposes():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 2, 0]),
             helper.make_node("Transpose", ["t"], ["out"], perm=[0, 2, 1])]
    graph = _run_pass(_model(nodes, [("x", [2, 3, 4])], [("out", [3, 2, 4])]), simplify)
    assert _op_types(graph) == ["Transpose"] and graph.nodes[0].inputs == ["x"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_simplify_turns_flattened_gemm_into_matmul(trans_b):
    """The legacy exporter's Conv1D: flatten to 2-D, Gemm, unflatten."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"]),
             helper.make_node("Gemm", ["x2", "w", "b"], ["y2"], transB=trans_b),
             helper.make_node("Reshape", ["y2", "unflat"], ["out"])]
    w = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    model = _model(nodes, [("x", [2, 3, 4])], [("out", [2, 3, 5])],
                   [("flat", _i64([-1, 4])), ("unflat", _i64([2, 3, 5])), ("w", w),
                    ("b", rng.standard_normal(5).astype(np.float32))])
    graph = _run_pass(model, simplify)
    assert _op_types(graph) == ["MatMul", "Add"] and graph.nodes[0].inputs[0] == "x"


KEPT = {
    "reversing-slice": ([helper.make_node("Slice", ["x", "start", "end", "axes", "steps"], ["y"])],
                        [("start", _i64([-1])), ("end", _i64([-100])), ("axes", _i64([1])), ("steps", _i64([-1]))]),
    "broadcasting-times-one": ([helper.make_node("Mul", ["x", "one"], ["y"])],
                               [("one", np.ones((2, 2, 3), np.float32))]),
    "real-transpose": ([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                        helper.make_node("Transpose", ["t"], ["y"], perm=[1, 0]),
                        helper.make_node("Transpose", ["y"], ["z"], perm=[1, 0])], []),
    "training-dropout": ([helper.make_node("Dropout", ["x", "", "training"], ["y"])], []),
}


@pytest.mark.parametrize("case", KEPT.values(), ids=KEPT.keys())
def test_simplify_keeps_ops_that_do_something(case):
    nodes, initializers = case
    last = nodes[-1].output[0]
    inputs = [("x", [2, 3])] + ([("training", [])] if "training" in nodes[0].input else [])
    nodes = nodes + [helper.make_node("Relu", [last], ["out"])]
    model = _model(nodes, inputs, [("out", None)], initializers)
    if "training" in nodes[0].input:
        model.graph.input[1].type.tensor_type.elem_type = TensorProto.BOOL
        feeds = {"x": np.ones((2, 3), np.float32), "training": np.array(False)}
    else:
        feeds = None
    graph = _run_pass(model, simplify, feeds)
    assert len(graph) >= 2


# ----------------------------------------------------------------------------- CSE
def test_cse_merges_duplicate_ops_and_constants():
    nodes = [helper.make_node("Mul", ["x", "c1"], ["a"]), helper.make_node("Mul", ["x", "c2"], ["b"]),
             helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Add", ["ra", "rb"], ["out"])]
    c = np.arange(3, dtype=np.float32)
    graph = _run_pass(_model(nodes, [("x", [2, 3])], [("out", [2, 3])], [("c1", c), ("c2", c.copy())]),
                      lambda g: eliminate_dead_code(eliminate_common_subexpressions(g)))
    assert _op_types(graph) == ["Mul", "Relu", "Add"]
    assert len(graph.initializers()) == 1


def test_cse_keeps_ops_that_differ_and_random_draws():
    nodes = [helper.make_node("Softmax", ["x"], ["a"], axis=0), helper.make_node("Softmax", ["x"], ["b"], axis=1),
             helper.make_node("RandomUniformLike", ["x"], ["r1"], seed=1.0),
             helper.make_node("RandomUniformLike", ["x"], ["r2"], seed=1.0),
             helper.make_node("Sub", ["r1", "r2"], ["zero"]),
             helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Add", ["ab", "zero"], ["out"])]
    graph = eliminate_common_subexpressions(infer_shapes(onnx_frontend.load(
        _model(nodes, [("x", [2, 3])], [("out", [2, 3])]))))
    assert _op_types(graph).count("Softmax") == 2
    assert _op_types(graph).count("RandomUniformLike") == 2


# ----------------------------------------------------------------------------- DCE
def test_dce_removes_dead_ops_and_constants():
    nodes = [helper.make_node("Mul", ["x", "unused_weight"], ["dead"]), helper.make_node("Relu", ["dead"], ["dead2"]),
             helper.make_node("Sigmoid", ["x"], ["out"])]
    model = _model(nodes, [("x", [2, 3])], [("out", [2, 3])], [("unused_weight", np.ones(3, np.float32))])
    graph = _run_pass(model, eliminate_dead_code)
    assert _op_types(graph) == ["Sigmoid"]
    assert not graph.initializers()
    assert graph.inputs == ["x"]


# ------------------------------------------------------------------ pass contract
def test_an_optimized_graph_is_a_fixed_point_of_every_pass():
    """Each pass reports whether it changed the graph: none changes what the pipeline produced."""
    from conftest import MODELS
    from ir.passes import PASSES, optimize

    graph = optimize(onnx_frontend.load(MODELS / "llama_dynamo.onnx", input_shapes={"input_ids": (1, 8)}))
    text = ir.format_graph(graph)
    assert {name: p.run(graph).changed for name, p in PASSES.items()} == dict.fromkeys(PASSES, False)
    assert ir.format_graph(graph) == text


def test_fixed_point_runs_rounds_until_none_changes_and_cleans_up_between():
    from ir.passes import FixedPoint, graph_pass

    graph, log, budget = ir.Graph(), [], {"a": 2, "b": 1, "clean": 0}

    def logged(name):
        def run(g):
            log.append(name)
            budget[name] -= 1
            return budget[name] >= 0
        return graph_pass(name)(run)

    result = FixedPoint("group", [logged("a"), logged("b")], cleanup=[logged("clean")]).run(graph)
    assert result.changed and result.graph is graph
    assert log == ["a", "b", "clean", "a", "b", "clean", "a", "b"]
    assert not FixedPoint("idle", [logged("b")], cleanup=[logged("clean")]).run(graph).changed


def test_fusions_that_need_static_shapes_say_so():
    from conftest import MODELS
    from ir.passes import DEFAULT_PIPELINE, PASSES, PassManager

    def notes(**load):
        manager = PassManager([(n, PASSES[n]) for n in DEFAULT_PIPELINE])
        manager.run(onnx_frontend.load(MODELS / "llama_dynamo.onnx", **load))
        return manager.notes

    symbolic = notes()
    assert [n.split()[0] for n in symbolic] == ["fuse-rotary-embedding", "fuse-attention"]
    assert all("needs static shapes" in n and "--input-shape" in n for n in symbolic)
    assert notes(input_shapes={"input_ids": (1, 8)}) == []
