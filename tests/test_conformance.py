"""ONNX node conformance: every test case shipped with onnx whose ops xpuc targets, run
through ``runtime.backend`` with the case's own tolerances.

Cases whose tensors use an element type CPU code generation lacks (float8, int4, strings,
sequences ...) are counted as unsupported, by the type, read from the model before it runs,
so a failure can never hide there. Everything else passes or fails; the test prints the
counts and the failures and requires a pass rate of at least 95%.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import pickle
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import runtime.backend as backend
from backends.codegen.emit import STORAGE
from runtime.cache import cache_dir

OPS = frozenset("""
    Abs Add And Attention AveragePool BatchNormalization Cast Clip Concat Constant ConstantOfShape Conv Cos
    CumSum Div Dropout Equal Erf Exp Expand Flatten Gather GatherElements Gelu Gemm GlobalAveragePool Greater
    Identity IsNaN LayerNormalization LeakyRelu Less LRN MatMul Max MaxPool Mean Min Mul Neg Not Or Pow Range
    Reciprocal ReduceMax ReduceMean ReduceSum Relu Reshape RMSNormalization RotaryEmbedding Shape Sigmoid Sin
    Slice Softmax Softplus Split Sqrt Squeeze Sub Sum Tanh Transpose Trilu Unsqueeze Where""".split())
EXTRA_OPS = frozenset({"GatherND", "ScatterND", "Size"})
"""Ops real models leave behind (mask code of transformer exports, shape queries), tested too."""
SUPPORTED_TYPES = frozenset(dtype.onnx for dtype in STORAGE)
MIN_PASS_RATE = 0.95


def selected_cases() -> list:
    """Cases whose every op is in OPS."""
    return [c for c in _cases() if all(n.op_type in OPS for n in c.model.graph.node)]


def extra_cases() -> list:
    """Cases of EXTRA_OPS whose other ops are in OPS."""
    return [c for c in _cases() if any(n.op_type in EXTRA_OPS for n in c.model.graph.node)]


@functools.cache
def _cases() -> list:
    """The cases, kept in the xpuc cache: generating them runs onnx's reference ops (its
    pooling alone takes half a minute), so only the first run per onnx version pays."""
    ops = OPS | EXTRA_OPS
    selection = hashlib.sha256(" ".join(sorted(ops)).encode()).hexdigest()[:12]
    path = cache_dir() / f"onnx-{onnx.__version__}-node-cases-{selection}.pkl"
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        pass
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = collect_testcases()
    cases = sorted((c for c in cases if all(n.op_type in ops for n in c.model.graph.node)),
                   key=lambda c: c.name)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(cases))
        tmp.replace(path)
    return cases


def unsupported_type(model: onnx.ModelProto) -> str | None:
    """The first element type (or non-tensor type) in the model that code generation lacks."""
    g = model.graph
    types = [v.type for v in (*g.input, *g.output, *g.value_info)]
    for t in types:
        if not t.HasField("tensor_type"):
            return f"{t.WhichOneof('value')} values"
    codes = [t.tensor_type.elem_type for t in types]
    codes += [t.data_type for t in g.initializer]
    for node in g.node:
        for attr in node.attribute:
            if attr.name == "to" and node.op_type == "Cast":
                codes.append(attr.i)
            elif attr.type == onnx.AttributeProto.TENSOR:
                codes.append(attr.t.data_type)
    missing = next((c for c in codes if c and c not in SUPPORTED_TYPES), None)
    return None if missing is None else onnx.TensorProto.DataType.Name(missing)


def _array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def run_case(case, **options) -> None:
    """Raise AssertionError (or any error) unless every data set matches within the case's tolerances."""
    for inputs, expected in case.data_sets:
        outputs = backend.run_model(case.model, inputs, **options)
        assert len(outputs) == len(expected), f"{len(outputs)} outputs, expected {len(expected)}"
        for got, want in zip(outputs, map(_array, expected)):
            assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
            assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
            if want.dtype.kind == "V":  # ml_dtypes floats (bfloat16): numpy compares them as float32
                got, want = got.astype(np.float32), want.astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(text[:4])[:200]}"


