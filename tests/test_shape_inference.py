"""Shape inference checked against onnxruntime: whole models, then one op rule at a time.

onnxruntime is the oracle: on every fixture model and light CNN, the shape we infer for
every intermediate value is the shape onnxruntime produces, both with bound input shapes and
(after substituting the sizes) with symbolic ``batch``/``seq`` dims. The single-op cases run
each op in onnxruntime too, so no expected shape is written by hand except where dims are
symbolic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import ir
import ir.export
from conftest import (FIXTURE_MODELS, LIGHT_CNNS, assert_shapes_match_ort, fixture_feeds, ort_intermediate_shapes,
                      ort_session, random_feeds)
from frontends import onnx as onnx_frontend
from ir import symbolic
from ir.dtypes import DType
from ir.passes import infer_shapes
from ir.types import TensorType

MODELS = [str(p) for p in FIXTURE_MODELS] + LIGHT_CNNS
MODEL_IDS = [p.stem for p in FIXTURE_MODELS] + [p.split("/")[-1][6:-5] for p in LIGHT_CNNS]


def _canonical_model(path: str) -> onnx.ModelProto:
    """The model as the frontend sees it: upgraded to the IR's opset (node output names are kept)."""
    model = onnx.load(path)
    if model.opset_import[0].version < onnx_frontend.CANONICAL_OPSET:
        model = onnx.version_converter.convert_version(model, onnx_frontend.CANONICAL_OPSET)
    return model


def _bound(path: str, batch: int = 2, seq: int = 16):
    """The graph loaded with bound input shapes, and matching feeds."""
    if path in LIGHT_CNNS:
        graph = onnx_frontend.load(path)
        return graph, random_feeds(graph)
    feeds = fixture_feeds(Path(path), batch, seq)
    return onnx_frontend.load(path, input_shapes={k: v.shape for k, v in feeds.items()}), feeds


def _intermediates(model: onnx.ModelProto) -> set[str]:
    declared = {o.name for o in model.graph.output}
    return {o for n in model.graph.node for o in n.output if o and o not in declared and n.op_type != "Constant"}


# ------------------------------------------------------------------- whole models
@pytest.mark.parametrize("path", MODELS, ids=MODEL_IDS)
def test_every_intermediate_shape_matches_onnxruntime(path):
    graph, feeds = _bound(path)
    model = _canonical_model(path)
    checked = assert_shapes_match_ort(graph, model, feeds)
    assert checked >= len(_intermediates(model)) > 0


@pytest.mark.parametrize("path", [str(p) for p in FIXTURE_MODELS], ids=[p.stem for p in FIXTURE_MODELS])
def test_symbolic_shapes_are_exact_before_binding(path):
    """Loaded with symbolic dims, every shape is an expression in the input symbols that
    evaluates to what onnxruntime produces at a concrete size."""
    graph = onnx_frontend.load(path)
    feeds = fixture_feeds(Path(path), batch=3, seq=11)
    bindings = {d: size for name, value in feeds.items()
                for d, size in zip(graph.values[name].type.shape, value.shape) if isinstance(d, str)}
    assert bindings, "the fixture should have symbolic input dims"
    actual = ort_intermediate_shapes(_canonical_model(path), feeds)
    for name, shape in actual.items():
        ours = graph.values[name].type.shape
        assert tuple(symbolic.substitute(d, bindings) for d in ours) == shape, f"{name}: inferred {ours}"
    for name in graph.outputs:
        assert all(isinstance(d, int) or d in bindings for d in graph.values[name].type.shape)


@pytest.mark.parametrize("path", MODELS, ids=MODEL_IDS)
def test_shapes_agree_with_onnx_data_propagation(path):
    """Wherever onnx's own inference (with data propagation) finds a static shape, ours is the same."""
    graph, feeds = _bound(path)
    model = _canonical_model(path)
    for info in model.graph.input:
        if info.name in feeds:
            for dim, size in zip(info.type.tensor_type.shape.dim, feeds[info.name].shape):
                dim.Clear()
                dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    compared = 0
    for info in inferred.graph.value_info:
        dims = info.type.tensor_type.shape.dim
        if info.name in graph.values and info.type.tensor_type.HasField("shape") \
                and all(d.HasField("dim_value") for d in dims):
            assert graph.values[info.name].type.shape == tuple(d.dim_value for d in dims), info.name
            compared += 1
    assert compared > 0


