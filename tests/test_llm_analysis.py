"""xpuc llm: the serving analysis (backends/llm/analysis.py), its step costs for the simulator
and the command, checked against hand-computed values on weightless presets."""

import json
import math

import pytest

import backends

from backends.llm.analysis import PREFILL_TOKENS, AnalysisError, report
from backends.llm.links import link
from backends.llm.serving import Step
from backends.llm.stepcost import ScheduledStepCost, kv_capacity_tokens
from xpuc.analysis import analyze, costs_of
from xpuc.cli import main

H100_USD_PER_S = 4.9 / 3600   # backends/targets/h100-sxm.toml: $4.90 per chip-hour


@pytest.fixture(scope="module")
def small():
    """Llama-3-8B on one H100: 8 requests of 128 + 32 tokens."""
    costs = costs_of("llama-3-8b", "h100-sxm")
    return costs, report(costs, 8, 128, 32)


def test_kv_bytes_per_token_follow_gqa_heads_head_dim_layers_and_format():
    assert costs_of("llama-3-70b", "h100-sxm").kv_bytes_per_token(100) == 2 * 80 * 8 * 128 * 2
    assert costs_of("llama-3-70b", "h100-sxm", "fp8").kv_bytes_per_token(100) == 2 * 80 * 8 * 128 * 1
    assert costs_of("llama-2-7b", "h100-sxm").kv_bytes_per_token(10) == 2 * 32 * 32 * 128 * 2   # no GQA


def test_throughput_price_and_energy_come_from_the_passes(small):
    costs, r = small
    decode = costs.step(8, 1, 128 + 16)                      # the mean context
    prefill = costs.step(8, 128, 0)                          # 8 x 128 tokens: one chunk
    assert (r.chips, r.deployment) == (1, {"tp": 1, "pp": 1, "ep": False})
    assert r.ttft_s == prefill.latency_s
    assert r.tpot_s == decode.latency_s and r.tokens_per_s_per_user == pytest.approx(1 / decode.latency_s)
    time = prefill.latency_s + 31 * decode.latency_s         # one stage: the period is the latency
    assert r.tokens_per_s == pytest.approx(8 * 32 / time)
    assert r.tokens_per_s_per_chip == r.tokens_per_s
    assert r.usd_per_mtok == pytest.approx(H100_USD_PER_S * time / (8 * 32) * 1e6)
    assert r.joules_per_token == pytest.approx((prefill.energy_j + 31 * decode.energy_j) / (8 * 32))


def test_prefill_runs_in_chunks_of_whole_prompts_overlapped_in_the_pipeline():
    costs = costs_of("llama-3-8b", "h100-sxm")
    per_chunk = PREFILL_TOKENS // 2048                      # 4 prompts of 2048 tokens
    passes = costs.prefill(10, 2048)                         # 2 chunks of 4, then one of 2
    assert [(p.steady.tokens_per_pass, n) for p, n in passes] == [(per_chunk * 2048, 2), (2 * 2048, 1)]
    four, two = passes[0][0], passes[1][0]
    assert costs.prefill_s(10, 2048) == pytest.approx(four.steady.period_s + four.latency_s + two.latency_s)


def test_decode_costs_more_with_a_longer_context():
    short = analyze("llama-3-8b", "h100-sxm", batch=4, prompt_len=256, gen_len=16)
    long = analyze("llama-3-8b", "h100-sxm", batch=4, prompt_len=4096, gen_len=16)
    assert long.tpot_s > short.tpot_s


