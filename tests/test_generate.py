"""Greedy generation with a KV cache (runtime/llm.py, ``xpuc generate``).

Every decoder fixture, exported with and without a cache, generates exactly the tokens
transformers generated from the same weights (recorded in greedy_tokens.json by
scripts/export_fixtures.py) and the tokens onnxruntime picks when it runs the export itself:
recomputing the whole sequence each token, or, for an export with a cache, stepping
through that export's own past/present inputs and outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import backends
import runtime
from conftest import FIXTURES, MODELS, manifest, ort_session
from runtime.llm import GenerationError, KVCache
from xpuc.cli import main

GREEDY = json.loads((MODELS / "greedy_tokens.json").read_text())["families"]
DECODERS = [f for f in manifest()["fixtures"] if f["family"] in GREEDY]


def _path(entry):
    return MODELS / entry["file"]


def _ort_tokens(entry, prompt: list[int], count: int) -> list[int]:
    """onnxruntime running the export: the whole (right-padded) sequence per token, or with a
    cache, the prompt then one token per step through the export's past/present values."""
    session, ids = ort_session(_path(entry)), list(prompt)
    if entry.get("kv_cache"):
        names = [i.name for i in session.get_inputs()][1:]
        heads, dim = entry["num_key_value_heads"], entry["hidden_size"] // entry["num_attention_heads"]
        past = {n: np.zeros((1, heads, 0, dim), np.float32) for n in names}
        fed = ids
        for _ in range(count):
            logits, *present = session.run(None, {"input_ids": np.array([fed], np.int64), **past})
            past = dict(zip(names, present))
            ids.append(int(np.argmax(logits[0, -1])))
            fed = ids[-1:]
        return ids[len(prompt):]
    static = entry["dynamic_mode"] != "batch+seq"
    for _ in range(count):
        feed = ids + [0] * (entry["traced_shape"][1] - len(ids) if static else 0)
        ids.append(int(np.argmax(session.run(None, {"input_ids": np.array([feed], np.int64)})[0][0, len(ids) - 1])))
    return ids[len(prompt):]


@pytest.mark.parametrize("entry", DECODERS, ids=lambda e: e["name"])
def test_generation_matches_transformers_and_onnxruntime(entry):
    want = GREEDY[entry["family"]]
    prompt, count = want["prompt_ids"], want["max_new_tokens"]
    llm = runtime.compile_llm(_path(entry), max_len=len(prompt) + count)
    assert llm.mode == ("recompute" if entry["family"] == "mamba" else "kv-cache")
    tokens = llm.generate(prompt, count).tokens
    assert tokens == want["tokens"]
    assert tokens == _ort_tokens(entry, prompt, count)


def test_a_config_decodes_as_it_recomputes():
    """A config graph (Mistral, sliding window 5) gives the same tokens from its KV cache as
    from recomputing the sequence, past the window."""
    config = json.loads((FIXTURES / "hf_tiny_configs.json").read_text())["configs"]["mistral"]
    cached = runtime.compile_llm(config, max_len=16).generate([3, 1, 4, 1, 5], 11).tokens
    assert cached == runtime.compile_llm(config, max_len=16, kv_cache=False).generate([3, 1, 4, 1, 5], 11).tokens


def test_the_cache_is_laid_out_once_and_written_in_place():
    """2 layers x (keys, values) x [1, 2 kv heads, 32 positions, 16] float32 = 4 x 4096 bytes
    in one arena; generation writes positions 0..prompt+new-2 there and nothing else."""
    llm = runtime.compile_llm(MODELS / "llama_dynamo.onnx", max_len=32)
    cache = llm.cache
    assert cache.nbytes == 4 * 4096 and sorted(cache.plan.offsets.values()) == [0, 4096, 8192, 12288]
    arena = cache.arena.ctypes.data
    llm.generate([1, 2, 3], 5)
    assert cache.arena.ctypes.data == arena and cache.buffers["cache.0.key"].ctypes.data == arena
    written = np.any(cache.buffers["cache.1.value"] != 0, axis=(0, 1, 3))
    assert written.tolist() == [True] * 7 + [False] * 25
    assert llm.decode.model.output_names == ["logits"]


