"""The serving side of a comparison (``xpuc compare --llm``): each target's ``xpuc llm`` analysis
(:class:`backends.llm.analysis.LLMReport`) as a block of the table, a ``serving`` object per
target in the JSON, ``serving_`` columns in the CSV, and the operating points of the HTML
report's Pareto chart. Making the analyses needs the model's graphs, which this layer does
not load: ``xpuc.compare_serving`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .llm.analysis import MAX_BATCH, LLMReport
from .report import si


@dataclass(frozen=True)
class ServingPoint:
    """One deployment's serving operating point, as the LLM options report it."""

    label: str
    tokens_per_s_per_user: float
    usd_per_million_tokens: float


def pareto_front(points: list[ServingPoint]) -> list[ServingPoint]:
    """The points no other point beats on both cost (lower) and speed per user (higher), by cost."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p.usd_per_million_tokens, -p.tokens_per_s_per_user)):
        if p.tokens_per_s_per_user > best:
            front.append(p)
            best = p.tokens_per_s_per_user
    return front


@dataclass(frozen=True)
class TargetServing:
    """One target's serving analysis in a comparison, or why it has none."""

    target: str
    report: LLMReport | None = None
    """At the batch asked for (default: the largest whose KV cache fits)."""
    batch_one: LLMReport | None = None
    """The same request at batch 1, where ``report``'s batch is larger: the latency end of the
    trade between speed per user and cost that the Pareto chart shows."""
    cannot_serve: str = ""
    """Why the analysis could not be made (the model does not fit, ...); empty when it was."""

    def to_dict(self) -> dict:
        """``xpuc llm --json``'s keys, plus ``cannot_serve`` and ``batch_one`` (the same keys, or null)."""
        return {"cannot_serve": self.cannot_serve, **(self.report.to_dict() if self.report else {}),
                "batch_one": self.batch_one and self.batch_one.to_dict()}

    def reports(self) -> list[LLMReport]:
        return [r for r in (self.report, self.batch_one) if r is not None]


@dataclass(frozen=True)
class Serving:
    """The request every target serves (``batch`` None: each its largest) and each target's analysis."""

    batch: int | None
    prompt_len: int
    gen_len: int
    targets: list[TargetServing]

    def of(self, target: str) -> TargetServing:
        return {t.target: t for t in self.targets}[target]

    def request(self) -> dict:
        return {"batch": self.batch, "prompt_len": self.prompt_len, "gen_len": self.gen_len}


def points(serving: Serving) -> list[ServingPoint]:
    """Every report's (tokens/s per user, $ per million tokens), labelled by target and batch."""
    return [ServingPoint(f"{r.target} b={r.batch}", r.tokens_per_s_per_user, r.usd_per_mtok)
            for t in serving.targets for r in t.reports()]


CSV_KEYS = ("cannot_serve", "batch", "chips", "tp", "pp", "ttft_s", "tpot_s", "tokens_per_s_per_user", "tokens_per_s",
            "tokens_per_s_per_chip", "usd_per_mtok", "joules_per_token", "max_batch", "prompt_len", "gen_len")
"""The CSV's serving columns (each prefixed ``serving_``): the scalars of the report at the batch asked for."""
CSV_COLUMNS = tuple(f"serving_{k}" for k in CSV_KEYS)


def csv_cells(t: TargetServing) -> dict:
    flat = {"cannot_serve": t.cannot_serve}
    if t.report:
        flat.update(t.report.to_dict(), **t.report.deployment)
    return {f"serving_{k}": flat.get(k) for k in CSV_KEYS}


def format_block(serving: Serving) -> list[str]:
    """The serving table: one line per report (a target's batch, then its batch 1), or the reason."""
    batch = (f"batch {serving.batch}" if serving.batch else
             f"batch: the largest whose KV cache fits (at most {MAX_BATCH})")
    batch += "" if serving.batch == 1 else ", then batch 1"
    lines = [f"serving (xpuc llm per target, docs/llm.md): {serving.prompt_len} prompt + {serving.gen_len} "
             f"generated tokens per request; {batch}",
             f"{'target':17} {'chips':>5} {'tp x pp':>7} {'batch':>5} {'TTFT':>9} {'TPOT':>9} {'tok/s/user':>10} "
             f"{'tok/s':>9} {'tok/s/chip':>10} {'$/Mtok':>9} {'J/tok':>9}"]
    for t in serving.targets:
        if t.cannot_serve:
            lines.append(f"{t.target:17} cannot serve: {t.cannot_serve}")
        for i, r in enumerate(t.reports()):
            tp_pp = f"{r.deployment['tp']} x {r.deployment['pp']}"
            lines.append(f"{'' if i else t.target:17} {r.chips:>5} {tp_pp:>7} {r.batch:>5} "
                         f"{si(r.ttft_s, 's'):>9} {si(r.tpot_s, 's'):>9} {si(r.tokens_per_s_per_user):>10} "
                         f"{si(r.tokens_per_s):>9} {si(r.tokens_per_s_per_chip):>10} {r.usd_per_mtok:>9.3g} "
                         f"{r.joules_per_token:>9.3g}")
    front = pareto_front(points(serving))
    if front:
        lines.append("Pareto frontier (no other point is both faster per user and cheaper per token): "
                     + ", ".join(p.label for p in front))
    return lines