# ------------------------------------------------------------------- single ops
def _single_op(op_type: str, inputs: list, attrs: dict | None = None, outputs: int = 1):
    """Infer one op with our rules and run it in onnxruntime.

    ``inputs`` holds numpy arrays (fed as graph inputs, so nothing is known of their
    contents), ``const(array)`` (initializers, whose contents rules may read) or None (absent).
    Returns (our output shapes, onnxruntime's output shapes).
    """
    graph = ir.Graph()
    names, feeds, initializers, infos = [], {}, [], []
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
        elif isinstance(x, _Const):
            names.append(graph.add_constant(x.data, f"c{i}"))
            initializers.append(numpy_helper.from_array(x.data, names[-1]))
        else:
            names.append(f"x{i}")
            graph.add_input(names[-1], TensorType(DType.from_numpy(x.dtype), x.shape))
            feeds[names[-1]] = x
            infos.append(helper.make_tensor_value_info(names[-1], DType.from_numpy(x.dtype).onnx, x.shape))
    out_names = [f"y{i}" for i in range(outputs)]
    graph.add_node(op_type, names, out_names, attrs or {})
    infer_shapes(graph)
    model = helper.make_model(
        helper.make_graph([helper.make_node(op_type, names, out_names, **(attrs or {}))], "op", infos,
                          [helper.make_value_info(o, onnx.TypeProto()) for o in out_names], initializers),
        opset_imports=[helper.make_opsetid("", 23)], ir_version=ir.export.IR_VERSION)
    actual = ort_session(model).run(None, feeds)
    return [graph.values[o].type.shape for o in out_names], [r.shape for r in actual]


class _Const:
    def __init__(self, data):
        self.data = np.asarray(data)


def const(data, dtype=np.int64) -> _Const:
    return _Const(np.asarray(data, dtype=dtype))


def f32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


