"""``xpuc llm``: the serving analysis of ``backends.llm.analysis`` and, with traffic, the serving
simulation of ``backends.llm.serving`` on step costs from the cost model, co-located or
disaggregated (docs/llm.md)."""

from __future__ import annotations

import json
from pathlib import Path

from backends.deployment import Deployment
from backends.llm import links, serving
from backends.llm.analysis import AnalysisError, Costs, LLMReport
from backends.llm.stepcost import PoolPlan, plan_pool
from backends.report import si

from .analysis import analyze, costs_of

DEFAULT_RATE = 1.0
"""Requests per second simulated for a disaggregated comparison given no --rate or --trace."""


def run(args) -> int:
    disaggregated = _check(args)
    precision = args.precision or "native"
    if disaggregated:
        out = _disaggregated(args, precision)
    else:
        report = analyze(args.model, args.target, precision, args.chips, args.tp, args.pp, args.batch,
                         args.prompt_len, args.gen_len, ep=args.ep)
        print(format_report(report))
        out = report.to_dict()
        if args.rate is not None or args.trace:
            requests = _requests(args)
            plan = _plan(args, costs_of(args.model, args.target, precision, args.chips, args.tp, args.pp, ep=args.ep),
                         requests)
            print()
            print(_traffic_line(args, requests))
            print(_pool_line("replica", plan))
            result = _simulate(args, requests, plan)
            print(format_serving({plan.target: result}))
            out["serving"] = {"pool": _pool_dict(plan), **result.to_dict()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _check(args) -> bool:
    """Whether the run is disaggregated; one clear error for options that do not go together."""
    split = args.prefill_on or args.decode_on
    if split and not (args.prefill_on and args.decode_on):
        raise AnalysisError("disaggregation needs both --prefill-on and --decode-on")
    if split and (args.target or args.chips or args.tp or args.pp or args.ep):
        raise AnalysisError("with --prefill-on/--decode-on, give each pool's chips as --prefill-chips/--decode-chips, "
                            "not -t/--chips/--tp/--pp/--ep")
    if not split and not args.target:
        raise AnalysisError("xpuc llm needs -t TARGET (or --prefill-on T1 --decode-on T2)")
    if not split and (args.prefill_chips or args.decode_chips):
        raise AnalysisError("--prefill-chips/--decode-chips go with --prefill-on/--decode-on")
    if args.rate is not None and args.trace:
        raise AnalysisError("give either --rate (Poisson arrivals) or --trace, not both")
    for name in ("prefill_chips", "decode_chips", "chunk", "max_seqs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise AnalysisError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return bool(split)


# ------------------------------------------------------------------------------- the analysis
def format_report(r: LLMReport) -> str:
    d, p = r.deployment, r.prefill_deployment
    prefill = "" if p == d else f"; prefill on {Deployment(**p).describe()} (the smallest it fits)"
    lines = [
        f"{r.model} on {r.target}, precision {r.precision}: batch {r.batch}, prompt {r.prompt_len} + "
        f"{r.gen_len} generated tokens",
        f"deployment: {r.chips} chip(s), {Deployment(**d).describe()}{prefill}",
        f"  time to first token    {si(r.ttft_s, 's')}  (prefill of the batch's prompts)",
        f"  time per output token  {si(r.tpot_s, 's')}  (decode step at context {r.prompt_len + r.gen_len // 2})",
        f"  tokens/s per user      {r.tokens_per_s_per_user:,.1f}",
        f"  tokens/s (deployment)  {r.tokens_per_s:,.1f} output, {r.tokens_per_s_total:,.1f} with prompts",
        f"  tokens/s per chip      {r.tokens_per_s_per_chip:,.1f}",
        f"  $ per million tokens   {r.usd_per_mtok:,.4g}",
        f"  joules per token       {r.joules_per_token:,.4g}",
        f"  request latency        {si(r.latency_s, 's')}",
        f"  KV cache per token     {r.kv_bytes_per_token:,.0f} B",
        f"  largest batch that fits  {r.max_batch:,} sequences of {r.prompt_len + r.gen_len} tokens",
        f"memory per chip ({r.memory_level}), decoding at the mean context:",
    ]
    for stage, m in enumerate(r.memory_per_chip):
        lines.append(_stage_line(stage, m))
        if stage == 2 and len(r.memory_per_chip) > 4:
            lines.append(f"  ... {len(r.memory_per_chip) - 4} more stages ...")
            lines.append(_stage_line(len(r.memory_per_chip) - 1, r.memory_per_chip[-1]))
            break
    return "\n".join(lines)


def _stage_line(stage, m) -> str:
    return (f"  stage {stage}: weights {si(m.weights, 'B')}, KV {si(m.kv, 'B')}, activations "
            f"{si(m.activations, 'B')}, reserve {si(m.reserve, 'B')}, free {si(m.free, 'B')} of {si(m.capacity, 'B')}")


# ------------------------------------------------------------------------------------ traffic
def _requests(args) -> list[serving.Request]:
    if args.trace:
        return serving.read_trace(args.trace)
    return serving.poisson_requests(args.rate if args.rate is not None else DEFAULT_RATE, args.requests,
                                    args.prompt_len, args.gen_len, seed=args.seed)


def _traffic_line(args, requests) -> str:
    if args.trace:
        return f"traffic: {len(requests):,} requests from {args.trace}"
    rate = args.rate if args.rate is not None else DEFAULT_RATE
    chunk = f", chunked prefill of {args.chunk} tokens" if args.chunk else ""
    return (f"traffic: {len(requests):,} requests, Poisson {rate:g}/s (seed {args.seed}), prompt {args.prompt_len} + "
            f"{args.gen_len} generated tokens{chunk}")


def _plan(args, costs: Costs, requests, role: str = "both") -> PoolPlan:
    context = max(r.prompt_tokens + r.output_tokens for r in requests)
    return plan_pool(costs, context, max(r.prompt_tokens for r in requests), role, args.chunk, args.max_seqs)


def _simulate(args, requests, plan: PoolPlan) -> serving.ServingReport:
    return serving.simulate(requests, plan.pool).with_slo(args.slo_ttft, args.slo_tpot).with_costs([plan.provision])


def _pool_line(name: str, plan: PoolPlan) -> str:
    d = plan.deployment
    return (f"{name}: {plan.target}, {plan.chips} chip(s) ({Deployment(**d).describe()}), KV capacity "
            f"{plan.kv_capacity_tokens:,} tokens, step costs from {plan.cost.schedules} schedules")


def _pool_dict(plan: PoolPlan) -> dict:
    return {"target": plan.target, "role": plan.role, "chips": plan.chips, "deployment": plan.deployment,
            "kv_capacity_tokens": plan.kv_capacity_tokens}


ROWS = (("TTFT p50 / p90 / p99", lambda s: " / ".join(si(s.ttft_s[f"p{p}"], "s") for p in serving.PERCENTILES)),
        ("TPOT p50 / p90 / p99", lambda s: " / ".join(si(s.tpot_s[f"p{p}"], "s") for p in serving.PERCENTILES)),
        ("KV transfer p50 / p99", lambda s: "-" if s.kv_transfer_s is None else
         f"{si(s.kv_transfer_s['p50'], 's')} / {si(s.kv_transfer_s['p99'], 's')}"),
        ("output tokens/s", lambda s: f"{s.output_tokens_per_s:,.1f}"),
        ("requests/s", lambda s: f"{s.requests_per_s:,.3g}"),
        ("goodput (requests/s in SLO)", lambda s: f"{s.slo['goodput_requests_per_s']:,.3g} "
                                                  f"({s.slo['attainment']:.0%})"),
        ("output tokens/s per chip", lambda s: f"{s.costs['tokens_per_s_per_chip']:,.3g}"),
        ("$ per million tokens", lambda s: f"{s.costs['usd_per_mtok']:,.4g}"),
        ("joules per token", lambda s: f"{s.costs['joules_per_token']:,.4g}"),
        ("preemptions", lambda s: f"{s.preemptions:,}"))


def format_serving(columns: dict[str, serving.ServingReport]) -> str:
    """Simulation results side by side, one column per run."""
    width = max(28, *(len(name) + 2 for name in columns))
    cells = {name: [f(s) for _, f in ROWS] for name, s in columns.items()}
    widths = {name: max(len(name), *(len(c) for c in cells[name])) + 2 for name in columns}
    lines = [" " * width + "".join(f"{name:>{widths[name]}}" for name in columns)]
    for i, (label, _) in enumerate(ROWS):
        lines.append(f"{label:{width}}" + "".join(f"{cells[name][i]:>{widths[name]}}" for name in columns))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- disaggregation
def _disaggregated(args, precision: str) -> dict:
    requests = _requests(args)
    link = links.link(args.link)
    prefill = _plan(args, costs_of(args.model, args.prefill_on, precision, args.prefill_chips), requests, "prefill")
    decode = _plan(args, costs_of(args.model, args.decode_on, precision, args.decode_chips), requests, "decode")
    context = max(r.prompt_tokens + r.output_tokens for r in requests)
    per_token = prefill.costs.kv_bytes_per_token(context - 1)
    print(_traffic_line(args, requests))
    print(_pool_line("prefill pool", prefill))
    print(_pool_line("decode pool ", decode))
    mean_prompt = sum(r.prompt_tokens for r in requests) / len(requests)
    print(f"link: {link.summary}, {si(link.bandwidth_bytes_per_s, 'B/s')} + {si(link.latency_s, 's')} per transfer: "
          f"the KV cache of a {mean_prompt:,.0f}-token prompt ({si(per_token * mean_prompt, 'B')}) in "
          f"{si(link.transfer_s(per_token * mean_prompt), 's')}")
    split = serving.simulate_disaggregated(requests, prefill.pool, decode.pool,
                                           lambda tokens: link.transfer_s(tokens * per_token))
    columns = {f"{prefill.chips} {args.prefill_on} -> {decode.chips} {args.decode_on}":
               split.with_slo(args.slo_ttft, args.slo_tpot).with_costs([prefill.provision, decode.provision])}
    alone = {}
    for name in dict.fromkeys((args.prefill_on, args.decode_on)):
        plan = _plan(args, costs_of(args.model, name, precision), requests)
        print(_pool_line(f"{name} alone", plan))
        result = columns[f"{plan.chips} {name} alone"] = _simulate(args, requests, plan)
        alone[name] = {"pool": _pool_dict(plan), **result.to_dict()}
    print(format_serving(columns))
    return {"disaggregated": {"prefill_pool": _pool_dict(prefill), "decode_pool": _pool_dict(decode),
                              "link": link.__dict__, "kv_bytes_per_token": per_token, **split.to_dict()},
            "colocated": alone}