def test_the_largest_batch_fills_the_fullest_chip_with_kv(small):
    costs, r = small
    one = costs.step(1, 1, 128 + 32 - 1)                     # one sequence at the full context
    (m,) = one.memory
    assert m.kv == pytest.approx(160 * 2 * 32 * 8 * 128 * 2)  # 160 positions of K and V, 32 layers
    assert r.max_batch == min(1024, int((m.free + m.kv) // m.kv))


def test_bad_lengths_are_one_error():
    with pytest.raises(AnalysisError, match="batch must be a whole number"):
        analyze("llama-3-8b", "h100-sxm", batch=0)


# --------------------------------------------------------------------------- simulator costs
def test_a_step_interpolates_the_pass_and_adds_its_kv_reads():
    cost = ScheduledStepCost(tokens=[1, 4, 16], pass_s=[1.0, 2.5, 4.0], pass_j=[10.0, 25.0, 40.0], batches=[1, 4],
                             read_s=[1e-3, 4e-3], read_j=[1e-2, 4e-2], schedules=7)
    assert cost.step_s(Step(2, 2, 100, 102)) == pytest.approx(1.5 + 100 * 2e-3)
    assert cost.step_j(Step(2, 2, 100, 102)) == pytest.approx(15.0 + 100 * 2e-2)  # energies, the same lines
    assert cost.step_s(Step(32, 1, 0, 0)) == pytest.approx(4.0 + (4.0 - 2.5) * (32 - 16) / 12)  # the last line extends
    assert cost.step_s(Step(4, 8, 10, 0)) == pytest.approx(2.5 + 10 * (1e-3 + 3e-3 * 7 / 3))


def test_the_grid_reads_schedules_of_the_deployment():
    costs = costs_of("llama-3-8b", "h100-sxm")
    cost = ScheduledStepCost.build(costs, 64, 4, 512)
    assert cost.tokens == [1, 4, 16, 64] and cost.batches == [1, 4]
    assert cost.pass_s[1] == costs.step(1, 4, 0).latency_s
    assert cost.pass_j[1] == costs.dynamic_j(costs.step(1, 4, 0))
    slope = (costs.step(4, 1, 511).latency_s - costs.step(4, 1, 1).latency_s) / (4 * 510)
    assert cost.read_s[1] == pytest.approx(slope)
    energy = (costs.dynamic_j(costs.step(4, 1, 511)) - costs.dynamic_j(costs.step(4, 1, 1))) / (4 * 510)
    assert cost.read_j[1] == pytest.approx(energy)


def test_kv_capacity_is_the_free_memory_over_one_tokens_kv():
    costs = costs_of("llama-3-8b", "h100-sxm")
    (m,) = costs.step(1, 1, 1023).memory
    per_token = 2 * 32 * 8 * 128 * 2                        # one chip, one stage
    assert kv_capacity_tokens(costs, 1024) == int((m.free + m.kv) / per_token)


def test_a_link_moves_bytes_after_its_latency():
    rdma = link("rdma-400g")
    assert rdma.transfer_s(50e9) == pytest.approx(1 + 2e-6)   # 400 Gb/s = 50 GB/s


# ------------------------------------------------------------------------------------ command
def test_the_command_prints_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["llm", "llama-3-8b", "-t", "h100-sxm", "--batch", "8", "--prompt-len", "128", "--gen-len", "32",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "time to first token" in text and "largest batch that fits" in text
    report = json.loads(out.read_text())
    for key in ("ttft_s", "tpot_s", "tokens_per_s_per_user", "tokens_per_s", "tokens_per_s_per_chip", "usd_per_mtok",
                "joules_per_token", "chips", "deployment", "memory_per_chip", "max_batch"):
        assert key in report
    assert report["tokens_per_s_per_user"] == pytest.approx(1 / report["tpot_s"])
    m = report["memory_per_chip"][0]
    assert m["weights"] + m["kv"] + m["activations"] + m["reserve"] + m["free"] == pytest.approx(m["capacity"])


def test_expert_parallelism_reaches_the_report_and_the_replica(tmp_path, capsys):
    """Mixtral on 8 H100s with --ep: both phases cut the experts (the deployment says so, in
    text and JSON), the serving replica keeps the cut, and the Python API gives the same."""
    out = tmp_path / "r.json"
    assert main(["llm", "mixtral-8x7b", "-t", "h100-sxm", "--tp", "8", "--ep", "--batch", "8", "--prompt-len", "128",
                 "--gen-len", "8", "--rate", "5", "--requests", "10", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "deployment: 8 chip(s), tp 8 x pp 1, experts over each stage's tp chips (ep)" in text
    result = json.loads(out.read_text())
    assert result["deployment"] == result["prefill_deployment"] == {"tp": 8, "pp": 1, "ep": True}
    assert result["serving"]["pool"]["deployment"] == {"tp": 8, "pp": 1, "ep": True}
    assert analyze("mixtral-8x7b", "h100-sxm", tp=8, batch=8, prompt_len=128, gen_len=8, ep=True).tpot_s == \
        pytest.approx(result["tpot_s"])


def test_traffic_is_simulated_with_slos(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["llm", "llama-3-8b", "-t", "h100-sxm", "--batch", "4", "--prompt-len", "128", "--gen-len", "16",
                 "--rate", "5", "--requests", "50", "--slo-ttft", "10", "--chunk", "512", "--json", str(out)]) == 0
    serving = json.loads(out.read_text())["serving"]
    assert serving["requests"] == 50 and serving["slo"]["attainment"] == 1.0
    assert serving["pool"]["chips"] == 1 and math.isfinite(serving["tpot_s"]["p99"])
    assert "TTFT p50 / p90 / p99" in capsys.readouterr().out


def test_disaggregation_reports_both_pools_the_transfer_and_each_target_alone(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["llm", "llama-3-8b", "--prefill-on", "h100-sxm", "--decode-on", "h200", "--prompt-len", "128",
                 "--gen-len", "8", "--requests", "20", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    split = result["disaggregated"]
    assert split["prefill_pool"]["target"] == "h100-sxm" and split["decode_pool"]["target"] == "h200"
    transfer = 2e-6 + 128 * (2 * 32 * 8 * 128 * 2) / 50e9   # no queueing at 1 request/s
    assert split["kv_transfer_s"]["p50"] == pytest.approx(transfer)
    assert set(result["colocated"]) == {"h100-sxm", "h200"}
    text = capsys.readouterr().out
    assert "1 h100-sxm -> 1 h200" in text and "$ per million tokens" in text and "joules per token" in text
    h100, h200 = (backends.load_target(t) for t in ("h100-sxm", "h200"))
    tokens = split["output_tokens_per_s"] * split["makespan_s"]  # both pools held for the whole makespan
    usd = (h100.price.usd_per_second() + h200.price.usd_per_second()) * split["makespan_s"]
    joules = (h100.power.idle_w + h200.power.idle_w) * split["makespan_s"] + split["dynamic_j"]
    assert split["costs"]["usd_per_mtok"] == pytest.approx(usd / tokens * 1e6)
    assert split["costs"]["joules_per_token"] == pytest.approx(joules / tokens)
    assert result["colocated"]["h200"]["costs"]["chips"] == 1 and split["costs"]["chips"] == 2


@pytest.mark.parametrize("argv, message", [
    (["llm", "llama-3-8b"], "needs -t TARGET"),
    (["llm", "llama-3-8b", "-t", "h100-sxm", "--batch", "0"], "batch must be a whole number"),
    (["llm", "no-such-model", "-t", "h100-sxm"], "no such file, nor a bundled model config"),
    (["llm", "llama-3-70b", "-t", "h100-sxm", "--chips", "1"], "does not fit h100-sxm chips with chips 1"),
    (["llm", "llama-3-8b", "--prefill-on", "h100-sxm"], "needs both --prefill-on and --decode-on"),
    (["llm", "llama-3-8b", "-t", "h100-sxm", "--rate", "1", "--trace", "x.csv"], "either --rate"),
    (["llm", "llama-3-8b", "-t", "h100-sxm", "--ep"], "--ep cuts mixtures of experts by experts, and"),
    (["llm", "mixtral-8x7b", "-t", "h100-sxm", "--tp", "3", "--ep"], "--tp 3 does not divide 8 experts"),
    (["llm", "mixtral-8x7b", "--prefill-on", "h100-sxm", "--decode-on", "h200", "--ep"], "not -t/--chips/--tp/--pp/--ep"),
])
def test_bad_requests_are_one_line_and_exit_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("export", ["llama_dynamo.onnx", "cache/llama_dynamo.onnx"])
def test_onnx_exports_with_and_without_a_cache(export):
    """The fixtures' Llama (scripts/export_fixtures.py): 2 layers, 2 KV heads of 16, float32."""
    r = analyze(f"tests/fixtures/models/{export}", "h100-sxm", batch=2, prompt_len=8, gen_len=8)
    assert r.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4
    assert r.tpot_s > 0 and r.chips == 1
