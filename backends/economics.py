"""Steady state: what a deployment delivers when kept full, and what one pass costs then.

A served deployment is never running one pass alone: while stage 2 of a pipeline works on
one request, stage 1 works on the next. A stage is busy for its *span*, from the first to the
last record on its chips in one pass, counting its compute and its collectives but not the
transfers it sends on (links carry those while it starts the next pass). The slowest stage
sets the *period*; the deployment completes one pass per period:

- throughput = 1 / period passes per second (x tokens per pass, tokens per second);
- energy per pass = chips x idle power x period + the pass's dynamic energy: each chip's idle
  power is charged for the period only, since the rest of a pass's latency it spends serving
  other passes;
- dollars per pass = chips x price per chip-second x period.

With one stage the period is the latency and the steady state is the single pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ir.graph import Graph

    from .deployment import Deployment
    from .schedule import OpSchedule
    from .target import Target

TOKEN_INPUT = "input_ids"
"""The input whose elements are the tokens of a pass (the name Hugging Face exports and xpuc's builders use)."""
PASS_ON = "Transfer"
"""Record type of a stage's hand-off to the next: carried by links while the stage moves on."""


@dataclass(frozen=True)
class SteadyState:
    period_s: float
    throughput_per_s: float
    """Passes per second of the whole deployment."""
    joules_per_pass: float
    usd_per_pass: float
    tokens_per_pass: int | None = None

    def per_token(self, value: float) -> float | None:
        return value / self.tokens_per_pass if self.tokens_per_pass else None


def steady_state(target: Target, ops: list[OpSchedule], deployment: Deployment, dynamic_j: float,
                 tokens_per_pass: int | None = None) -> SteadyState:
    """The steady state of a schedule whose records are ``ops``; ``dynamic_j`` is the pass's energy above idle."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for o in ops:
        if o.op == PASS_ON:
            continue
        stage = o.chip // deployment.tp
        first[stage] = min(first.get(stage, math.inf), o.start_s)
        last[stage] = max(last.get(stage, 0.0), o.end_s)
    period = max((last[s] - first[s] for s in first), default=0.0)
    chips = deployment.chips
    return SteadyState(period, 1 / period if period else math.inf,
                       chips * target.power.idle_w * period + dynamic_j,
                       chips * target.price.usd_per_second() * period, tokens_per_pass)


def tokens_per_pass(graph: Graph) -> int | None:
    """Tokens one pass processes: the elements of its ``input_ids`` input, when static."""
    if TOKEN_INPUT not in graph.inputs:
        return None
    shape = graph.values[TOKEN_INPUT].type.shape
    return math.prod(shape) if shape is not None and all(isinstance(d, int) for d in shape) else None
