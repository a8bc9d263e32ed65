"""What one sweep point measures: the one place that turns axis values into metrics.

An :class:`Evaluator` is two functions and two tables:

- ``prepare(model, point)``: the model object the point needs, built once per distinct value
  of the axes in ``prepared_by`` (in the client, then scattered to every worker);
- ``evaluate(prepared, target, point)``: the metrics of one point, a flat dict whose keys
  are exactly ``metrics`` (a value the evaluator cannot give is None, never a guess);
- ``metrics``: each metric's type, whether lower or higher is better, and what it is;
- ``unused``: axes a point may set that this evaluator does not apply yet. Each row names the
  ones it set in ``unused_axes``, so a column is never mistaken for an effect on the metrics.

:data:`SCHEDULE`, the default, schedules one pass of the model on the target with
``backends.schedule`` (docs/schedules.md): the model's input bound to ``batch x prompt_tokens``,
costed in ``precision`` (the precision policy) on the point's ``deployment``. Its totals are read through ``backends.report.to_dict``, so a
total the schedule gains becomes a metric by adding its name to :data:`SCHEDULE_METRICS`.
:data:`LLM` (``[sweep] evaluator = "llm"``) measures serving instead: the metrics of ``xpuc llm``
(``xpuc.analysis.analyze``) for ``batch`` requests of ``prompt_tokens`` + ``output_tokens``.
:data:`EVALUATORS` names them for specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import backends
from backends import report
from frontends import hf
from frontends import onnx as onnx_frontend
from ir.passes import optimize
from xpuc.analysis import GEN_LEN, analyze

from .spec import Deployment, ModelEntry, Point


@dataclass(frozen=True)
class Metric:
    type: str
    """"float", "int" or "str" (the Parquet column's type)."""
    better: str | None
    """"lower" or "higher" (what a Pareto front or a best point prefers); None for a label."""
    doc: str


@dataclass(frozen=True)
class Evaluator:
    metrics: Mapping[str, Metric]
    prepared_by: tuple[str, ...]
    unused: tuple[str, ...]
    prepare: Callable[[ModelEntry, Point], object]
    evaluate: Callable[[object, backends.Target, Point], dict]
    pareto: tuple[str, str]
    """The two metrics a spec's Pareto front plots when its [report] names none."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Axis values a spec leaves out, where they differ from ``spec.DEFAULTS``."""


SCHEDULE_METRICS = {
    "latency_s": Metric("float", "lower", "seconds for one pass of batch x prompt_tokens (backends.schedule)"),
    "energy_j": Metric("float", "lower", "joules for that pass on the chips it uses, idle power included"),
    "cost_usd": Metric("float", "lower", "dollars for that pass: the chips' price per second x latency"),
    "chips": Metric("int", "lower", "chips the schedule uses"),
    "kernels": Metric("int", None, "kernels (fused groups of ops) the pass launches"),
    "peak_memory_bytes": Metric("int", "lower", "bytes held on the fullest chip at the level holding the model"),
    "memory_level": Metric("str", None, "that level (hbm, sram)"),
    "matrix_utilization": Metric("float", "higher", "the busiest matrix engine's fraction of its peak over the pass"),
    "bound": Metric("str", None, "what limits most of the pass's op time: compute, memory, launch, interconnect, host"),
    "prefill_tokens_per_s": Metric("float", "higher", "tokens the pass reads (input_ids elements) per second of "
                                                      "its latency; none for a model without input_ids"),
    "prefill_usd_per_mtok": Metric("float", "lower", "cost_usd per million of those tokens"),
    "period_s": Metric("float", "lower", "seconds between passes with the deployment kept full: its slowest "
                                         "pipeline stage (backends.economics)"),
    "throughput_per_s": Metric("float", "higher", "passes per second with the deployment kept full"),
    "usd_per_pass": Metric("float", "lower", "dollars per pass with the deployment kept full"),
    "joules_per_pass": Metric("float", "lower", "joules per pass with the deployment kept full"),
    "tokens_per_s": Metric("float", "higher", "tokens (input_ids elements) per second with the deployment kept "
                                              "full; none for a model without input_ids"),
    "usd_per_token": Metric("float", "lower", "usd_per_pass per token of the pass"),
    "joules_per_token": Metric("float", "lower", "joules_per_pass per token of the pass"),
    "deploy_tp_chosen": Metric("int", None, "the tensor-parallel degree the pass ran with (given or chosen)"),
    "deploy_pp_chosen": Metric("int", None, "the pipeline stages the pass ran with (given or chosen)"),
}


def prepare_graph(model: ModelEntry, point: Point):
    """The optimized graph at the point's input shapes, weightless (its format is the cost
    model's precision policy, applied when it is scheduled)."""
    shapes = model.input_shapes(point)
    if model.kind == "config":
        graph = hf.load(model.source, input_shapes=shapes)
    else:
        graph = onnx_frontend.load(model.source, input_shapes=shapes, weights=False)
    return optimize(graph)


def schedule_metrics(graph, target: backends.Target, point: Point) -> dict:
    """One pass's totals on the point's deployment (what it gives of chips, tp and pp; the
    smallest that fits for the rest), alone and with the deployment kept full."""
    d = point.deployment or Deployment()
    s = backends.schedule(graph, target, precision=point.precision or "native", chips=d.chips, tp=d.tp, pp=d.pp)
    totals = report.to_dict(s)["totals"]
    level = target.outer.name
    matrix = [u for name, u in s.utilization.items() if target.engines[name].role == "matrix"]
    time_by_bound: dict[str, float] = {}
    for o in s.ops:
        time_by_bound[o.bound] = time_by_bound.get(o.bound, 0.0) + o.duration_s
    tokens = math.prod(graph.values["input_ids"].type.shape) if "input_ids" in graph.inputs else None
    derived = {"peak_memory_bytes": s.peak_memory.get(level), "memory_level": level,
               "matrix_utilization": max(matrix, default=None),
               "bound": max(time_by_bound, key=time_by_bound.get, default=None),
               "prefill_tokens_per_s": tokens / s.latency_s if tokens and s.latency_s else None,
               "prefill_usd_per_mtok": s.cost_usd / tokens * 1e6 if tokens else None,
               "deploy_tp_chosen": s.deployment.tp, "deploy_pp_chosen": s.deployment.pp}
    return {name: totals[name] if name in totals else derived.get(name) for name in SCHEDULE_METRICS}


SCHEDULE = Evaluator(SCHEDULE_METRICS, prepared_by=("model", "batch", "prompt_tokens"),
                     unused=("output_tokens", "rate_per_s"), prepare=prepare_graph, evaluate=schedule_metrics,
                     pareto=("latency_s", "cost_usd"))
"""The default evaluator: one pass scheduled by ``backends.schedule`` on the point's deployment.
Output length and request rate are recorded on each row but not applied (``unused_axes``): the
:data:`LLM` evaluator applies output length."""


LLM_METRICS = {
    "batch_served": Metric("int", None, "the batch the analysis served: the point's, or the largest that fits"),
    "ttft_s": Metric("float", "lower", "time to first token: the prefill of the batch's prompts"),
    "tpot_s": Metric("float", "lower", "time per output token: one decode step of the batch"),
    "tokens_per_s_per_user": Metric("float", "higher", "1 / tpot_s: the speed one user sees while decoding"),
    "latency_s": Metric("float", "lower", "one request end to end: ttft_s + (output_tokens - 1) x tpot_s"),
    "tokens_per_s": Metric("float", "higher", "output tokens per second with the deployment kept full"),
    "tokens_per_s_per_chip": Metric("float", "higher", "tokens_per_s per chip of the deployment"),
    "requests_per_s": Metric("float", "higher", "requests per second with the deployment kept full"),
    "usd_per_mtok": Metric("float", "lower", "dollars per million output tokens"),
    "joules_per_token": Metric("float", "lower", "joules per output token, idle power included"),
    "chips": Metric("int", "lower", "chips the decode step uses"),
    "deploy_tp_chosen": Metric("int", None, "the decode step's tensor-parallel degree (given or chosen)"),
    "deploy_pp_chosen": Metric("int", None, "the decode step's pipeline stages (given or chosen)"),
    "max_batch": Metric("int", "higher", "the largest batch whose KV cache fits the deployment"),
    "memory_level": Metric("str", None, "the memory level holding the model (hbm, sram)"),
}
"""Fields of ``backends.llm.analysis.LLMReport`` (defined there), plus its batch and its deployment's tp and pp."""


def llm_metrics(model: str, target: backends.Target, point: Point) -> dict:
    """``xpuc llm``'s analysis of the point: ``batch`` (None: the largest that fits) requests of
    ``prompt_tokens`` + ``output_tokens`` (default ``xpuc.analysis.GEN_LEN``) on its deployment
    (the smallest that fits where not given)."""
    d = point.deployment or Deployment()
    r = analyze(model, target, point.precision or "native", d.chips, d.tp, d.pp, point.batch, point.prompt_tokens,
                point.output_tokens or GEN_LEN).to_dict()
    r.update(batch_served=r["batch"], deploy_tp_chosen=r["deployment"]["tp"], deploy_pp_chosen=r["deployment"]["pp"])
    return {name: r[name] for name in LLM_METRICS}


def model_source(model: ModelEntry, point: Point) -> str:
    """What ``analyze`` takes: the bundled name or the file's path (built on each worker, memoized there)."""
    return model.source


LLM = Evaluator(LLM_METRICS, prepared_by=("model",), unused=("rate_per_s",), prepare=model_source,
                evaluate=llm_metrics, pareto=("usd_per_mtok", "tokens_per_s_per_user"), defaults={"batch": None})
"""Serving metrics of a decoder (``xpuc llm``): the model is its bundled name or path, analysed on
each worker. Request rate is recorded but not applied (``unused_axes``): no traffic simulation."""

EVALUATORS = {"schedule": SCHEDULE, "llm": LLM}
"""What ``[sweep] evaluator`` names (default "schedule")."""


def unused_axes(evaluator: Evaluator, point: Point) -> str | None:
    """The axes ``point`` sets that ``evaluator`` does not apply, comma-separated (None: all applied)."""
    names = [axis for axis in evaluator.unused if getattr(point, axis) is not None]
    return ",".join(names) or None
