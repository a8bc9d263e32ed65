"""xpuc compare --llm: each target's serving analysis is ``xpuc.analysis.analyze``'s for the same
arguments (and again at batch 1), a target that cannot serve says why, and the options that make
no sense are one error before anything is analyzed."""

import csv
import json

import pytest

from backends.calibration import matmul_graph
from backends.llm.analysis import AnalysisError
from xpuc.analysis import analyze
from backends.report import si
from xpuc.cli import DEFAULT_MODEL, main
from xpuc.compare_serving import check

SMALL = ["llama-3-8b", "--input-shape", "input_ids=1x16", "-t", "h100-sxm,tpu-v5e", "--chips", "1", "--llm",
         "--prompt-len", "128", "--gen-len", "32"]
"""Llama-3-8B on one chip: 16.1 GB of bf16 weights fit an H100's 80 GB, not a TPU v5e's 16 GB."""


def as_json(report) -> dict:
    return json.loads(json.dumps(report.to_dict()))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    paths = {k: out / f"c.{k}" for k in ("json", "csv", "html")}
    argv = ["compare", *SMALL] + [a for k, p in paths.items() for a in (f"--{k}", str(p))]
    return main(argv), paths


def test_each_target_serves_as_xpuc_llm_does_at_its_batch_and_at_batch_1(small):
    code, paths = small
    assert code == 0
    data = json.loads(paths["json"].read_text())
    assert data["serving_request"] == {"batch": None, "prompt_len": 128, "gen_len": 32}
    h100 = data["targets"][0]["serving"]
    mine = analyze("llama-3-8b", "h100-sxm", "native", 1, None, None, None, 128, 32)
    assert mine.batch > 1                                     # the largest batch whose KV cache fits
    assert {k: v for k, v in h100.items() if k not in ("cannot_serve", "batch_one")} == as_json(mine)
    assert h100["batch_one"] == as_json(analyze("llama-3-8b", "h100-sxm", "native", 1, batch=1, prompt_len=128,
                                                gen_len=32))
    assert h100["cannot_serve"] == ""


def test_a_target_the_model_does_not_fit_carries_the_reason(small, capsys):
    _, paths = small
    tpu = json.loads(paths["json"].read_text())["targets"][1]
    assert tpu["target"] == "tpu-v5e" and tpu["serving"]["batch_one"] is None
    assert tpu["serving"]["cannot_serve"].startswith("the model does not fit tpu-v5e chips with chips 1")
    assert "tpot_s" not in tpu["serving"]


def test_the_csv_has_serving_columns_and_the_html_the_pareto_chart(small):
    _, paths = small
    h100, tpu = csv.DictReader(paths["csv"].read_text().splitlines())
    mine = analyze("llama-3-8b", "h100-sxm", "native", 1, None, None, None, 128, 32)
    assert float(h100["serving_usd_per_mtok"]) == mine.usd_per_mtok
    assert (int(h100["serving_batch"]), int(h100["serving_tp"]), int(h100["serving_pp"])) == (mine.batch, 1, 1)
    assert tpu["serving_cannot_serve"] and tpu["serving_tpot_s"] == ""
    page = paths["html"].read_text()
    assert '<figure id="pareto"><svg' in page and 'id="pareto-note"' not in page


def test_the_table_has_a_serving_block_and_its_pareto_frontier(capsys):
    assert main(["compare", "--no-accuracy", "-t", "h100-sxm", "--llm", "--batch", "2", "--prompt-len", "16",
                 "--gen-len", "8"]) == 0                    # the bundled tiny Llama: an ONNX decoder
    out = capsys.readouterr().out
    two, one = (analyze(str(DEFAULT_MODEL), "h100-sxm", batch=b, prompt_len=16, gen_len=8) for b in (2, 1))
    assert "16 prompt + 8 generated tokens per request; batch 2, then batch 1" in out
    lines = out[out.index("serving ("):out.index("porting cost")].splitlines()
    for line, r in zip(lines[2:4], (two, one)):
        assert line[18:].split()[:5] == ["1", "1", "x", "1", str(r.batch)]     # chips, tp x pp, batch
        assert line.split()[-1] == f"{r.joules_per_token:.3g}"
        assert si(r.ttft_s, "s") in line and si(r.tpot_s, "s") in line and f" {r.usd_per_mtok:.3g} " in line
    assert lines[2].startswith("h100-sxm ") and lines[3].startswith(" " * 17)
    assert two.usd_per_mtok < one.usd_per_mtok               # a batch shares the chips' time
    front = ["h100-sxm b=2"] + (["h100-sxm b=1"] if one.tokens_per_s_per_user > two.tokens_per_s_per_user else [])
    assert lines[4].endswith(": " + ", ".join(front))


@pytest.mark.parametrize("argv, message", [
    (["compare", "tests/fixtures/models/bert_dynamo.onnx", "--input-shape", "input_ids=1x16", "-t", "h100-sxm",
      "--no-accuracy", "--llm"], "attends both ways (an encoder)"),
    (["compare", *SMALL, "--batch", "0"], "batch must be a whole number of at least 1, got 0"),
    (["compare", "llama-3-8b", "-t", "h100-sxm", "--batch", "8"], "describe the requests that --llm serves: add --llm"),
])
def test_bad_options_are_one_line_and_exit_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_graph_without_a_token_input_is_no_decoder():
    with pytest.raises(AnalysisError, match="--llm serves a decoder: .*not a decoder graph"):
        check("matmul.onnx", matmul_graph(4, 8, 8, "f32"), None, 16, 8)


def test_ep_reaches_both_the_pass_and_the_serving_analysis(capsys):
    """--ep is a deployment option like --tp: a model without experts cannot take it, in the
    pass table and in the serving block alike (each row says why; the comparison goes on)."""
    assert main(["compare", "llama-3-8b", "--input-shape", "input_ids=1x16", "-t", "h100-sxm", "--ep", "--llm",
                 "--prompt-len", "128", "--gen-len", "32", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    reason = "--ep cuts mixtures of experts by experts, and llama-3-8b has none"
    assert f"cannot run: {reason}" in out and f"cannot serve: {reason}" in out
