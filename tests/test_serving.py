"""Serving simulation: engine-loop mechanisms checked against hand-computed timelines.

The step cost is affine, ``A + B * tokens + C * kv_read`` (milliseconds), so each expected
time below is a short sum written out next to its assertion.
"""

import math

import numpy as np
import pytest

from backends.llm.serving import (Limits, Pool, Provision, Request, ServingError, Step, poisson_requests, read_trace,
                                  simulate, simulate_disaggregated)

A, B, C = 1e-3, 1e-5, 0.0
E = 0.5
"""Dynamic joules per new token of an iteration."""


class Affine:
    def __init__(self, a=A, b=B, c=C):
        self.a, self.b, self.c, self.steps = a, b, c, []

    def step_s(self, step: Step) -> float:
        self.steps.append(step)
        return self.a + self.b * step.tokens + self.c * step.kv_read

    def step_j(self, step: Step) -> float:
        return E * step.tokens


BIG = Limits(kv_capacity_tokens=1 << 20)


def test_one_request_prefill_then_decodes():
    report = simulate([Request(0.0, 100, 5)], Pool(Affine(), BIG))
    prefill = A + 100 * B            # 2.0 ms
    decode = A + 1 * B               # 1.01 ms, four of them
    assert report.ttft_s["p50"] == pytest.approx(prefill)
    assert report.e2e_s["p50"] == pytest.approx(prefill + 4 * decode)
    assert report.tpot_s["p50"] == pytest.approx(decode)
    assert report.output_tokens_per_s == pytest.approx(5 / (prefill + 4 * decode))


def test_dollars_and_joules_per_token_hold_the_chips_for_the_makespan():
    """One request of 100 prompt + 5 output tokens on 2 chips at $1 per chip-second and 10 W
    idle, and 1 chip of another pool at $2 and 20 W: the makespan is 2.0 + 4 x 1.01 ms; the
    iterations ran 100 + 4 x 1 new tokens at 0.5 J each."""
    report = simulate([Request(0.0, 100, 5)], Pool(Affine(), BIG))
    makespan = A + 100 * B + 4 * (A + B)
    assert report.makespan_s == pytest.approx(makespan) and report.dynamic_j == pytest.approx(E * 104)
    report.with_costs([Provision(2, 1.0, 10.0), Provision(1, 2.0, 20.0)])
    assert report.costs["chips"] == 3
    assert report.costs["usd_per_mtok"] == pytest.approx((2 * 1.0 + 1 * 2.0) * makespan / 5 * 1e6)
    assert report.costs["joules_per_token"] == pytest.approx(((2 * 10 + 20) * makespan + E * 104) / 5)
    assert report.costs["tokens_per_s_per_chip"] == pytest.approx(5 / makespan / 3)