CASES = {
    # broadcasting
    "add-broadcast": ("Add", [f32(2, 1, 4), f32(3, 1)]),
    "add-scalar": ("Add", [f32(5), f32()]),
    "where-3-way": ("Where", [np.ones((3, 1), bool), f32(1, 4), f32(2, 1, 1)]),
    "max-variadic": ("Max", [f32(4, 1), f32(5), f32(1, 1, 1)]),
    # negative axes
    "concat-neg-axis": ("Concat", [f32(2, 3), f32(2, 5), f32(2, 1)], {"axis": -1}),
    "reducemean-neg-axis": ("ReduceMean", [f32(2, 3, 4), const([-1])], {"keepdims": 0}),
    "reducesum-all": ("ReduceSum", [f32(2, 3, 4)]),
    "gather-neg-axis": ("Gather", [f32(2, 3, 4), const([[0, 2], [1, 1]])], {"axis": -1}),
    "softmax-neg-axis": ("Softmax", [f32(2, 3)], {"axis": -2}),
    "argmax-neg-axis": ("ArgMax", [f32(2, 3, 4)], {"axis": -2, "keepdims": 0}),
    "flatten-neg-axis": ("Flatten", [f32(2, 3, 4, 5)], {"axis": -1}),
    "transpose-default": ("Transpose", [f32(2, 3, 4)]),
    "transpose-perm": ("Transpose", [f32(2, 3, 4)], {"perm": [1, 2, 0]}),
    # Reshape 0 / -1
    "reshape-copy-and-infer": ("Reshape", [f32(2, 3, 4), const([0, -1])]),
    "reshape-flat": ("Reshape", [f32(2, 3, 4), const([-1])]),
    "reshape-split-heads": ("Reshape", [f32(2, 3, 8), const([0, 0, 2, -1])]),
    "reshape-allowzero": ("Reshape", [f32(0, 3), const([3, 0])], {"allowzero": 1}),
    # Slice
    "slice-negative": ("Slice", [f32(10, 6), const([-3, 1]), const([-1, 5])]),
    "slice-huge-end": ("Slice", [f32(10, 6), const([2]), const([2**63 - 1]), const([0])]),
    "slice-reverse": ("Slice", [f32(10, 6), const([-1]), const([-2**63]), const([1]), const([-1])]),
    "slice-step-2": ("Slice", [f32(10, 7), const([1, 0]), const([100, 7]), const([0, -1]), const([2, 3])]),
    "slice-clamped": ("Slice", [f32(10), const([-100]), const([100])]),
    "slice-empty": ("Slice", [f32(10), const([8]), const([2])]),
    # Gather, Squeeze, Unsqueeze, Concat, Split
    "gather-scalar": ("Gather", [f32(5, 4), const(3)]),
    "gather-scalar-axis1": ("Gather", [f32(5, 4), const(-1)], {"axis": 1}),
    "gatherelements": ("GatherElements", [f32(3, 40), const(np.zeros((3, 5)))], {"axis": 1}),
    "squeeze-all-ones": ("Squeeze", [f32(1, 3, 1, 2)]),
    "squeeze-neg-axes": ("Squeeze", [f32(1, 3, 1, 2), const([-2])]),
    "unsqueeze": ("Unsqueeze", [f32(3, 4), const([0, -1])]),
    "unsqueeze-scalar": ("Unsqueeze", [f32(), const([0])]),
    "split-sizes": ("Split", [f32(7, 2), const([2, 5])], {"axis": 0}, 2),
    "split-num-outputs": ("Split", [f32(2, 6)], {"axis": -1, "num_outputs": 3}, 3),
    "split-num-outputs-uneven": ("Split", [f32(7, 2)], {"num_outputs": 3}, 3),
    # Conv / pools
    "conv-pads-strides-dilations": ("Conv", [f32(1, 4, 11, 13), f32(6, 2, 3, 3)],
                                    {"pads": [1, 2, 0, 1], "strides": [2, 3], "dilations": [2, 1], "group": 2}),
    "conv-same-upper": ("Conv", [f32(1, 2, 9, 10), f32(4, 2, 3, 3)], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "conv-1d-valid": ("Conv", [f32(2, 3, 17), f32(5, 3, 4)], {"auto_pad": "VALID", "strides": [3]}),
    "maxpool-ceil": ("MaxPool", [f32(1, 1, 10, 10)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "maxpool-ceil-drops-padding-window": ("MaxPool", [f32(1, 1, 5, 5)],
                                          {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                           "ceil_mode": 1}),
    "maxpool-indices": ("MaxPool", [f32(1, 2, 7, 7)], {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}, 2),
    "averagepool-pads": ("AveragePool", [f32(1, 2, 8, 9)], {"kernel_shape": [3, 2], "pads": [1, 0, 1, 0],
                                                            "strides": [1, 2]}),
    "global-pool": ("GlobalAveragePool", [f32(2, 3, 5, 7)]),
    # MatMul
    "matmul-vector-matrix": ("MatMul", [f32(3), f32(3, 4)]),
    "matmul-matrix-vector": ("MatMul", [f32(2, 3, 4), f32(4)]),
    "matmul-dot": ("MatMul", [f32(3), f32(3)]),
    "matmul-batch-broadcast": ("MatMul", [f32(2, 1, 3, 4), f32(5, 4, 6)]),
    "gemm-transposed": ("Gemm", [f32(4, 3), f32(5, 4), f32(5)], {"transA": 1, "transB": 1}),
    # Attention (opset 23), grouped heads
    "attention-4d-gqa": ("Attention", [f32(2, 4, 5, 8), f32(2, 2, 7, 8), f32(2, 2, 7, 6)]),
    "attention-3d-gqa": ("Attention", [f32(2, 5, 32), f32(2, 7, 16), f32(2, 7, 12)],
                         {"q_num_heads": 4, "kv_num_heads": 2}),
    "attention-past-kv": ("Attention", [f32(1, 4, 3, 8), f32(1, 2, 3, 8), f32(1, 2, 3, 8), None,
                                        f32(1, 2, 6, 8), f32(1, 2, 6, 8)], {}, 3),
    # creation and other movement
    "range": ("Range", [const(2), const(11), const(3)]),
    "range-negative-step": ("Range", [const(5.0, np.float32), const(-1.0, np.float32), const(-1.5, np.float32)]),
    "constantofshape": ("ConstantOfShape", [const([2, 3])]),
    "expand-bidirectional": ("Expand", [f32(3, 1), const([2, 1, 4])]),
    "tile": ("Tile", [f32(2, 3), const([2, 1])]),
    "pad-axes": ("Pad", [f32(2, 3, 4), const([1, 2, 0, 3]), None, const([0, -1])]),
    "trilu": ("Trilu", [f32(3, 4)]),
    "cumsum": ("CumSum", [f32(3, 4), const(1)]),
    "layernorm-stats": ("LayerNormalization", [f32(2, 3, 4), f32(4)], {"axis": -1}, 3),
    "shape-start-end": ("Shape", [f32(2, 3, 4, 5)], {"start": 1, "end": -1}),
    "size": ("Size", [f32(2, 3)]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_op_rule_matches_onnxruntime(case):
    op_type, inputs, *rest = case
    attrs = rest[0] if rest else {}
    outputs = rest[1] if len(rest) > 1 else 1
    ours, theirs = _single_op(op_type, inputs, attrs, outputs)
    assert ours == theirs


# ------------------------------------------------------------------- symbolic dims
def _symbolic_graph(shape=("batch", "seq", 64)):
    graph = ir.Graph()
    graph.add_input("x", TensorType(DType.FLOAT32, shape))
    return graph


def _op(graph, op_type, inputs, attrs=None, outputs=1):
    node = graph.add_node(op_type, inputs, outputs, attrs or {})
    return node.outputs[0] if outputs == 1 else node.outputs


def _shape_of(graph, value):
    infer_shapes(graph)
    return graph.values[value].type.shape


def test_shape_gather_unsqueeze_concat_reshape_keeps_symbols():
    g = _symbolic_graph()
    shape = _op(g, "Shape", ["x"])
    batch = _op(g, "Unsqueeze", [_op(g, "Gather", [shape, g.add_constant(np.array(0))]), g.add_constant(np.array([0]))])
    seq = _op(g, "Unsqueeze", [_op(g, "Gather", [shape, g.add_constant(np.array(1))]), g.add_constant(np.array([0]))])
    target = _op(g, "Concat", [batch, seq, g.add_constant(np.array([4, 16]))], {"axis": 0})
    heads = _op(g, "Reshape", ["x", target])
    merged = _op(g, "Reshape", [heads, g.add_constant(np.array([0, 0, -1]))])
    flat = _op(g, "Reshape", [heads, g.add_constant(np.array([-1, 16]))])
    assert _shape_of(g, heads) == ("batch", "seq", 4, 16)
    assert _shape_of(g, merged) == ("batch", "seq", 64)
    assert _shape_of(g, flat) == ("4*batch*seq", 16)


def test_symbolic_arithmetic_on_shape_values_is_canonical():
    """(seq + 1) sliced back by one is ``seq`` again, so the two Sub operands broadcast; a
    slice that may be cut short by a small ``seq`` says so."""
    g = _symbolic_graph(("batch", "seq"))
    g.add_input("first", TensorType(DType.FLOAT32, ("batch", 1)))
    longer = _op(g, "Concat", ["first", "x"], {"axis": -1})
    tail = _op(g, "Slice", [longer, g.add_constant(np.array([1])), g.add_constant(np.array([2**63 - 1])),
                            g.add_constant(np.array([-1]))])
    head = _op(g, "Slice", [longer, g.add_constant(np.array([0])), g.add_constant(np.array([-1])),
                            g.add_constant(np.array([-1]))])
    last = _op(g, "Slice", ["x", g.add_constant(np.array([-1])), g.add_constant(np.array([2**63 - 1])),
                            g.add_constant(np.array([1]))])
    diff = _op(g, "Sub", [tail, head])
    assert _shape_of(g, longer) == ("batch", "seq+1")
    assert _shape_of(g, diff) == ("batch", "seq")
    assert _shape_of(g, last) == ("batch", "min(1,seq)")


def test_causal_mask_chain_expands_to_batch_by_seq():
    """The legacy exporter's mask prelude: Range over seq, then Expand to a shape built with
    Equal/Where on shape values (a symbol is never -1)."""
    g = _symbolic_graph(("batch", "seq"))
    shape = _op(g, "Shape", ["x"])
    seq = _op(g, "Gather", [shape, g.add_constant(np.array(1))])
    positions = _op(g, "Unsqueeze", [_op(g, "Range", [g.add_constant(np.array(0)), seq, g.add_constant(np.array(1))]),
                                     g.add_constant(np.array([0]))])
    target = _op(g, "Concat", [_op(g, "Slice", [shape, g.add_constant(np.array([0])), g.add_constant(np.array([1]))]),
                               g.add_constant(np.array([-1]))], {"axis": 0})
    ones = _op(g, "ConstantOfShape", [_op(g, "Shape", [target])], {"value": np.array([1], np.int64)})
    is_free = _op(g, "Equal", [target, _op(g, "Mul", [ones, g.add_constant(np.array(-1))])])
    expanded = _op(g, "Expand", [positions, _op(g, "Where", [is_free, ones, target])])
    assert _shape_of(g, positions) == (1, "seq")
    assert _shape_of(g, expanded) == ("batch", "seq")


def test_symbolic_conv_and_attention():
    g = ir.Graph()
    g.add_input("img", TensorType(DType.FLOAT32, ("n", 3, "h", "w")))
    g.add_constant(np.zeros((8, 3, 3, 3), np.float32), "w")
    conv = _op(g, "Conv", ["img", "w_0"], {"strides": [2, 2], "pads": [1, 1, 1, 1]})
    same = _op(g, "Conv", ["img", "w_0"], {"auto_pad": "SAME_UPPER", "strides": [2, 1]})
    g.add_input("q", TensorType(DType.FLOAT32, ("batch", "seq", 64)))
    g.add_input("kv", TensorType(DType.FLOAT32, ("batch", "seq", 32)))
    attn = _op(g, "Attention", ["q", "kv", "kv"], {"q_num_heads": 4, "kv_num_heads": 2})
    assert _shape_of(g, conv) == ("n", 8, "floordiv(h-1,2)+1", "floordiv(w-1,2)+1")
    assert _shape_of(g, same) == ("n", 8, "ceildiv(h,2)", "w")
    assert _shape_of(g, attn) == ("batch", "seq", 64)


def test_symbolic_dims_compare_and_substitute():
    assert symbolic.sub(symbolic.add("seq", 1), 1) == "seq"
    assert symbolic.canonical("1 + seq") == symbolic.canonical("seq+1")
    assert symbolic.floordiv(symbolic.mul("batch", symbolic.mul("seq", 64)), symbolic.mul(4, "seq")) == "16*batch"
    assert symbolic.compare("Equal", "seq", -1) is False
    assert symbolic.compare("Less", "seq", 0) is False
    assert symbolic.compare("Less", "seq", 8) is None
    assert symbolic.maximum(symbolic.minimum(1, "seq"), 0) == "min(1,seq)"
    assert symbolic.substitute("floordiv(h+1,2)+1", {"h": 10}) == 6
    assert symbolic.substitute("4*batch*seq", {"batch": 2}) == "8*seq"


BAD_OPS = {
    "reshape-wrong-size": ("Reshape", [(2, 3), np.array([4, 2])], {}, "cannot reshape"),
    "reshape-two-minus-ones": ("Reshape", [(2, 3), np.array([-1, -1])], {}, "more than one -1"),
    "matmul-inner-dims": ("MatMul", [(2, 3), (4, 5)], {}, "inner dimensions differ"),
    "add-broadcast": ("Add", [(2, 3), (4,)], {}, "cannot broadcast"),
    "concat-axis": ("Concat", [(2, 3), (2, 3)], {"axis": 2}, "out of range"),
    "slice-step-zero": ("Slice", [(4,), np.array([0]), np.array([4]), np.array([0]), np.array([0])], {}, "step"),
    "range-delta-zero": ("Range", [np.array(0), np.array(4), np.array(0)], {}, "delta"),
    "split-sizes": ("Split", [(5,), np.array([2, 2])], {}, "do not add up"),
    "conv-channels": ("Conv", [(1, 3, 8, 8), (4, 2, 3, 3)], {}, "channels"),
    "attention-heads": ("Attention", [(1, 3, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8)], {}, "grouped"),
}


@pytest.mark.parametrize("case", BAD_OPS.values(), ids=BAD_OPS.keys())
def test_inconsistent_shapes_are_one_shape_error(case):
    op_type, inputs, attrs, message = case
    g = ir.Graph()
    names = [g.add_constant(x) if isinstance(x, np.ndarray) else g.add_input(f"x{i}", TensorType(DType.FLOAT32, x)).name
             for i, x in enumerate(inputs)]
    _op(g, op_type, names, attrs)
    with pytest.raises(ir.ShapeError, match=message):
        infer_shapes(g)
