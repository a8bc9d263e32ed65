"""Prefill and decode-step graphs derived from prefill-only decoders (ir/passes/decode.py),
and the in-place KV cache form a runtime runs (ir/passes/kv_cache.py).

The derived graphs are ordinary ONNX (opset 23 past/present form), so onnxruntime runs
them: a prefill then decode steps must give the logits onnxruntime computes by recomputing
the whole sequence with the original model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import backends
import ir
from backends.codegen import lower
from backends.work import graph_work
from conftest import FIXTURES, MODELS, ort_session
from frontends import hf
from frontends import onnx as onnx_frontend
from ir.passes import DecodeStep, InPlaceKVCache, optimize
from ir.passes.decode import DecodeError, _holding_axis

S = 16
"""The sequence length the prefill-only graphs are bound at: the derived steps serve positions below it."""
TINY = json.loads((FIXTURES / "hf_tiny_configs.json").read_text())["configs"]


def _template(source) -> ir.Graph:
    if isinstance(source, dict):
        return optimize(hf.load(source, input_shapes={"input_ids": (1, S)}, weights="random"))
    return optimize(onnx_frontend.load(MODELS / f"{source}.onnx", input_shapes={"input_ids": (1, S)}))


def _full_model(source):
    return ir.to_onnx(hf.load(source, weights="random")) if isinstance(source, dict) else MODELS / f"{source}.onnx"


def _steps_match_recomputation(source, prompt: int = 10, steps: int = 3) -> None:
    """Prefill ``prompt`` tokens, decode ``steps`` more; every logit row against onnxruntime on the whole sequence."""
    template = _template(source)
    prefill, decode = DecodeStep(prompt, past=False)(template.copy()), DecodeStep(1)(template.copy())
    vocab = template.type_of("logits").shape[-1]
    ids = np.random.default_rng(0).integers(0, vocab, (1, prompt + steps)).astype(np.int64)
    full, run_prefill, run_decode = (ort_session(m) for m in (_full_model(source), ir.to_onnx(prefill),
                                                                ir.to_onnx(decode)))
    logits, *cache = run_prefill.run(None, {"input_ids": ids[:, :prompt]})
    np.testing.assert_allclose(logits, full.run(None, {"input_ids": ids[:, :prompt]})[0], rtol=1e-4, atol=1e-4)
    for t in range(prompt, prompt + steps):
        feeds = {"input_ids": ids[:, t:t + 1], **dict(zip(decode.inputs[1:], cache))}
        logits, *cache = run_decode.run(None, feeds)
        assert cache[0].shape[2] == t + 1
        want = full.run(None, {"input_ids": ids[:, :t + 1]})[0][:, -1:]
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["llama_dynamo", "mistral_legacy", "gpt2_legacy", "phi_dynamo", "gemma_dynamo",
                                  "bitnet_legacy"])
def test_steps_of_a_fixture_export_match_recomputing_the_sequence(name):
    """Rotary tables, a sliding window (8 < 13 positions), learned positions, partial rotary,
    a tied head's reshapes, BitNet's sub-norms: each follows the step's positions."""
    _steps_match_recomputation(name)


@pytest.mark.parametrize("family", ["gemma2", "gptj", "mixtral", "qwen2"])
def test_steps_of_a_config_graph_match_recomputing_the_sequence(family):
    """Softcaps and alternating windows, interleaved partial rotary, routed experts, qkv biases."""
    _steps_match_recomputation(TINY[family])


def test_decode_step_takes_and_returns_the_cache_in_onnx_form():
    graph = DecodeStep(1)(_template("llama_dynamo"))
    assert graph.inputs == ["input_ids", "past_key_values.0.key", "past_key_values.0.value",
                            "past_key_values.1.key", "past_key_values.1.value"]
    assert graph.outputs == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert graph.type_of("input_ids").shape == (1, 1)
    assert graph.type_of("past_key_values.0.key").shape == (1, 2, "past", 16)  # 2 kv heads of 16
    assert graph.type_of("present.1.value").shape == (1, 2, "past+1", 16)
    assert graph.type_of("logits").shape == (1, 1, 256)
    attention = [n for n in graph.nodes if n.op_type == "Attention"]
    assert [n.inputs[4:6] for n in attention] == [["past_key_values.0.key", "past_key_values.0.value"],
                                                  ["past_key_values.1.key", "past_key_values.1.value"]]
    rotary = [n for n in graph.nodes if n.op_type == "RotaryEmbedding"]
    assert all(len(n.inputs) == 4 and graph.type_of(n.inputs[1]).shape == (S, 8) for n in rotary)


