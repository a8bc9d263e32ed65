"""``--precision`` on ``xpuc import``, ``run`` and ``schedule``, and ``xpuc run --accuracy``."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import MODELS, fixture_feeds, ort_session
from xpuc.cli import main

LLAMA = MODELS / "llama_dynamo.onnx"
SHAPE = ["--input-shape", "input_ids=1x8"]


def test_import_writes_a_quantized_model_onnxruntime_runs(tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["import", str(LLAMA), *SHAPE, "--precision", "int4", "-o", str(out)]) == 0
    assert "DequantizeLinear" in capsys.readouterr().out
    model = onnx.load(out)
    assert TensorProto.INT4 in {t.data_type for t in model.graph.initializer}
    logits, = ort_session(out).run(None, fixture_feeds(LLAMA, 1, 8))
    assert logits.shape == (1, 8, 256) and np.isfinite(logits).all()


def test_run_prints_accuracy_against_float32(capsys):
    assert main(["run", str(LLAMA), *SHAPE, "--random", "--precision", "w8a8", "--accuracy"]) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if li.startswith("logits in w8a8 against float32: "))
    rel = float(re.search(r"rel L2 ([0-9.e-]+)", line).group(1))
    assert 0 < rel < 0.2 and "top-1 agreement" in line and "KL" in line


def test_accuracy_needs_a_precision(capsys):
    assert main(["run", str(LLAMA), *SHAPE, "--random", "--accuracy"]) == 1
    assert "give --precision" in capsys.readouterr().err


def test_schedule_costs_the_format_without_rewriting_the_graph(capsys, tmp_path):
    """--precision on schedule is the cost policy: no Cast is added, the header and the JSON say
    what every op computed in and why."""
    plan = tmp_path / "plan.json"
    assert main(["schedule", str(LLAMA), *SHAPE, "-t", "tpu-v4", "--precision", "bf16", "--limit", "0",
                 "--json", str(plan)]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"^\S+\s+Cast\s", out, re.MULTILINE)
    assert "precision bf16: weights bf16, activations bf16, KV cache bf16" in out
    assert re.search(r"^\s+\d+ ops on mxu\s+bf16\s+precision bf16: bf16$", out, re.MULTILINE)
    data = json.loads(plan.read_text())
    assert data["precision"]["policy"] == "bf16"
    assert all(op["format_reason"] for op in data["ops"])


@pytest.mark.parametrize("command", ["import", "run", "schedule"])
def test_unknown_precision_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--precision", "int5"] + (["-t", "tpu-v4"] if command == "schedule" else []))
    assert exit_info.value.code == 2 and "int4-g32" in capsys.readouterr().err
