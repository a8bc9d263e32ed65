"""Serving simulation: continuous batching of LLM requests on replicas of one deployment.

An event-driven, iteration-level simulator in the spirit of Vidur and LLMServingSim: each
replica (one deployment of the model: its chips, tensor and pipeline degrees) runs the loop
of an Orca/vLLM-style engine. Every iteration batches whatever work the scheduler admits,
its duration comes from a :class:`StepCost` (the cost model's time for that batch), and the
clock advances by it. What the loop models:

- **Admission, first come first served**: a waiting request joins when a batch slot
  (``max_sequences``) and the KV blocks its prompt needs are free; head-of-line blocking as
  in vLLM.
- **Paged KV memory** (vLLM's PagedAttention): ``kv_capacity_tokens`` in blocks of
  ``block_tokens``; a sequence holds ceil(cached tokens / block) blocks. When a decode step
  needs a block and none is free, the newest running request is preempted and later
  recomputed (vLLM's default preemption), its prompt plus generated tokens re-prefilled.
- **Prefill policy**: without chunking, an iteration is either the prefill of newly admitted
  prompts or one decode token for every running sequence (vLLM V0); with
  ``chunk_tokens`` (Sarathi-Serve, vLLM's chunked prefill) every iteration carries all
  decodes and fills the rest of its token budget with prefill chunks.
- **Disaggregation** (Splitwise, DistServe): a prefill pool computes prompts and their first
  token, the KV cache crosses a link (serialized per prefill replica), then a decode pool
  generates the rest.

Decode-only stretches are fast-forwarded between events (an arrival that could be admitted,
the first completion, the next block the batch cannot get), so a step costs O(1) Python work
and only events touch per-request state: 10,000 requests take seconds.

Metrics follow the usual definitions: TTFT = first token time - arrival; TPOT = (finish -
first token) / (output tokens - 1); goodput = requests per second that meet both SLOs
(DistServe's definition).
"""

from __future__ import annotations

import csv
import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ir.errors import XpucError


class ServingError(XpucError):
    """A serving simulation cannot run: bad limits, an unreadable trace, a request that never fits."""


@dataclass(frozen=True)
class Request:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Step:
    """What one engine iteration processes; a :class:`StepCost` turns it into seconds.

    tokens: new tokens through the model (prefill chunk tokens plus one per decoding sequence);
    sequences: sequences in the batch;
    kv_read: cached tokens the attention reads, summed over sequences;
    attention_pairs: (query, key) pairs the attention scores, summed over sequences.
    """

    tokens: int
    sequences: int
    kv_read: int
    attention_pairs: int


class StepCost(Protocol):
    def step_s(self, step: Step) -> float:
        """Seconds one iteration of this batch takes on one replica."""

    def step_j(self, step: Step) -> float:
        """Joules the iteration costs above the replica's chips' idle power (their dynamic energy)."""


@dataclass(frozen=True)
class Limits:
    """One replica's engine limits.

    kv_capacity_tokens: KV-cache tokens that fit in the memory left after weights, activations
        and the runtime reserve; block_tokens: tokens per KV block (vLLM's default is 16);
    max_sequences: batch slots (vLLM's max_num_seqs, default 256);
    chunk_tokens: token budget per iteration with chunked prefill, or None for none;
    max_prefill_tokens: without chunking, prompt tokens one prefill iteration may take.
    """

    kv_capacity_tokens: int
    block_tokens: int = 16
    max_sequences: int = 256
    chunk_tokens: int | None = None
    max_prefill_tokens: int = 8192

    def __post_init__(self):
        for name in ("kv_capacity_tokens", "block_tokens", "max_sequences", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ServingError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ServingError(f"chunk_tokens must be at least 1, got {self.chunk_tokens}")

    @property
    def blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_tokens


# ------------------------------------------------------------------------------- requests
def poisson_requests(rate_per_s: float, count: int, prompt_tokens: int, output_tokens: int,
                     seed: int = 0) -> list[Request]:
    """``count`` requests with exponential gaps of mean 1/rate (a Poisson process), seeded."""
    if not rate_per_s > 0 or count < 1 or prompt_tokens < 1 or output_tokens < 1:
        raise ServingError(f"need rate > 0, requests >= 1 and lengths >= 1 (got rate {rate_per_s}, "
                           f"requests {count}, prompt {prompt_tokens}, output {output_tokens})")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, count)
    return [Request(float(t), prompt_tokens, output_tokens) for t in np.cumsum(gaps) - gaps[0]]


TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")


def read_trace(path: str | Path) -> list[Request]:
    """Requests from a CSV with columns ``arrival_s,prompt_tokens,output_tokens`` (a header row)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ServingError(f"cannot read trace {path}: {exc}") from None
    if not rows or any(c not in rows[0] for c in TRACE_COLUMNS):
        raise ServingError(f"trace {path} needs a header with columns {', '.join(TRACE_COLUMNS)}")
    requests = []
    for line, row in enumerate(rows, start=2):
        try:
            r = Request(float(row["arrival_s"]), int(row["prompt_tokens"]), int(row["output_tokens"]))
        except (TypeError, ValueError):
            raise ServingError(f"{path}:{line}: expected a number in each column, got {row}") from None
        if not (math.isfinite(r.arrival_s) and r.arrival_s >= 0 and r.prompt_tokens >= 1 and r.output_tokens >= 1):
            raise ServingError(f"{path}:{line}: arrival must be >= 0 and lengths >= 1, got {row}")
        requests.append(r)
    return sorted(requests, key=lambda r: r.arrival_s)


# -------------------------------------------------------------------------------- replicas
@dataclass(eq=False)
class _Sequence:
    """A request in flight on one replica."""

    index: int
    request: Request
    to_prefill: int
    """Tokens still to run through prefill (the prompt; after a preemption, prompt + generated)."""
    output_tokens: int
    """Tokens this replica must have produced when the sequence leaves it (1 in a prefill pool)."""
    generated: int = 0
    cached: int = 0
    """Tokens whose K and V are in this replica's cache."""