def test_the_sequence_is_re_spelled_on_its_axis_not_on_equal_dims():
    """Bound at S = 16 = head_dim, the target [1, 16, -1, 16] becomes [1, 4, -1, 16] for a
    4-token step: only the axis the sequence runs along changes."""
    graph = DecodeStep(4, past=False)(_template("llama_dynamo"))
    targets = {tuple(graph.const_data(n.inputs[1])) for n in graph.nodes if n.op_type == "Reshape"}
    assert (1, 4, -1, 16) in targets and not any(16 in t[:2] for t in targets)


def test_a_reshape_keeps_the_axis_holding_the_sequence():
    assert _holding_axis((1, 16, 64), 1, (1, 16, 4, 16)) == 1
    assert _holding_axis((2, 16, 64), 1, (32, 64)) == 0  # merged with the batch
    assert _holding_axis((16, 256), 0, (1, 16, 256)) == 1
    assert _holding_axis((1, 16, 64), 1, (1, 4, 4, 64)) is None  # split: no one axis holds it


def test_prefill_returns_the_keys_and_values_it_produced():
    graph = DecodeStep(5, past=False)(_template("gpt2_dynamo"))
    assert graph.inputs == ["input_ids"]
    assert [graph.type_of(o).shape for o in graph.outputs] == [(1, 5, 256)] + [(1, 4, 5, 16)] * 4


@pytest.mark.parametrize("source, message", [("mamba_dynamo", "no fused Attention"),
                                             ("bert_dynamo", "see later ones .* not a decoder")])
def test_graphs_without_a_kv_cache_to_derive_are_refused(source, message):
    graph = optimize(onnx_frontend.load(MODELS / f"{source}.onnx", input_shapes={"input_ids": (1, S)}))
    with pytest.raises(DecodeError, match=message):
        DecodeStep(1)(graph)


def test_a_position_table_read_past_its_end_is_refused():
    """GPT-2's learned positions have 128 rows: bound at 140 the lookup cannot fold into a
    table, and a decode step reading it as if it did not depend on the position would be wrong."""
    graph = optimize(onnx_frontend.load(MODELS / "gpt2_dynamo.onnx", input_shapes={"input_ids": (1, 140)}))
    with pytest.raises(DecodeError, match="runs along the positions but is computed"):
        DecodeStep(1)(graph)


def test_a_graph_that_already_reads_a_cache_is_refused():
    graph = DecodeStep(1)(_template("llama_dynamo"))
    for name in list(graph.inputs[1:]):
        graph.values[name].type = ir.TensorType(graph.type_of(name).dtype, (1, 2, 3, 16))
    with pytest.raises(DecodeError, match="already reads a KV cache"):
        DecodeStep(1)(optimize(graph))


def test_decode_attention_work_counts_the_cached_keys():
    """With 15 cached positions one query row scores 16 keys: per head 2*16*16 (Q.K) + 2*16*16
    (P.V) + 5*16 FLOPs, 4 heads, so 4 * (512 + 512 + 80) = 4416 per layer."""
    graph = DecodeStep(1)(_template("llama_dynamo"))
    ir.bind_input_shapes(graph, {n: (1, 2, 15, 16) for n in graph.inputs[1:]})
    graph = optimize(graph)
    flops = [w.flops for w in graph_work(graph) if w.node.op_type == "Attention"]
    assert flops == [4416, 4416]
    schedule = backends.schedule(graph, backends.load_target("h100-sxm"))
    assert schedule.latency_s > 0


def test_the_in_place_cache_is_written_where_it_lives():
    """The step reads past_length and donated caches; each TensorScatter's output shares its
    cache's buffer, and moves only the new keys: 1 token x 2 heads x 16 dims x 4 bytes = 128 B."""
    graph = optimize(InPlaceKVCache(S)(DecodeStep(1)(_template("llama_dynamo"))))
    assert graph.inputs == ["input_ids", "past_length", "cache.0.key", "cache.0.value", "cache.1.key", "cache.1.value"]
    assert graph.outputs == ["logits"] and graph.type_of("cache.0.key").shape == (1, 2, S, 16)
    scatters = [n for n in graph.nodes if n.op_type == "TensorScatter"]
    aliases = lower(graph).aliases
    assert {aliases[n.outputs[0]] for n in scatters} == {"cache.0.key", "cache.0.value", "cache.1.key", "cache.1.value"}
    work = {w.node.name: w for w in graph_work(graph)}
    assert {(work[n.name].activation_bytes - 8, work[n.name].output_bytes) for n in scatters} == {(128, 128)}