def test_kv_cache_plan_places_buffers_apart():
    import ir
    cache = KVCache({"a": ir.TensorType(ir.DType.FLOAT32, (1, 2, 3)), "b": ir.TensorType(ir.DType.FLOAT16, (5,))})
    assert cache.buffers["a"].shape == (1, 2, 3) and cache.buffers["b"].dtype == np.float16
    assert cache.plan.offsets == {"a": 0, "b": 64} and cache.nbytes == 128  # 24 bytes, 64-byte aligned


def test_emulated_costs_are_those_of_the_compiled_steps():
    """TTFT is the prefill's schedule on the target, each later token the decode step's."""
    llm = runtime.compile_llm(MODELS / "gpt2_dynamo.onnx", max_len=12, target="tpu-v4")
    result = llm.generate([5, 6, 7], 4)
    target = backends.load_target("tpu-v4")
    prefill = backends.schedule(llm.prefill(3).executor.graph, target)
    decode = backends.schedule(llm.decode.executor.graph, target)
    assert result.ttft_s == pytest.approx(prefill.latency_s) and len(result.step_s) == 3
    assert result.step_s == pytest.approx([decode.latency_s] * 3)


@pytest.mark.parametrize("prompt, count, message", [
    ([1, 2, 256], 2, "outside the vocabulary 0..255"),
    ([], 2, "non-empty list of integer token ids"),
    ([1.5], 2, "integer token ids"),
    ([1, 2], 0, "positive integer"),
    ([1] * 10, 7, "exceed max_len 16"),
])
def test_bad_generation_requests_are_refused(prompt, count, message):
    llm = runtime.compile_llm(MODELS / "qwen2_legacy.onnx", max_len=16)
    with pytest.raises(GenerationError, match=message):
        llm.generate(prompt, count)


def test_cli_generates_and_reports_target_costs(tmp_path, capsys):
    out = tmp_path / "gen.json"
    assert main(["generate", str(MODELS / "phi_dynamo.onnx"), "--prompt-ids", "5,17,101,42,230,7",
                 "--max-new-tokens", "6", "-t", "h100-sxm", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["tokens"] == GREEDY["phi"]["tokens"][:6] and report["mode"] == "kv-cache"
    assert report["ttft_s"] > 0 and len(report["step_s"]) == 5 and report["target"] == "h100-sxm"
    assert "emulated on h100-sxm: time to first token" in text


@pytest.mark.parametrize("args, message", [
    (["--prompt-ids", "1,x"], "comma-separated integers"),
    (["--prompt-ids", "1,2", "--max-len", "2"], "exceed max_len 2"),
    ([str(MODELS / "bert_dynamo.onnx"), "--prompt-ids", "1,2"], "not a decoder"),
    (["no-such-model", "--prompt-ids", "1"], "no such file"),
])
def test_cli_refuses_bad_input_in_one_line(args, message, capsys):
    assert main(["generate", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["llama_dynamo", "gpt2_legacy", "mistral_legacy", "phi_dynamo"])
def test_an_export_with_a_cache_runs_with_a_past(name):
    """The export's own past/present path, compiled as it is: 3 new tokens after 5 cached."""
    path = MODELS / "cache" / f"{name}.onnx"
    entry = next(f for f in manifest()["fixtures"] if f["file"] == f"cache/{name}.onnx")
    heads, dim = entry["num_key_value_heads"], entry["hidden_size"] // entry["num_attention_heads"]
    session = ort_session(path)
    cache = [i.name for i in session.get_inputs()][1:]
    model = runtime.compile(path, input_shapes={"input_ids": (1, 3), **dict.fromkeys(cache, (1, heads, 5, dim))})
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 256, (1, 3)).astype(np.int64),
             **{n: rng.standard_normal((1, heads, 5, dim)).astype(np.float32) for n in cache}}
    outputs = model.run(feeds)
    assert [o.shape for o in outputs[1:]] == [(1, heads, 8, dim)] * len(cache)
    for ours, ref in zip(outputs, session.run(None, feeds)):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
