"""Model configs on the command line: ``xpuc models``, and preset names or config.json files
wherever a model is taken (import, schedule, run), with input_ids=1x128 unless told."""

from __future__ import annotations

import json

import numpy as np

import ir
from conftest import FIXTURES, ort_session
from frontends import hf
from xpuc.cli import main

TINY_MIXTRAL = json.loads((FIXTURES / "hf_tiny_configs.json").read_text())["configs"]["mixtral"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_every_preset_with_its_shape(capsys):
    code, out, err = run(capsys, "models")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert sorted(rows) == hf.presets()
    assert rows["llama-3-8b"][1:] == ["llama", "8,030,261,248", "32", "4096", "32/8", "8192"]
    assert rows["mamba-2.8b"][5] == "-"  # no attention heads
    code, out, _ = run(capsys, "models", "--json")
    listed = {row["name"]: row for row in json.loads(out)}
    assert listed["mixtral-8x7b"]["parameters"] == 46_702_792_704
    assert listed["mixtral-8x7b"]["source"].startswith("https://huggingface.co/mistralai/Mixtral-8x7B-v0.1")


def test_import_takes_a_preset_with_the_default_shape(capsys):
    code, out, _ = run(capsys, "import", "llama-3-8b", "--json")
    summary = json.loads(out)
    assert code == 0 and not summary["ops_with_unknown_work"] and summary["weightless"]
    assert summary["ops_by_type"]["Attention"] == 32
    code, out, _ = run(capsys, "import", "llama-3-8b", "--json", "--input-shape", "input_ids=2x128")
    assert json.loads(out)["flops_by_family"]["matmul"] == 2 * summary["flops_by_family"]["matmul"]


def test_schedule_takes_a_preset(capsys, tmp_path):
    code, out, err = run(capsys, "schedule", "mixtral-8x7b", "-t", "h100-sxm", "--json", tmp_path / "plan.json")
    assert code == 0 and err == ""
    plan = json.loads((tmp_path / "plan.json").read_text())
    experts = [op for op in plan["ops"] if op["op"] == "xpuc.MixtureOfExperts"]
    assert plan["deployment"] == {"chips": 2, "tp": 2, "pp": 1, "ep": False}  # 93 GB of f16 weights: each chip half of every expert
    assert len(experts) == 2 * 32 and all(op["engine"] == "tensor" for op in experts)


def test_run_takes_a_config_file_with_seeded_random_weights(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_MIXTRAL))
    code, _, err = run(capsys, "run", path, "--random", "--seed", "5", "--input-shape", "input_ids=1x8",
                       "-o", tmp_path / "out")
    assert code == 0 and err == ""
    graph = hf.load(TINY_MIXTRAL, weights="random", seed=5, input_shapes={"input_ids": (1, 8)})
    ids = np.random.default_rng(5).integers(0, 16, (1, 8)).astype(np.int64)
    expected, = ort_session(ir.to_onnx(graph)).run(None, {"input_ids": ids})
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), expected, rtol=1e-4, atol=1e-5)


def test_bad_model_names_and_configs_are_one_error_line(capsys, tmp_path):
    code, _, err = run(capsys, "import", "llama-9000")
    assert code == 1 and err.count("\n") == 1 and "`xpuc models`" in err
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "llama", "num_attention_heads": 6, "num_key_value_heads": 4}))
    code, _, err = run(capsys, "schedule", bad, "-t", "tpu-v4")
    assert code == 1 and err.count("\n") == 1
    assert "missing vocab_size" in err and "not a multiple of num_key_value_heads 4" in err
