"""Refusing before allocating (runtime/memory.py): shapes whose buffers cannot fit in the
memory available are refused with the tensor and its size named, before optimization,
before LLVM and before any buffer of the run exists."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from runtime import compiled as compiled_module
from runtime import memory
from runtime.memory import MemoryLimitError
from xpuc.cli import main

RNG = np.random.default_rng(0)
WEIGHTS = {name: RNG.standard_normal(shape).astype(np.float32) * 0.05
           for name, shape in (("w1", (64, 384)), ("w2", (384, 384)), ("w3", (384, 64)))}


@pytest.fixture
def nothing_compiles(monkeypatch):
    """Fail the test if LLVM is reached."""
    def refuse(*args, **kwargs):
        raise AssertionError("compiled code for a run that must be refused")

    monkeypatch.setattr(compiled_module, "compile_module", refuse)


def chain(batch="batch") -> onnx.ModelProto:
    """x[b, 64] @ w1[64, 384] @ w2[384, 384] @ w3[384, 64]: two 384-wide intermediates are alive together."""
    f = TensorProto.FLOAT
    weights = [numpy_helper.from_array(w, name) for name, w in WEIGHTS.items()]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("MatMul", ["h1", "w2"], ["h2"]),
             helper.make_node("Add", ["h1", "h2"], ["h3"]), helper.make_node("MatMul", ["h3", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", f, (batch, 64))],
                              [helper.make_tensor_value_info("y", f, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def test_available_memory_is_known():
    assert memory.available_bytes() > 0


def test_the_cli_refuses_a_huge_input_shape_in_one_line(capsys, nothing_compiles):
    assert main(["run", "--input-shape", "input_ids=1x100000000", "--random"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("xpuc: error: tensor '") and "1x4x100000000x100000000" in err
    assert "PiB, more than the" in err and "of memory available" in err


def test_one_tensor_bigger_than_memory_is_named(monkeypatch, nothing_compiles):
    monkeypatch.setattr(memory, "available_bytes", lambda: 200_000)
    with pytest.raises(MemoryLimitError, match=r"tensor '(h1|h2|h3)' \(tensor<256x384xf32>\) needs 384.0 KiB"):
        runtime.compile(chain(), input_shapes={"x": (256, 64)}, cache=False)


def test_a_run_whose_buffers_together_do_not_fit_is_refused(monkeypatch, nothing_compiles):
    """Each tensor fits (96 KiB at batch 64) but the arena holds two at once, plus the ends."""
    monkeypatch.setattr(memory, "available_bytes", lambda: 150_000)
    with pytest.raises(MemoryLimitError, match=r"a run needs .* of intermediates.* more than the 146.5 KiB"):
        runtime.compile(chain(), input_shapes={"x": (64, 64)}, cache=False)


def test_a_feed_too_big_is_refused_and_smaller_ones_still_run(monkeypatch):
    model = runtime.compile(chain(), cache=False)  # symbolic batch: compiled per feed shape
    monkeypatch.setattr(memory, "available_bytes", lambda: 150_000)
    with pytest.raises(MemoryLimitError):
        model.run({"x": np.zeros((256, 64), np.float32)})
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    h1 = x @ WEIGHTS["w1"]
    np.testing.assert_allclose(model.run({"x": x})[0], (h1 + h1 @ WEIGHTS["w2"]) @ WEIGHTS["w3"], rtol=1e-4,
                               atol=1e-4)