@dataclass
class _Log:
    """Per-request times, by request index, shared by every replica of a simulation."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    transfer_s: np.ndarray
    preemptions: int = 0
    dynamic_j: float = 0.0
    """Dynamic energy of every iteration any replica ran."""

    @classmethod
    def empty(cls, n: int) -> "_Log":
        return cls(np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan))


class Replica:
    """One deployment running the engine loop described in the module docstring.

    ``on_done(seq, time)`` receives each sequence that produced its last token here; by default
    its finish time is logged (a prefill pool hands it on instead).
    """

    def __init__(self, cost: StepCost, limits: Limits, log: _Log,
                 on_done: Callable[[_Sequence, float], None] | None = None):
        self.cost, self.limits, self.log = cost, limits, log
        self.on_done = on_done or (lambda seq, t: log.finish_s.__setitem__(seq.index, t))
        self.clock = 0.0
        self.free_blocks = limits.blocks
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        """Admitted sequences in admission order; those with ``to_prefill`` are mid-prefill."""
        self.held = False
        """After a preemption nothing is admitted until a sequence finishes: readmitting the victim
        into the blocks the others need to grow would preempt it again, forever."""

    @property
    def queued(self) -> int:
        """Sequences here, running or waiting: the router sends a new one to the shortest queue."""
        return len(self.running) + len(self.waiting)

    def submit(self, seq: _Sequence, at_s: float) -> None:
        whole = seq.cached + seq.to_prefill + seq.output_tokens - seq.generated
        if self._blocks(whole) > self.limits.blocks:
            raise ServingError(f"a request of {seq.request.prompt_tokens} prompt + {seq.request.output_tokens} output "
                               f"tokens needs {self._blocks(whole)} KV blocks, but a replica holds "
                               f"{self.limits.blocks} ({self.limits.kv_capacity_tokens:,} tokens)")
        if not self.running and not self.waiting:
            self.clock = max(self.clock, at_s)
        self.waiting.append(seq)

    def run_until(self, limit_s: float) -> None:
        """Run iterations while the clock is before ``limit_s`` and there is work."""
        while self.clock < limit_s and (self.running or self.waiting):
            self._admit()
            if self.running and not any(s.to_prefill for s in self.running):
                self._fast_forward(limit_s)
            else:
                self._iteration()

    # ---------------------------------------------------------------- engine loop
    def _blocks(self, tokens) -> int:
        return -(-tokens // self.limits.block_tokens)

    def _admit(self) -> None:
        """FCFS admission while a slot and the blocks for the head's prompt are free."""
        lim = self.limits
        budget = lim.max_prefill_tokens if lim.chunk_tokens is None else math.inf
        taken = sum(s.to_prefill for s in self.running)
        self.held = self.held and bool(self.running)
        while self.waiting and len(self.running) < lim.max_sequences and not self.held:
            head = self.waiting[0]
            need = self._blocks(head.cached + head.to_prefill) - self._blocks(head.cached)
            if need > self.free_blocks or (taken and taken + head.to_prefill > budget):
                break
            self.waiting.popleft()
            self.free_blocks -= need
            taken += head.to_prefill
            self.running.append(head)

    def _iteration(self) -> None:
        """An iteration with prefill work: whole prompts alone (no chunking), or every decode plus
        prefill chunks up to the token budget."""
        chunked = self.limits.chunk_tokens is not None
        decoding = [s for s in self.running if not s.to_prefill] if chunked else []
        while self._new_blocks(decoding) > self.free_blocks:
            self._preempt()
            decoding = [s for s in decoding if s in self.running]
        budget = self.limits.chunk_tokens - len(decoding) if chunked else math.inf
        chunks = []
        for s in self.running:
            if s.to_prefill and budget > 0:
                chunks.append((s, min(s.to_prefill, budget)))
                budget -= chunks[-1][1]
        self.free_blocks -= self._new_blocks(decoding)
        self._run(Step(
            tokens=len(decoding) + sum(t for _, t in chunks), sequences=len(decoding) + len(chunks),
            kv_read=sum(s.cached for s in decoding) + sum(s.cached for s, _ in chunks),
            attention_pairs=sum(s.cached + 1 for s in decoding) + sum(t * s.cached + t * (t + 1) // 2
                                                                      for s, t in chunks)))
        for s in decoding:
            s.cached += 1
            self._emit(s)
        for s, take in chunks:
            s.cached += take
            s.to_prefill -= take
            if not s.to_prefill:
                self._emit(s)

    def _run(self, step: Step) -> None:
        self.clock += self.cost.step_s(step)
        self.log.dynamic_j += self.cost.step_j(step)

    def _new_blocks(self, decoding: Sequence[_Sequence]) -> int:
        return sum(self._blocks(s.cached + 1) - self._blocks(s.cached) for s in decoding)

    def _emit(self, s: _Sequence) -> None:
        """``s`` produced a token at the end of the current iteration."""
        s.generated += 1
        if np.isnan(self.log.first_token_s[s.index]):
            self.log.first_token_s[s.index] = self.clock
        if s.generated >= s.output_tokens:
            self.running.remove(s)
            self.free_blocks += self._blocks(s.cached)
            self.held = False
            self.on_done(s, self.clock)

    def _fast_forward(self, limit_s: float) -> None:
        """Decode steps of the whole running batch up to the next event (the first completion, the
        last step the free blocks allow, or ``limit_s``), touching requests only at the end."""
        run = self.running
        cached = np.fromiter((s.cached for s in run), np.int64, len(run))
        steps = self._steps_that_fit(cached, min(s.output_tokens - s.generated for s in run))
        if steps == 0:
            self._preempt()
            return
        b, kv, done = len(run), int(cached.sum()), 0
        while done < steps and self.clock < limit_s:
            self._run(Step(tokens=b, sequences=b, kv_read=kv, attention_pairs=kv + b))
            kv += b
            done += 1
        self.free_blocks -= int(self._blocks(cached + done).sum() - self._blocks(cached).sum())
        for s in list(run):
            s.cached += done
            s.generated += done - 1
            self._emit(s)

    def _steps_that_fit(self, cached: np.ndarray, most: int) -> int:
        """The most decode steps, up to ``most``, whose new KV blocks the free blocks cover."""
        held = int(self._blocks(cached).sum())
        lo, hi = 0, most
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if int(self._blocks(cached + mid).sum()) - held <= self.free_blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _preempt(self) -> None:
        """Free the newest running sequence's blocks; it is recomputed when readmitted."""
        victim = self.running.pop()
        self.free_blocks += self._blocks(victim.cached)
        victim.to_prefill += victim.cached + (1 if victim.generated and not victim.to_prefill else 0)
        victim.cached = 0
        self.waiting.appendleft(victim)
        self.held = True
        self.log.preemptions += 1


