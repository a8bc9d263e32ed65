"""ONNX node conformance: every test case shipped with onnx whose ops xpuc targets, run
through ``runtime.backend`` with the case's own tolerances.

A case is unsupported, for a reason read from the case before it runs (so a failure can
never hide there), when it uses an element type CPU code generation lacks (strings,
sequences, optionals) or a training-mode Dropout that draws a random mask. Everything else
passes or fails; the test prints the counts and the failures and requires at least 95% of
all the cases to pass.
"""

from __future__ import annotations

import collections

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference.ops.op_cast import cast_to

import runtime
from conformance_cases import case, extra_cases, judge, random_dropout, run_case, selected_cases, unsupported_type
from ir.dtypes import DType

MIN_PASS_RATE = 0.95


@pytest.fixture(scope="module")
def results():
    outcome = {"passed": [], "failed": {}, "unsupported": {}}
    for c in selected_cases():
        status, why = judge(c)
        if status == "passed":
            outcome["passed"].append(c.name)
        else:
            outcome[status][c.name] = why
    return outcome


def test_selection_covers_the_op_set():
    names = {c.name for c in selected_cases()}
    assert len(names) > 700
    assert {"test_relu", "test_attention_4d", "test_cumsum_1d", "test_range_float_type_positive_delta"} <= names


def test_unsupported_types_are_recognized():
    def model(elem):
        x = helper.make_tensor_value_info("x", elem, [2])
        return helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                   [helper.make_tensor_value_info("y", elem, [2])]))

    assert unsupported_type(model(TensorProto.FLOAT)) is None
    assert unsupported_type(model(TensorProto.FLOAT8E4M3FNUZ)) is None
    assert unsupported_type(model(TensorProto.STRING)) == "STRING"


def test_only_random_dropout_is_recognized():
    assert random_dropout(case("test_training_dropout"))
    assert not random_dropout(case("test_training_dropout_zero_ratio"))
    assert not random_dropout(case("test_dropout_default_ratio"))


@pytest.mark.parametrize("node_case", extra_cases(), ids=lambda c: c.name)
def test_extra_op_case(node_case):
    run_case(node_case)


@pytest.mark.parametrize("name", ["test_shape", "test_shape_start_1_end_negative_1", "test_size_example"])
def test_shape_ops_left_in_the_graph(name):
    """Without optimization Shape and Size stay ops; code generation makes them constants."""
    run_case(case(name), optimize=False)


def test_reshape_target_fed_as_input_compiles_per_value():
    """A graph input that decides a shape is bound as a constant, once per distinct value."""
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


NARROW = ["FLOAT8E4M3FN", "FLOAT8E5M2", "FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ", "FLOAT4E2M1", "FLOAT8E8M0",
          "INT4", "UINT4", "INT2", "UINT2"]
"""Element types narrower than a byte's worth of float precision, converted by bit arithmetic."""


def _cast(x: np.ndarray, to: int, **attrs) -> np.ndarray:
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=to, **attrs)], "g",
                              [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
                              [helper.make_tensor_value_info("y", to, x.shape)])
    y, = runtime.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])).run({"x": x})
    return y


@pytest.mark.parametrize("to, saturate, round_mode",
                         [(to, s, "up") for to in NARROW for s in (0, 1)]
                         + [("FLOAT8E8M0", s, mode) for s in (0, 1) for mode in ("down", "nearest")])
def test_narrow_casts_round_like_onnx_reference(to, saturate, round_mode):
    """Every float16 value, and some beyond its range, gets the exact code onnx's reference Cast
    (ml_dtypes, or onnx's e8m0 rounding) gives: rounding, saturation, overflow and NaN included.
    A float out of an integer type's range has no defined result (the ONNX Cast spec: "fixed
    point: undefined if OOR"; ml_dtypes 0.5 wrapped it, 0.7 gives 0), so integers are compared
    over the floats whose truncation they hold."""
    code = getattr(TensorProto, to)
    x = np.concatenate([np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32),
                        np.array([1e6, -1e6, 1e20, -1e20, 3e38, np.inf, -np.inf], np.float32)])
    with np.errstate(invalid="ignore", over="ignore"):
        want = cast_to(x, code, saturate, round_mode)
    got = _cast(x, code, saturate=saturate, round_mode=round_mode)
    assert got.dtype == want.dtype
    defined = np.ones(x.shape, bool)
    if DType.from_onnx(code).is_int:
        info = ml_dtypes.iinfo(want.dtype)
        with np.errstate(invalid="ignore"):
            defined = (np.trunc(x) >= info.min) & (np.trunc(x) <= info.max)
        assert defined.sum() > 1000
    np.testing.assert_array_equal(got.view(np.uint8)[defined], want.view(np.uint8)[defined])


@pytest.mark.parametrize("name", NARROW)
def test_narrow_types_widen_like_ml_dtypes(name):
    """Every code of the type converts to float32 and float16 bit for bit as ml_dtypes converts it."""
    code = getattr(TensorProto, name)
    values = np.arange(1 << int(8 * DType.from_onnx(code).itemsize), dtype=np.uint8)
    values = values.view(helper.tensor_dtype_to_np_dtype(code))
    for dtype, bits in ((np.float32, np.uint32), (np.float16, np.uint16)):
        got = _cast(values, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
        with np.errstate(over="ignore"):  # e8m0's largest codes are infinite in float16, as they should be
            want = values.astype(dtype)
        np.testing.assert_array_equal(got.view(bits), want.view(bits))


def test_sub_byte_values_take_a_byte_each_at_run_time():
    """An int4 intermediate gets a byte per value in the arena, as ml_dtypes arrays hold them,
    while its packed size (cost models, the ONNX wire format) stays half a byte."""
    x = np.tile(np.arange(-8, 8, dtype=np.float32), (32, 2))
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["q"], to=TensorProto.INT4),
                               helper.make_node("Transpose", ["q"], ["t"]),
                               helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT),
                               helper.make_node("Cast", ["q"], ["z"], to=TensorProto.INT8)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.T.shape),
                               helper.make_tensor_value_info("z", TensorProto.INT8, x.shape)])
    model = runtime.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), optimize=False)
    y, z = model.run({"x": x})
    np.testing.assert_array_equal(y, x.T)
    np.testing.assert_array_equal(z, x.astype(np.int8))
    assert model.intermediate_bytes >= x.size
    assert DType.INT4.itemsize == 0.5 and DType.INT4.numpy.itemsize == 1


def test_node_conformance(results, capsys):
    passed, failed, unsupported = len(results["passed"]), results["failed"], results["unsupported"]
    total = passed + len(failed) + len(unsupported)
    rate = passed / total
    with capsys.disabled():
        print(f"\nonnx node conformance: {passed} passed, {len(failed)} failed, {len(unsupported)} unsupported "
              f"of {total} cases ({rate:.1%} of all pass; {passed / max(passed + len(failed), 1):.1%} "
              "of the supported ones)")
        for reason, count in sorted(collections.Counter(unsupported.values()).items()):
            print(f"  unsupported: {count:3d} {reason}")
        for name, error in sorted(failed.items()):
            print(f"  failed: {name}: {error}")
    assert rate >= MIN_PASS_RATE, f"{rate:.1%} of the cases pass, below {MIN_PASS_RATE:.0%}"
