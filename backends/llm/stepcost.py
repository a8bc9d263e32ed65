"""The serving simulator's step costs, from the cost model.

A simulated iteration (``serving.Step``) carries ``tokens`` new tokens of ``sequences``
sequences that read ``kv_read`` cached tokens. :class:`ScheduledStepCost` prices it from
schedules of the model on one deployment, made once on a small grid and interpolated:

    step_s = pass_s(tokens) + kv_read x read_s(sequences)

and its dynamic energy (``step_j``, joules above the chips' idle power) the same way from the
same schedules' energies (``Costs.dynamic_j``).

- ``pass_s(n)``: the latency of one pass of ``n`` new tokens with no cache (a prefill of
  1 x n tokens), scheduled at n = 1, 4, 16, ... up to the largest step (:data:`TOKEN_POINTS`)
  and interpolated linearly in n between them (beyond the last, the line through the last two).
  Its products are the same for one sequence of n tokens and n sequences of one (the batch
  folds into the rows), which is why one curve serves prefill chunks, decode batches and
  mixed (chunked-prefill) iterations alike;
- ``read_s(b)``: what one cached token read adds at a batch of ``b`` sequences: the slope of
  the decode step of ``b`` sequences between a cache of 1 token and of the longest context,
  (latency at the long one - at the short one) / (b x (long - short)), at b = 1, 4, 16, ... up
  to the batch slots (:data:`BATCH_POINTS`), interpolated linearly in b. A step's cost grows
  linearly with its cache in the cost model (the K and V it streams), so two contexts fix it.

A replica runs one iteration at a time, so its step is the pass's latency (pipeline stages do
not overlap iterations here) and each chip holds the KV of its layers once per cached token:
:func:`kv_capacity_tokens` divides the memory left by that.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from backends.placement import ScheduleError

from .analysis import PREFILL_TOKENS, Costs
from .serving import Limits, Pool, Provision, Step

TOKEN_POINTS = tuple(4 ** i for i in range(8))
"""Pass sizes scheduled for ``pass_s``: 1, 4, 16, ... 16,384 new tokens (the grid stops at the largest step)."""
BATCH_POINTS = tuple(4 ** i for i in range(6))
"""Batch sizes scheduled for ``read_s``: 1, 4, 16, ... 1,024 sequences (the grid stops at the batch slots)."""


def _points(grid: tuple[int, ...], most: int) -> list[int]:
    return [p for p in grid if p < most] + [most]


def _interpolate(xs: list[int], ys: list[float], x: float) -> float:
    """Piecewise-linear through (xs, ys); past either end, the line through the two nearest points."""
    if len(xs) == 1:
        return ys[0] * x / xs[0] if x > xs[0] else ys[0]
    i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))


@dataclass
class ScheduledStepCost:
    """``serving.StepCost`` over schedules of one deployment (module docstring)."""

    tokens: list[int]
    pass_s: list[float]
    pass_j: list[float]
    batches: list[int]
    read_s: list[float]
    read_j: list[float]
    schedules: int
    """How many schedules the grid took."""

    @classmethod
    def build(cls, costs: Costs, most_tokens: int, most_sequences: int, context: int,
              capacity_tokens: int | None = None) -> "ScheduledStepCost":
        """Grid over ``costs`` (pin its deployment first, :meth:`Costs.on`): passes up to
        ``most_tokens``, batches up to ``most_sequences`` with caches up to ``context`` tokens
        (fewer where ``capacity_tokens`` of KV would not hold a batch's caches)."""
        tokens, pass_s, pass_j = [], [], []
        for n in _points(TOKEN_POINTS, most_tokens):
            try:
                plan = costs.step(1, n, 0)
            except ScheduleError:  # a pass this long does not fit: the last line extends (decode pools)
                if not tokens:
                    raise
                break
            tokens.append(n)
            pass_s.append(plan.latency_s)
            pass_j.append(costs.dynamic_j(plan))
        batches, read_s, read_j = [], [], []
        for b in _points(BATCH_POINTS, most_sequences):
            long = min(context, (capacity_tokens or context * b) // b) - 1
            if long < 2:
                break
            try:
                short, far = costs.step(b, 1, 1), costs.step(b, 1, long)
            except ScheduleError:  # a batch this large does not fit beside its caches: the last slope holds
                break
            batches.append(b)
            read_s.append(max(0.0, far.latency_s - short.latency_s) / (b * (long - 1)))
            read_j.append(max(0.0, costs.dynamic_j(far) - costs.dynamic_j(short)) / (b * (long - 1)))
        if not batches:
            raise ScheduleError(f"no decode step with a cache fits {costs.target.name}'s deployment")
        return cls(tokens, pass_s, pass_j, batches, read_s, read_j, len(tokens) + 2 * len(batches))

    def step_s(self, step: Step) -> float:
        return self._at(self.pass_s, self.read_s, step)

    def step_j(self, step: Step) -> float:
        return self._at(self.pass_j, self.read_j, step)

    def _at(self, per_pass: list[float], per_read: list[float], step: Step) -> float:
        return (_interpolate(self.tokens, per_pass, step.tokens)
                + step.kv_read * _interpolate(self.batches, per_read, step.sequences))


def kv_capacity_tokens(costs: Costs, context: int) -> int:
    """Cached tokens the deployment holds: the memory a one-sequence decode step leaves on the
    fullest chip (with its own cache) over what one cached token takes there, once (one iteration
    in flight; the deployment's ``kv`` counts one cache per pipeline stage in flight)."""
    one = costs.step(1, 1, context - 1)
    flight = one.deployment.pp
    per_token = [m.kv / flight / context for m in one.memory]
    if not any(per_token):
        return 1 << 40  # no KV cache (Mamba): the state is in the activations
    return int(min((m.free + m.kv) / t for m, t in zip(one.memory, per_token) if t))


@dataclass
class PoolPlan:
    """One replica's deployment and engine for the simulator, and what it was sized on."""

    target: str
    role: str
    chips: int
    deployment: dict
    kv_capacity_tokens: int
    cost: ScheduledStepCost
    limits: Limits
    costs: Costs
    """Pinned to the deployment."""

    @property
    def pool(self) -> Pool:
        return Pool(self.cost, self.limits)

    @property
    def provision(self) -> Provision:
        """The replica's chips, held for a simulation's whole makespan, and what each costs."""
        t = self.costs.target
        return Provision(self.chips, t.price.usd_per_second(), t.power.idle_w)


def plan_pool(costs: Costs, context: int, longest_prompt: int, role: str = "both", chunk: int | None = None,
              max_sequences: int = 256) -> PoolPlan:
    """A replica (``role`` "both", "prefill" or "decode") for requests of up to ``context`` tokens:
    on the deployment ``costs`` asks for, or else the smallest that fits a one-sequence decode
    step at ``context`` and (unless it only decodes) the largest prefill pass (the chunk budget,
    or the shorter of :data:`PREFILL_TOKENS` and the longest prompt)."""
    most_tokens = max(chunk or PREFILL_TOKENS, longest_prompt)
    phases = [costs.step(1, 1, context - 1)]
    if role != "decode":
        phases.append(costs.step(1, chunk or min(PREFILL_TOKENS, longest_prompt), 0))
    pinned = costs.on(max(phases, key=lambda plan: plan.chips))
    capacity = kv_capacity_tokens(pinned, context)
    cost = ScheduledStepCost.build(pinned, most_tokens, max_sequences, context, capacity)
    limits = Limits(kv_capacity_tokens=min(capacity, 1 << 40), max_sequences=max_sequences, chunk_tokens=chunk,
                    max_prefill_tokens=PREFILL_TOKENS)
    d = pinned.step(1, 1, context - 1).deployment
    return PoolPlan(costs.target.name, role, d.chips, d.as_dict(), capacity, cost, limits, pinned)
