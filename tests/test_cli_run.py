"""``xpuc run``: compile, run, summarize and save outputs; bad feeds are one-line errors."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import ort_session
from xpuc.cli import DEFAULT_MODEL, main


@pytest.fixture
def add_model(tmp_path):
    """y = x + bias, with a symbolic batch dim and a name a file cannot hold."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("out/y", TensorProto.FLOAT, ["batch", 3])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["out/y"])], "add", [x], [y], [bias])
    path = tmp_path / "add.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("xpuc: error: ") and err.count("\n") == 1, err
    return err


def test_run_from_file_prints_summary_and_saves_outputs(add_model, tmp_path, capsys):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(add_model), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "out")]) == 0
    want = x + np.array([1, 2, 3], np.float32)
    saved = np.load(tmp_path / "out" / "out_y.npy")
    np.testing.assert_array_equal(saved, want)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("out/y  float32[2x3]  sha256:" + hashlib.sha256(want.tobytes()).hexdigest()[:16])
    assert "min=1 max=8 mean=4.5" in line


def test_random_feeds_match_onnxruntime(tmp_path, capsys):
    args = ["run", str(DEFAULT_MODEL), "--random", "--seed", "3", "--input-shape", "input_ids=1x8", "-o", str(tmp_path)]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("logits  float32[1x8x")
    ids = np.random.default_rng(3).integers(0, 16, (1, 8)).astype(np.int64)
    ref, = ort_session(DEFAULT_MODEL).run(["logits"], {"input_ids": ids})
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ref, rtol=1e-4, atol=1e-5)


def test_random_needs_concrete_shapes(add_model, capsys):
    assert main(["run", str(add_model), "--random"]) == 1
    assert "--input-shape x=DIMS" in _error(capsys)


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 3), np.int64), "must have dtype float32, got int64"),
    (np.zeros((2, 4), np.float32), "dimension 1 must be 3, got 4"),
    (np.zeros((6,), np.float32), "must have rank 2"),
])
def test_bad_feed_is_one_error_line(add_model, tmp_path, capsys, array, message):
    np.save(tmp_path / "bad.npy", array)
    assert main(["run", str(add_model), "--input", f"x={tmp_path / 'bad.npy'}"]) == 1
    assert message in _error(capsys)


def test_missing_file_and_unknown_input(add_model, tmp_path, capsys):
    assert main(["run", str(add_model), "--input", f"x={tmp_path / 'nope.npy'}"]) == 1
    assert "cannot read" in _error(capsys)
    np.save(tmp_path / "x.npy", np.zeros((1, 3), np.float32))
    assert main(["run", str(add_model), "--input", f"z={tmp_path / 'x.npy'}"]) == 1
    assert "unknown ['z']" in _error(capsys)
    assert main(["run", str(add_model)]) == 1
    assert "missing ['x']" in _error(capsys)


def test_not_a_npy_file(add_model, tmp_path, capsys):
    (tmp_path / "x.npy").write_text("not numpy")
    assert main(["run", str(add_model), "--input", f"x={tmp_path / 'x.npy'}"]) == 1
    assert "is not a .npy array file" in _error(capsys)


def test_unknown_target(add_model, capsys):
    assert main(["run", str(add_model), "--target", "tpu"]) == 1
    assert "unknown target 'tpu'" in _error(capsys)


def test_malformed_input_argument_is_usage_error(add_model, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(add_model), "--input", "x.npy"])
    assert exc.value.code == 2


def test_run_on_a_hardware_target_prints_its_emulated_cost(capsys):
    """In the host's numerics: the same outputs as a CPU run, plus the cost the generated code
    counted on the target."""
    args = ["run", str(DEFAULT_MODEL), "--input-shape", "input_ids=1x16", "--random", "--seed", "3"]
    assert main(args) == 0
    cpu = capsys.readouterr().out
    assert main(args + ["-t", "systolic-generic", "--host-numerics"]) == 0
    emulated = capsys.readouterr().out
    assert emulated.startswith(cpu)  # identical output digests
    line = emulated[len(cpu):].strip()
    assert line.startswith("emulated on systolic-generic (systolic): latency ") and "chip(s)" in line
    assert float(line.split("latency ")[1].split(" ms")[0]) > 0
