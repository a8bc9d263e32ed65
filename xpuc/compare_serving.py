"""``xpuc compare --llm``: each target's serving analysis (``xpuc.analysis.analyze``, what
``xpuc llm`` prints) beside the comparison of passes; ``backends.portability_serving`` prints it."""

from __future__ import annotations

from backends.llm.analysis import GEN_LEN, PROMPT_LEN, AnalysisError, check_request
from backends.portability_serving import Serving, TargetServing
from backends.target import Target
from frontends import hf
from ir.errors import XpucError
from ir.graph import Graph
from ir.passes.decode import DecodeError, token_input

from .analysis import analyze


def check(model: str, graph: Graph, batch: int | None, prompt_len: int, gen_len: int) -> None:
    """One error, before any target is analyzed, for a request that none could serve: a bad batch
    or length, or a model that is no decoder. A decoder is a config (preset or config.json), or an
    ONNX graph (``graph``, as loaded) with one token input whose attention, if any, is causal."""
    check_request(batch, prompt_len, gen_len)
    if hf.recognizes(model):
        return
    try:
        token_input(graph)
    except DecodeError as exc:
        raise AnalysisError(f"--llm serves a decoder: {exc}") from None
    if any(n.op_type == "Attention" and not n.attrs.get("is_causal") for n in graph.nodes):
        raise AnalysisError(f"--llm serves a decoder: {model} attends both ways (an encoder), not causally")


def serve(model: str, targets: list[Target], precision: str = "native", chips: int | None = None,
          tp: int | None = None, pp: int | None = None, batch: int | None = None, prompt_len: int = PROMPT_LEN,
          gen_len: int = GEN_LEN, *, ep: bool = False) -> Serving:
    """``analyze`` on each target with the same arguments, and again at batch 1 where the batch is
    larger; a target where it fails (the model does not fit, ...) gets the reason instead
    (:func:`check` first: a request that fails everywhere is one error)."""
    rows = []
    for target in targets:
        try:
            report = analyze(model, target, precision, chips, tp, pp, batch, prompt_len, gen_len, ep=ep)
            one = None if report.batch == 1 else analyze(model, target, precision, chips, tp, pp, 1, prompt_len,
                                                         gen_len, ep=ep)
            rows.append(TargetServing(target.name, report, one))
        except XpucError as exc:
            rows.append(TargetServing(target.name, cannot_serve=str(exc)))
    return Serving(batch, prompt_len, gen_len, rows)