def test_decode_reads_a_growing_cache():
    cost = Affine(c=1e-6)
    report = simulate([Request(0.0, 100, 5)], Pool(cost, BIG))
    reads = [s.kv_read for s in cost.steps]
    assert reads == [0, 100, 101, 102, 103]
    assert [s.attention_pairs for s in cost.steps] == [100 * 101 // 2, 101, 102, 103, 104]
    assert report.e2e_s["p50"] == pytest.approx(A + 100 * B + 4 * (A + B) + 1e-6 * (100 + 101 + 102 + 103))


def test_simultaneous_prompts_share_a_prefill_and_batch_their_decodes():
    cost = Affine()
    report = simulate([Request(0.0, 100, 3), Request(0.0, 100, 3)], Pool(cost, BIG))
    assert [(s.tokens, s.sequences) for s in cost.steps] == [(200, 2), (2, 2), (2, 2)]
    assert report.ttft_s["p99"] == pytest.approx(A + 200 * B)
    assert report.e2e_s["max"] == pytest.approx(A + 200 * B + 2 * (A + 2 * B))


def test_an_arrival_waits_for_the_iteration_in_flight_then_its_prefill_pauses_decodes():
    cost = Affine()
    report = simulate([Request(0.0, 100, 4), Request(2.5e-3, 100, 2)], Pool(cost, BIG))
    # r0: prefill ends 2.0 ms, decode ends 3.01 ms (>= 2.5: r1 is admitted then)
    # r1: prefill 3.01 -> 5.01 ms; then both decode: 6.03 ms (r1 done), r0's last alone: 7.04 ms
    t_r1_first = 2e-3 + (A + B) + (A + 100 * B)
    assert report._per_request[0][1] == pytest.approx(t_r1_first - 2.5e-3)
    assert [(s.tokens, s.sequences) for s in cost.steps] == [(100, 1), (1, 1), (100, 1), (2, 2), (1, 1)]
    assert report.e2e_s["max"] == pytest.approx(t_r1_first + (A + 2 * B) + (A + B))


def test_a_full_kv_cache_preempts_the_newest_request_and_recomputes_it():
    # 8 blocks of 16 tokens. Both 64-token prompts are admitted (4 blocks each); the first decode
    # step needs a 5th block for each: none is free, so r1 is preempted and held until r0 ends.
    cost = Affine()
    report = simulate([Request(0.0, 64, 32), Request(0.0, 64, 32)],
                      Pool(cost, Limits(kv_capacity_tokens=128, block_tokens=16)))
    assert report.preemptions == 1
    shapes = [(s.tokens, s.sequences, s.kv_read) for s in cost.steps]
    assert shapes[0] == (128, 2, 0)                              # both prompts
    assert shapes[1:32] == [(1, 1, 64 + j) for j in range(31)]   # r0 alone: 31 decodes
    assert shapes[32] == (65, 1, 0)                              # r1 recomputes prompt + first token
    assert shapes[33:] == [(1, 1, 65 + j) for j in range(30)]    # r1's 30 remaining decodes
    r0_end = (A + 128 * B) + 31 * (A + B)
    assert report.e2e_s["p50"] == pytest.approx((r0_end + (r1_end := r0_end + (A + 65 * B) + 30 * (A + B))) / 2)
    assert report.ttft_s["max"] == pytest.approx(A + 128 * B)    # r1's first token came before the preemption
    assert r1_end == pytest.approx(report.makespan_s)


def test_chunked_prefill_fills_the_token_budget_next_to_decodes():
    cost = Affine()
    limits = Limits(kv_capacity_tokens=1 << 20, chunk_tokens=64)
    simulate([Request(0.0, 10, 4), Request(0.0, 100, 2)], Pool(cost, limits))
    # it 1: r0's 10 tokens + 54 of r1; it 2: r0 decode + r1's last 46 tokens; then both decode
    assert [(s.tokens, s.sequences) for s in cost.steps] == [(64, 2), (47, 2), (2, 2), (1, 1)]
    assert cost.steps[1].attention_pairs == 11 + (46 * 54 + 46 * 47 // 2)


def test_max_sequences_and_prefill_budget_limit_admission():
    cost = Affine()
    simulate([Request(0.0, 10, 2)] * 3, Pool(cost, Limits(kv_capacity_tokens=1 << 20, max_sequences=2)))
    assert [(s.tokens, s.sequences) for s in cost.steps] == [(20, 2), (2, 2), (10, 1), (1, 1)]
    cost = Affine()
    simulate([Request(0.0, 60, 1)] * 3, Pool(cost, Limits(kv_capacity_tokens=1 << 20, max_prefill_tokens=128)))
    assert [s.tokens for s in cost.steps] == [120, 60]


def test_replicas_split_the_arrivals():
    cost = Affine()
    one = simulate([Request(0.0, 100, 3)] * 2, Pool(cost, BIG, replicas=2))
    assert one.e2e_s["max"] == pytest.approx(A + 100 * B + 2 * (A + B))   # each alone on its replica


def test_disaggregation_moves_the_cache_then_decodes_elsewhere():
    prefill, decode = Affine(), Affine()
    report = simulate_disaggregated([Request(0.0, 100, 5)], Pool(prefill, BIG), Pool(decode, BIG),
                                    transfer_s=lambda tokens: 1e-4 + tokens * 4e-6)
    transfer = 1e-4 + 100 * 4e-6                       # 0.5 ms
    assert [s.tokens for s in prefill.steps] == [100]
    assert [s.kv_read for s in decode.steps] == [100, 101, 102, 103]
    assert report.ttft_s["p50"] == pytest.approx(A + 100 * B)
    assert report.kv_transfer_s["p50"] == pytest.approx(transfer)
    assert report.e2e_s["p50"] == pytest.approx(A + 100 * B + transfer + 4 * (A + B))


def test_transfers_leave_a_prefill_replica_one_at_a_time():
    report = simulate_disaggregated([Request(0.0, 100, 2)] * 2, Pool(Affine(), BIG), Pool(Affine(), BIG),
                                    transfer_s=lambda tokens: 1e-3)
    assert sorted(report._per_request[0]) == pytest.approx([A + 200 * B] * 2)
    assert report.kv_transfer_s["max"] == pytest.approx(2e-3)   # the second waits for the first


def test_slo_goodput_counts_requests_meeting_both_limits():
    report = simulate([Request(0.0, 100, 3), Request(0.0, 100, 3)], Pool(Affine(), BIG))
    ttft = A + 200 * B
    assert report.with_slo(ttft_s=ttft * 1.01).slo["attainment"] == 1.0
    assert report.with_slo(ttft_s=ttft * 0.99).slo["attainment"] == 0.0
    assert report.with_slo(tpot_s=1.0).slo["goodput_requests_per_s"] == pytest.approx(2 / report.makespan_s)


def test_poisson_arrivals_are_seeded_with_the_given_mean_gap():
    a = poisson_requests(50.0, 20_000, 128, 64, seed=7)
    assert a == poisson_requests(50.0, 20_000, 128, 64, seed=7)
    gaps = np.diff([r.arrival_s for r in a])
    assert gaps.mean() == pytest.approx(1 / 50.0, rel=0.03)
    assert a[0].arrival_s == 0.0


def test_trace_files_and_their_errors(tmp_path):
    good = tmp_path / "t.csv"
    good.write_text("arrival_s,prompt_tokens,output_tokens\n0.5,10,3\n0.1,20,4\n")
    assert read_trace(good) == [Request(0.1, 20, 4), Request(0.5, 10, 3)]
    for text in ("a,b\n1,2\n", "arrival_s,prompt_tokens,output_tokens\nx,1,1\n",
                 "arrival_s,prompt_tokens,output_tokens\n-1,1,1\n"):
        (bad := tmp_path / "bad.csv").write_text(text)
        with pytest.raises(ServingError):
            read_trace(bad)
    with pytest.raises(ServingError, match="cannot read"):
        read_trace(tmp_path / "missing.csv")


def test_a_request_larger_than_the_cache_is_refused():
    with pytest.raises(ServingError, match="KV blocks"):
        simulate([Request(0.0, 1000, 100)], Pool(Affine(), Limits(kv_capacity_tokens=512)))
    with pytest.raises(ServingError):
        Limits(kv_capacity_tokens=0)
    with pytest.raises(ServingError):
        poisson_requests(0.0, 10, 1, 1)


def test_heavy_load_finishes_every_request_with_sane_metrics():
    requests = poisson_requests(200.0, 2000, 512, 128, seed=1)
    report = simulate(requests, Pool(Affine(c=2e-9), Limits(kv_capacity_tokens=60_000, chunk_tokens=2048)))
    assert report.requests == 2000 and not math.isnan(report.e2e_s["p99"])
    assert report.ttft_s["p50"] <= report.ttft_s["p90"] <= report.ttft_s["p99"]
    assert report.output_tokens_per_s == pytest.approx(2000 * 128 / report.makespan_s)
