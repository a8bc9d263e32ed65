"""benchmarks/validate.py's building blocks: the decode step it costs, its fixed split and its
scope, against hand-computed values (its predictions are a benchmark, recorded in BENCHMARKS.md)."""

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

import backends
from frontends import llm_graphs
from frontends import hf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("validate", ROOT / "benchmarks" / "validate.py")
validate = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = validate
_spec.loader.exec_module(validate)


def test_a_decode_step_reads_its_kv_cache():
    """Llama-2-7B, one new token after 100 cached ones, fp16: per layer the attention scores
    32 heads x 101 keys of 128 dims (2 x 32 x 101 x 128 x 2 FLOPs, + 5 per score for softmax),
    and the KV reservation is the new K and V (4096 wide) plus the 32 x 100 x 128 cache of each."""
    graph = llm_graphs.graph("llama-2-7b", "fp16", 1, 1, 100)
    s = backends.schedule(graph, backends.load_target("h100-sxm"))
    scores = 32 * 101
    attention = [o for o in s.ops if o.op == "Attention"]
    assert len(attention) == 32
    assert all(o.flops == 2 * scores * 128 * 2 + 5 * scores for o in attention)
    (memory,) = s.memory
    assert memory.kv == 32 * 2 * (4096 + 32 * 100 * 128) * 2


def test_the_split_alternates_within_each_hardware_in_hash_order():
    rows = [r for r in validate.load() if validate.out_of_scope(r) is None]
    roles = validate.split(rows)
    assert set(roles.values()) == {"fit", "held out"}
    for hardware in {r.hardware for r in rows}:
        mine = sorted((r for r in rows if r.hardware == hardware),
                      key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
        assert [roles[r.id] for r in mine] == ["fit", "held out"] * (len(mine) // 2) + ["fit"] * (len(mine) % 2)


def test_scope_names_why_a_row_is_left_out():
    rows = {r.id: r for r in validate.load()}
    assert validate.out_of_scope(rows["mlperf40-gaudi2x8-llama2-offline"]) == "no preset for gaudi2"
    assert validate.out_of_scope(rows["mlperf40-h100x8-llama2-offline"]) == "variable-length benchmark dataset (MLPerf)"
    assert validate.out_of_scope(rows["llmperf-groq-llama2-70b-ttft"]) == "public-API time includes the client's network"
    assert validate.out_of_scope(rows["trt09-ttft-a100-l7-tp1-128"]) is None


def test_a_lower_bound_is_met_by_any_prediction_above_it():
    rows = {r.id: r for r in validate.load()}
    bound = rows["groq-moor-llama2-70b-2023"]  # "more than 100 tokens per second"
    assert validate.error(300, bound) == 0.0 and validate.error(50, bound) == pytest.approx(-0.5)
    assert validate.error(300, rows["groq-press-llama-2-70b"]) == pytest.approx(0.0)


def test_every_in_scope_model_has_a_preset():
    assert {r.model for r in validate.load() if validate.out_of_scope(r) is None} <= set(hf.presets())