# ------------------------------------------------------------------------------ simulations
@dataclass(frozen=True)
class Pool:
    """``replicas`` identical deployments, each with its step cost and limits."""

    cost: StepCost
    limits: Limits
    replicas: int = 1

    def __post_init__(self):
        if self.replicas < 1:
            raise ServingError(f"a pool needs at least one replica, got {self.replicas}")


def simulate(requests: Sequence[Request], pool: Pool) -> "ServingReport":
    """Co-located serving: every replica prefills and decodes; arrivals join the shortest queue."""
    requests = _checked(requests)
    log = _Log.empty(len(requests))
    replicas = [Replica(pool.cost, pool.limits, log) for _ in range(pool.replicas)]
    for i, r in enumerate(requests):
        for rep in replicas:
            rep.run_until(r.arrival_s)
        min(replicas, key=lambda rep: rep.queued).submit(_Sequence(i, r, r.prompt_tokens, r.output_tokens),
                                                         r.arrival_s)
    for rep in replicas:
        rep.run_until(math.inf)
    return ServingReport.of(requests, log)


def simulate_disaggregated(requests: Sequence[Request], prefill: Pool, decode: Pool,
                           transfer_s: Callable[[int], float]) -> "ServingReport":
    """Prefill pool -> KV transfer -> decode pool. ``transfer_s(tokens)`` is the time to move one
    request's KV cache of ``tokens`` tokens; transfers leave a prefill replica one at a time."""
    requests = _checked(requests)
    log = _Log.empty(len(requests))
    events: list[tuple[float, int, int]] = [(r.arrival_s, 1, i) for i, r in enumerate(requests)]
    link_free: dict[int, float] = {}

    def hand_off(replica: int):
        def done(seq: _Sequence, t: float) -> None:
            if seq.request.output_tokens == 1:
                log.finish_s[seq.index] = t
                return
            start = max(t, link_free.get(replica, 0.0))
            link_free[replica] = end = start + transfer_s(seq.request.prompt_tokens)
            log.transfer_s[seq.index] = end - t
            heapq.heappush(events, (end, 0, seq.index))
        return done

    prefills = [Replica(prefill.cost, prefill.limits, log, hand_off(j)) for j in range(prefill.replicas)]
    decodes = [Replica(decode.cost, decode.limits, log) for _ in range(decode.replicas)]
    heapq.heapify(events)
    while events:
        t, arrival, i = heapq.heappop(events)
        for rep in prefills:
            rep.run_until(t)
        if events and events[0][0] < t:  # running the prefill pool handed off something earlier
            heapq.heappush(events, (t, arrival, i))
            continue
        r = requests[i]
        if arrival:
            min(prefills, key=lambda rep: rep.queued).submit(_Sequence(i, r, r.prompt_tokens, 1), t)
            if not events:
                for rep in prefills:
                    rep.run_until(math.inf)
            continue
        for rep in decodes:
            rep.run_until(t)
        min(decodes, key=lambda rep: rep.queued).submit(
            _Sequence(i, r, 0, r.output_tokens, generated=1, cached=r.prompt_tokens), t)
    for rep in decodes:
        rep.run_until(math.inf)
    return ServingReport.of(requests, log)


