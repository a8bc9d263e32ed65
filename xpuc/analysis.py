"""The serving analysis by model name: joins the model's graphs (``frontends.llm_graphs``) to the
cost model's analysis (``backends.llm.analysis``), which the layering keeps apart. What
``xpuc llm``, ``benchmarks/validate.py``, sweeps and comparisons call."""

from __future__ import annotations

import functools

from backends.llm.analysis import GEN_LEN, PROMPT_LEN, Costs, LLMReport, report
from backends.target import Target
from frontends import llm_graphs


def costs_of(model: str, target: Target | str, precision: str = "native", chips: int | None = None,
             tp: int | None = None, pp: int | None = None, *, ep: bool = False) -> Costs:
    """Memoized schedules of ``model`` (preset, config.json or ONNX path) on ``target`` in ``precision``."""
    build = functools.partial(llm_graphs.graph, str(model), precision)
    return Costs(build, model, target, precision, llm_graphs.policy_of(precision), chips, tp, pp, ep)


def analyze(model: str, target: Target | str, precision: str = "native", chips: int | None = None,
            tp: int | None = None, pp: int | None = None, batch: int | None = None,
            prompt_len: int = PROMPT_LEN, gen_len: int = GEN_LEN, *, ep: bool = False) -> LLMReport:
    """Serve ``batch`` requests (default: the largest batch whose KV cache fits, at most
    ``backends.llm.analysis.MAX_BATCH``) of ``prompt_len`` + ``gen_len`` tokens of ``model`` on
    ``target``; the deployment is ``chips``/``tp``/``pp`` where given, else the smallest that
    fits each phase; ``ep`` cuts mixtures of experts by experts. Every field of the report is
    defined in ``backends.llm.analysis.LLMReport``."""
    return report(costs_of(model, target, precision, chips, tp, pp, ep=ep), batch, prompt_len, gen_len)