@pytest.fixture(scope="module")
def results():
    outcome = {"passed": [], "failed": {}, "unsupported": {}}
    for case in selected_cases():
        reason = unsupported_type(case.model)
        if reason is not None:
            outcome["unsupported"][case.name] = reason
            continue
        try:
            run_case(case)
        except Exception as exc:  # noqa: BLE001  a failing case is counted and reported, not fatal
            outcome["failed"][case.name] = _first_line(exc)
        else:
            outcome["passed"].append(case.name)
    return outcome


def test_selection_covers_the_op_set():
    names = {c.name for c in selected_cases()}
    assert len(names) > 700
    assert {"test_relu", "test_attention_4d", "test_cumsum_1d", "test_range_float_type_positive_delta"} <= names


def test_unsupported_types_are_recognized():
    from onnx import TensorProto, helper

    def model(elem):
        x = helper.make_tensor_value_info("x", elem, [2])
        return helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                   [helper.make_tensor_value_info("y", elem, [2])]))

    assert unsupported_type(model(TensorProto.FLOAT)) is None
    assert unsupported_type(model(TensorProto.FLOAT8E4M3FNUZ)) == "FLOAT8E4M3FNUZ"
    assert unsupported_type(model(TensorProto.STRING)) == "STRING"


@pytest.mark.parametrize("case", extra_cases(), ids=lambda c: c.name)
def test_extra_op_case(case):
    run_case(case)


@pytest.mark.parametrize("name", ["test_shape", "test_shape_start_1_end_negative_1", "test_size_example"])
def test_shape_ops_left_in_the_graph(name):
    """Without optimization Shape and Size stay ops; code generation makes them constants."""
    case, = [c for c in selected_cases() + extra_cases() if c.name == name]
    run_case(case, optimize=False)


def test_reshape_target_fed_as_input_compiles_per_value():
    """A graph input that decides a shape is bound as a constant, once per distinct value."""
    from onnx import TensorProto, helper

    import runtime

    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = runtime.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    assert model.value_inputs == ["shape"]
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for target in ([3, 4], [12, 1], [3, 4]):
        y, = model.run({"x": x, "shape": np.array(target, np.int64)})
        np.testing.assert_array_equal(y, x.reshape(target))


@pytest.mark.parametrize("to", ["float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("saturate", [0, 1])
def test_float8_rounding_matches_ml_dtypes(to, saturate):
    """Every float16 value (and some beyond its range) rounds to the float8 code ml_dtypes picks;
    saturation only clamps what would overflow."""
    import ml_dtypes
    from onnx import TensorProto, helper

    import runtime

    code = {"float8_e4m3fn": TensorProto.FLOAT8E4M3FN, "float8_e5m2": TensorProto.FLOAT8E5M2}[to]
    x = np.concatenate([np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32),
                        np.array([1e6, -1e6, np.inf, -np.inf], np.float32)])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=code, saturate=saturate)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                              [helper.make_tensor_value_info("y", code, [len(x)])])
    y, = runtime.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])).run({"x": x})
    dtype = getattr(ml_dtypes, to)
    top = float(ml_dtypes.finfo(dtype).max)
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when e4m3fn overflows to NaN
        want = (np.clip(x, -top, top) if saturate else x).astype(dtype)
    np.testing.assert_array_equal(y.view(np.uint8)[~np.isnan(want)], want.view(np.uint8)[~np.isnan(want)])
    assert np.isnan(y.astype(np.float32)[np.isnan(want)]).all()


def test_node_conformance(results, capsys):
    passed, failed, unsupported = len(results["passed"]), results["failed"], results["unsupported"]
    total = passed + len(failed) + len(unsupported)
    rate = passed / max(passed + len(failed), 1)
    with capsys.disabled():
        print(f"\nonnx node conformance: {passed} passed, {len(failed)} failed, {len(unsupported)} unsupported "
              f"of {total} cases ({rate:.1%} of supported cases pass, {passed / total:.1%} of all)")
        for reason, count in sorted(collections.Counter(unsupported.values()).items()):
            print(f"  unsupported: {count:3d} use {reason}")
        for name, error in sorted(failed.items()):
            print(f"  failed: {name}: {error}")
    assert rate >= MIN_PASS_RATE, f"pass rate {rate:.1%} is below {MIN_PASS_RATE:.0%}"