def _checked(requests: Sequence[Request]) -> list[Request]:
    if not requests:
        raise ServingError("no requests to simulate")
    return sorted(requests, key=lambda r: r.arrival_s)


# -------------------------------------------------------------------------------- metrics
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Provision:
    """Chips kept for a simulation's whole makespan (a pool's replicas), and what each costs."""

    chips: int
    usd_per_chip_s: float
    idle_w: float


@dataclass
class ServingReport:
    """Latency percentiles (seconds), throughput, SLO attainment and (:meth:`with_costs`) the
    dollars and joules per output token of one simulation."""

    requests: int
    makespan_s: float
    ttft_s: dict[str, float]
    tpot_s: dict[str, float]
    e2e_s: dict[str, float]
    output_tokens_per_s: float
    requests_per_s: float
    preemptions: int
    kv_transfer_s: dict[str, float] | None = None
    dynamic_j: float = 0.0
    slo: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    _per_request: tuple[np.ndarray, np.ndarray] = field(default=None, repr=False)

    @classmethod
    def of(cls, requests: list[Request], log: _Log) -> "ServingReport":
        arrival = np.array([r.arrival_s for r in requests])
        outputs = np.array([r.output_tokens for r in requests])
        ttft = log.first_token_s - arrival
        tpot = np.where(outputs > 1, (log.finish_s - log.first_token_s) / np.maximum(outputs - 1, 1), np.nan)
        makespan = float(np.nanmax(log.finish_s) - arrival.min())
        transfers = log.transfer_s[~np.isnan(log.transfer_s)]
        return cls(len(requests), makespan, _summary(ttft), _summary(tpot), _summary(log.finish_s - arrival),
                   float(outputs.sum() / makespan) if makespan > 0 else math.inf,
                   len(requests) / makespan if makespan > 0 else math.inf, log.preemptions,
                   _summary(transfers) if transfers.size else None, log.dynamic_j, _per_request=(ttft, tpot))

    def with_costs(self, provisions: Sequence[Provision]) -> "ServingReport":
        """Add what the output tokens cost when ``provisions`` are held for the whole makespan:
        dollars (chips x price per second x makespan), joules (chips x idle power x makespan,
        plus every iteration's dynamic energy), both per output token, and tokens/s per chip."""
        chips = sum(p.chips for p in provisions)
        tokens = self.output_tokens_per_s * self.makespan_s
        usd = sum(p.chips * p.usd_per_chip_s for p in provisions) * self.makespan_s
        joules = sum(p.chips * p.idle_w for p in provisions) * self.makespan_s + self.dynamic_j
        self.costs = {"chips": chips, "tokens_per_s_per_chip": self.output_tokens_per_s / chips,
                      "usd_per_mtok": usd / tokens * 1e6, "joules_per_token": joules / tokens}
        return self

    def with_slo(self, ttft_s: float | None = None, tpot_s: float | None = None) -> "ServingReport":
        """Add goodput: requests per second meeting both SLOs (an absent SLO always holds)."""
        ttft, tpot = self._per_request
        ok = np.ones(len(ttft), bool)
        if ttft_s is not None:
            ok &= ttft <= ttft_s
        if tpot_s is not None:
            ok &= np.isnan(tpot) | (tpot <= tpot_s)
        self.slo = {"ttft_s": ttft_s, "tpot_s": tpot_s, "attainment": float(ok.mean()),
                    "goodput_requests_per_s": float(ok.sum() / self.makespan_s) if self.makespan_s else math.inf}
        return self

    def to_dict(self) -> dict:
        keys = ("requests", "makespan_s", "ttft_s", "tpot_s", "e2e_s", "output_tokens_per_s", "requests_per_s",
                "preemptions", "kv_transfer_s", "dynamic_j", "slo", "costs")
        return {k: getattr(self, k) for k in keys}


def _summary(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if not values.size:
        return {"mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}, "max": math.nan}
    return {"mean": float(values.mean()), **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
            "max": float(values.max())}
