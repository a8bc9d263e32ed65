"""Bad input gets one clear XpucError from the loader, and one ``xpuc: error:`` line from the CLI.

Each case builds a broken model file and names words the message must contain. The same
file goes through ``frontends.onnx.load`` and ``xpuc import``; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from frontends import onnx as onnx_frontend
from ir.errors import XpucError
from xpuc.cli import main

REAL_MODEL = MODELS / "llama_dynamo.onnx"


def small_model(*, nodes=None, inputs=None, outputs=None, initializers=(), opset=23) -> onnx.ModelProto:
    """y = relu(x @ w + x @ w): two inputs sharing the symbol "batch", one weight."""
    nodes = nodes if nodes is not None else [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("MatMul", ["z", "w"], ["h2"], name="mm2"),
        helper.make_node("Add", ["h", "h2"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    inputs = inputs if inputs is not None else [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4]),
    ]
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    weights = list(initializers) or [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")]
    graph = helper.make_graph(nodes, "small", inputs, outputs, initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def external_weight(location: str, dims=(4, 3), data_type=TensorProto.FLOAT) -> TensorProto:
    t = TensorProto(name="w", data_type=data_type, dims=dims, data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    return t


def flipped(data: bytes, start: int, count: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start:start + count]) + data[start + count:]


# ------------------------------------------------------------------ the cases
# Each returns (path to import, CLI arguments after the path, load() keyword arguments).
def write(tmp: Path, content: bytes | onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = tmp / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content.SerializeToString() if isinstance(content, onnx.ModelProto) else content)
    return path


def unsupported_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Einsum", ["x", "w"], ["a"], name="einsum_a", equation="ij,jk->ik"),
        helper.make_node("Hardmax", ["a"], ["b"], name="hardmax_b"),
        helper.make_node("Einsum", ["b", "b"], ["c"], name="einsum_c", equation="ij,ij->ij"),
        helper.make_node("Relu", ["c"], ["d"], name="relu_ok"),
        helper.make_node("Det", ["d"], ["y"], name="det_y"),
    ]
    return small_model(nodes=nodes, inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])])


def cyclic_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "loop_back"], ["s"], name="add_first"),
             helper.make_node("Relu", ["s"], ["loop_back"], name="relu_second"),
             helper.make_node("Identity", ["s"], ["y"], name="out")]
    return small_model(nodes=nodes, inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])])


def huge_raw_tensor() -> onnx.ModelProto:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6], raw_data=b"\0" * 16)
    return small_model(initializers=[w])


CASES = {
    "truncated": lambda tmp: (write(tmp, REAL_MODEL.read_bytes()[: REAL_MODEL.stat().st_size // 2]), [], {},
                              ["not a valid ONNX model", "truncated"]),
    "random-bytes": lambda tmp: (write(tmp, np.random.default_rng(0).bytes(4096)), [], {}, ["ONNX model"]),
    "flipped-bytes": lambda tmp: (write(tmp, flipped(REAL_MODEL.read_bytes(), 40, 64)), [], {},
                                  ["not a valid ONNX model"]),
    "png": lambda tmp: (write(tmp, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(64), "image.png"), [], {},
                        ["image.png", "ONNX model"]),
    "text": lambda tmp: (write(tmp, b"this is a text file, not a model\n", "notes.txt"), [], {},
                         ["notes.txt", "ONNX model"]),
    "empty": lambda tmp: (write(tmp, b""), [], {}, ["empty"]),
    "directory": lambda tmp: (tmp, [], {}, [str(tmp), "not a file"]),
    "missing": lambda tmp: (tmp / "nope.onnx", [], {}, ["nope.onnx", "no such file"]),
    "unsupported-ops": lambda tmp: (write(tmp, unsupported_model()), [], {},
                                    ["3 unsupported op type(s) in 4 node(s)", "Einsum (opset 23): einsum_a, einsum_c",
                                     "Hardmax (opset 23): hardmax_b", "Det (opset 23): det_y"]),
    "cycle": lambda tmp: (write(tmp, cyclic_model()), [], {}, ["cycle", "add_first", "relu_second"]),
    "missing-external-data": lambda tmp: (write(tmp, small_model(initializers=[external_weight("w.bin")])), [], {},
                                          ["'w'", "w.bin", "missing"]),
    "external-data-parent": lambda tmp: (write(tmp, small_model(initializers=[external_weight("../secret.bin")]),
                                               "sub/model.onnx"), [], {},
                                         ["'../secret.bin'", "escapes the model directory"]),
    "external-data-absolute": lambda tmp: (write(tmp, small_model(initializers=[external_weight(
        str(tmp / "secret.bin"))])), [], {}, ["secret.bin", "escapes the model directory"]),
    "huge-raw-tensor": lambda tmp: (write(tmp, huge_raw_tensor()), [], {},
                                    ["'w'", "1,000,000,000,000 elements", "refusing"]),
    "huge-external-tensor": lambda tmp: (write(tmp, small_model(initializers=[external_weight("w.bin", [10**6, 10**6])])),
                                         [], {}, ["'w'", "1,000,000,000,000 elements", "refusing"]),
    "short-raw-data": lambda tmp: (write(tmp, small_model(initializers=[TensorProto(
        name="w", data_type=TensorProto.FLOAT, dims=[4, 3], raw_data=b"\0" * 20)])), [], {},
        ["'w'", "48 bytes", "holds 20 bytes"]),
    "input-rank": lambda tmp: (write(tmp, small_model()), ["--input-shape", "x=2"], {"input_shapes": {"x": (2,)}},
                               ["'x'", "rank 2", "rank 1"]),
    "input-fixed-dim": lambda tmp: (write(tmp, small_model()), ["--input-shape", "x=2x5"],
                                    {"input_shapes": {"x": (2, 5)}}, ["'x'", "dimension 1 is 4", "5 was given"]),
    "input-negative-dim": lambda tmp: (write(tmp, small_model()), ["--input-shape", "x=-1x4"],
                                       {"input_shapes": {"x": (-1, 4)}}, ["'x'", "negative", "-1"]),
    "input-unknown-name": lambda tmp: (write(tmp, small_model()), ["--input-shape", "q=1x4"],
                                       {"input_shapes": {"q": (1, 4)}}, ["'q'", "inputs are: x, z"]),
    "input-symbol-conflict": lambda tmp: (write(tmp, small_model()),
                                          ["--input-shape", "x=2x4", "--input-shape", "z=3x4"],
                                          {"input_shapes": {"x": (2, 4), "z": (3, 4)}}, ["'batch'", "2", "3"]),
    "negative-dim-input": lambda tmp: (write(tmp, small_model(inputs=[
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [-3, 4]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 4])])), [], {}, ["'x'", "negative dimension -3"]),
    "negative-dim-output": lambda tmp: (write(tmp, small_model(outputs=[
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [-2, 3])])), [], {}, ["'y'", "negative dimension -2"]),
    "non-utf8-op-type": lambda tmp: (write(tmp, small_model().SerializeToString().replace(b"Relu", b"Rel\xba")),
                                     [], {}, ["node #3", "not valid UTF-8", "Rel\\xba"]),
    "opset-too-new": lambda tmp: (write(tmp, small_model(opset=onnx.defs.onnx_opset_version() + 7)), [], {},
                                  [f"opset {onnx.defs.onnx_opset_version() + 7}", "newer"]),
}


@pytest.fixture(params=sorted(CASES))
def bad_input(request, tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\1" * 48)  # the escaping paths point at a real file
    return CASES[request.param](tmp_path)


def test_load_raises_one_clear_error(bad_input):
    path, _, kwargs, words = bad_input
    with pytest.raises(XpucError) as info:
        onnx_frontend.load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_cli_prints_one_error_line(bad_input, capsys):
    path, args, _, words = bad_input
    assert main(["import", str(path), *args]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("xpuc: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_cli_debug_shows_the_traceback(bad_input):
    path, args, _, _ = bad_input
    with pytest.raises(XpucError):
        main(["--debug", "import", str(path), *args])


def test_weightless_import_accepts_huge_external_tensors(tmp_path):
    """The same 10^12-element claim is fine when no data is read: only shapes are kept."""
    model = small_model(nodes=[helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 10**6])],
                        initializers=[external_weight("w.bin", [10**6, 10**6])])
    graph = onnx_frontend.load(write(tmp_path, model), weights=False)
    assert graph.values["w"].weightless
    assert graph.values["y"].type.shape == (2, 10**6)


def test_unsupported_ops_are_found_before_opset_upgrade():
    """An opset-17 model with unsupported ops gets the op list, not a version-converter failure."""
    model = unsupported_model()
    model.opset_import[0].version = 17
    with pytest.raises(XpucError, match=r"Einsum \(opset 17\): einsum_a, einsum_c"):
        onnx_frontend.load(model)


# ------------------------------------------------------------------ fuzzing
FUZZ_SEED = small_model().SerializeToString()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(FUZZ_SEED) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(1, len(FUZZ_SEED)), weights=st.booleans())
def test_mutated_models_load_or_raise_xpuc_error(edits, cut, weights):
    data = bytearray(FUZZ_SEED)
    for position, byte in edits:
        data[position] = byte
    try:
        onnx_frontend.load(bytes(data[:cut]), base_dir=os.devnull, weights=weights)
    except XpucError:
        pass
