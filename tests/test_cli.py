"""The ``xpuc`` command line, run in-process through ``xpuc.cli.main`` (and once as the installed script)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import MODELS, ort_session
from ir.passes import DEFAULT_PIPELINE
from xpuc import __version__
from xpuc.cli import DEFAULT_MODEL, main

LLAMA = MODELS / "llama_dynamo.onnx"
BANNER = re.compile(r"^// ----- IR after (\S+) \(\d+ ops\) ----- //$", re.MULTILINE)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, "import", *argv, "--json")
    assert code == 0 and err == ""
    return json.loads(out)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"xpuc {__version__}"


def test_output_runs_in_onnxruntime_like_the_original(capsys, tmp_path):
    out_path = tmp_path / "optimized.onnx"
    code, out, _ = run(capsys, "import", LLAMA, "-o", out_path, "--input-shape", "input_ids=2x7")
    assert code == 0 and "optimized:" in out
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 64, (2, 7)).astype(np.int64)}
    expected = ort_session(LLAMA).run(None, feeds)[0]
    actual = ort_session(onnx.load(out_path)).run(None, feeds)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_input_shape_makes_all_work_countable(capsys):
    symbolic = run_json(capsys, LLAMA)
    bound = run_json(capsys, LLAMA, "--input-shape", "input_ids=1x8")
    assert symbolic["ops_with_unknown_work"] and not bound["ops_with_unknown_work"]
    assert bound["flops_by_family"]["matmul"] > 0
    code, out, _ = run(capsys, "import", LLAMA)
    assert code == 0 and "--input-shape" in out  # the text summary says how to bind shapes


def test_no_weights_keeps_shapes_and_counts(capsys):
    full = run_json(capsys, LLAMA, "--input-shape", "input_ids=1x8")
    weightless = run_json(capsys, LLAMA, "--input-shape", "input_ids=1x8", "--no-weights")
    assert weightless["weightless"] and not full["weightless"]
    for key in ("ops_by_type", "parameters", "flops_by_family"):
        assert weightless[key] == full[key], key


def test_json_summary(capsys):
    s = run_json(capsys, LLAMA, "--input-shape", "input_ids=1x8")
    assert sum(s["ops_by_type"].values()) == s["ops"] < s["ops_before_optimization"]
    weights = sum(int(np.prod(t.dims)) for t in onnx.load(LLAMA).graph.initializer)
    assert s["parameters"] >= weights
    assert s["flops"] == sum(s["flops_by_family"].values()) > 0
    assert list(s["pass_seconds"]) == list(dict.fromkeys(DEFAULT_PIPELINE))


def test_print_after_all_prints_a_banner_per_pass(capsys):
    code, out, _ = run(capsys, "import", LLAMA, "--print-after-all")
    assert code == 0
    assert BANNER.findall(out) == DEFAULT_PIPELINE


def test_print_after_one_pass(capsys):
    code, out, _ = run(capsys, "import", LLAMA, "--print-after", "simplify")
    assert code == 0
    assert BANNER.findall(out) == ["simplify"]
    ir_text = out.split("----- //\n", 1)[1]
    assert "MatMul" in ir_text


def test_print_after_unknown_pass_is_a_clear_error(capsys):
    code, out, err = run(capsys, "import", LLAMA, "--print-after", "nonexistent-pass")
    assert code == 1 and out == ""
    assert err.startswith("xpuc: error: unknown pass nonexistent-pass") and err.count("\n") == 1
    assert "simplify" in err  # the message lists the passes there are


def test_dot_names_every_op(capsys, tmp_path):
    dot = tmp_path / "graph.dot"
    code, _, _ = run(capsys, "import", LLAMA, "--dot", dot, "--input-shape", "input_ids=1x8")
    text = dot.read_text()
    assert code == 0 and text.startswith("digraph ") and text.rstrip().endswith("}")
    from frontends import onnx as onnx_frontend
    from ir.passes import optimize

    for node in optimize(onnx_frontend.load(LLAMA, input_shapes={"input_ids": (1, 8)})).nodes:
        assert f'"{node.name}"' in text


def test_default_model_is_the_bundled_tiny_llama(capsys):
    assert DEFAULT_MODEL.is_file()
    default = run_json(capsys)
    assert default == {**run_json(capsys, DEFAULT_MODEL), "pass_seconds": default["pass_seconds"]}
    assert default["ops_by_type"]["MatMul"] > 0


def test_unwritable_output_is_one_error_line(capsys, tmp_path):
    code, _, err = run(capsys, "import", LLAMA, "-o", tmp_path / "no" / "such" / "dir.onnx")
    assert code == 1 and err.startswith("xpuc: error: ") and err.count("\n") == 1


def test_installed_console_script():
    script = Path(sys.executable).with_name("xpuc")
    ok = subprocess.run([script, "import", LLAMA, "--json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ops"] > 0
    bad = subprocess.run([script, "import", "/nonexistent/model.onnx"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr == "xpuc: error: /nonexistent/model.onnx: no such file\n"


def test_a_fusion_that_cannot_run_says_why(capsys):
    code, out, _ = run(capsys, "import", LLAMA)
    assert code == 0 and "note: fuse-attention did not run: it needs static shapes" in out
    assert run_json(capsys, LLAMA)["pass_notes"] and not run_json(capsys, LLAMA, "--input-shape", "input_ids=1x8")[
        "pass_notes"]
