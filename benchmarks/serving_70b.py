"""Serving simulation speed: 10,000 Poisson requests on a Llama-3-70B deployment of 8 H100s (tp 8)
(issue 9: event-driven and fast, seconds). Measures, in the same run, the step-cost grid (made
once) and the simulation, each also as a ratio to one ``backends.schedule`` of the model's
decode step (the unit the grid is made of), and prints the serving metrics.

Run: .venv/bin/python benchmarks/serving_70b.py [--requests N] [--rate R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backends  # noqa: E402
from backends.llm.serving import poisson_requests, simulate  # noqa: E402
from backends.llm.stepcost import plan_pool  # noqa: E402
from frontends.llm_graphs import graph  # noqa: E402
from machine import describe  # noqa: E402
from xpuc.analysis import costs_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=4.0)
    args = parser.parse_args()
    print(describe())
    g = graph("llama-3-70b", "native", 64, 1, 1024)
    start = time.perf_counter()
    backends.schedule(g, backends.load_target("h100-sxm"))
    one = time.perf_counter() - start
    requests = poisson_requests(args.rate, args.requests, 1024, 256, seed=0)
    start = time.perf_counter()
    plan = plan_pool(costs_of("llama-3-70b", "h100-sxm", chips=8, tp=8), 1280, 1024)
    grid = time.perf_counter() - start
    start = time.perf_counter()
    report = simulate(requests, plan.pool).with_slo(2.0, 0.1)
    sim = time.perf_counter() - start
    print(f"deployment: {plan.chips} x h100-sxm (tp {plan.deployment['tp']} x pp {plan.deployment['pp']}), "
          f"KV capacity {plan.kv_capacity_tokens:,} tokens")
    print(f"one schedule of the decode step: {one:.2f} s")
    print(f"step-cost grid: {plan.cost.schedules} schedules in {grid:.1f} s ({grid / one:.1f} schedules' time)")
    print(f"simulation of {args.requests:,} requests (Poisson {args.rate:g}/s, 1024 + 256 tokens): {sim:.2f} s "
          f"({sim / one:.1f} schedules' time)")
    print(f"TTFT p50/p90/p99 {report.ttft_s['p50']:.3f}/{report.ttft_s['p90']:.3f}/{report.ttft_s['p99']:.3f} s; "
          f"TPOT p50/p90/p99 {report.tpot_s['p50'] * 1e3:.1f}/{report.tpot_s['p90'] * 1e3:.1f}/"
          f"{report.tpot_s['p99'] * 1e3:.1f} ms; {report.output_tokens_per_s:,.0f} output tokens/s; "
          f"goodput (TTFT <= 2 s, TPOT <= 100 ms) {report.slo['goodput_requests_per_s']:.3f} requests/s "
          f"({report.slo['attainment']:.0%}); {report.preemptions} preemptions")


if __name__ == "__main__":
    main()
