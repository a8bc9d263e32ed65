"""Serving analysis: what a model delivers on one deployment of a target, in LLM terms.

One home for the predictions that ``xpuc llm``, ``benchmarks/validate.py`` and the serving
simulator's step costs use. A model (a bundled preset, a config.json or an ONNX decoder) is
built weightless at each shape it needs (``frontends.llm_graphs``; ``xpuc.analysis.analyze``
joins the two layers) and scheduled by :func:`backends.schedule`:

- **prefill**: the batch's prompts in chunks of at most :data:`PREFILL_TOKENS` tokens (whole
  prompts per chunk; TensorRT-LLM's and vLLM's default token budget per step), one graph
  per chunk size; chunks after the first overlap in the pipeline (one steady-state period
  each), the last adds its pass's latency;
- **decode**: one step of one new token per sequence whose attention reads a KV cache of
  ``past`` tokens (ONNX Attention's ``past_key``/``past_value``), at the mean context of the
  generation, ``prompt_len + gen_len // 2``: a step's cost grows linearly with its context
  (the K and V it reads), so the mean step times the step count is the sum;
- **the deployment**: ``chips``/``tp``/``pp`` (and ``ep``, expert parallelism) as given; what
  is not given is chosen for each phase as the smallest deployment that fits it
  (``backends.deployment``), so an unpinned prefill may run on fewer chips than the decode
  (:class:`LLMReport` names both);
- **the largest batch**: how many sequences of the full context (``prompt_len + gen_len``)
  have KV that fits the memory a single sequence's decode step leaves free on the fullest
  chip after weights, activations and the runtime reserve, at most :data:`MAX_BATCH`.

These are the predictions ``benchmarks/validate.py`` checks against published measurements.

Every metric of :class:`LLMReport` is defined on its field; docs/llm.md shows them in use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import backends
from backends.deployment import ChipMemory
from backends.precision import Policy
from backends.schedule import Schedule
from backends.target import Target
from ir.errors import XpucError
from ir.graph import Graph
from ir.passes.decode import CACHE_INPUT_PREFIX

Build = Callable[[int, int, int], Graph]
"""The model's optimized graph for (batch, new tokens, cached tokens): ``frontends.llm_graphs.graph``
bound to a model and precision (this layer does not load models; ``xpuc.analysis`` joins the two)."""

PREFILL_TOKENS = 8192
"""Most prompt tokens one prefill pass takes (TensorRT-LLM's and vLLM's default per-step budget)."""
MAX_BATCH = 1024
"""Largest batch :func:`analyze` chooses by itself (TensorRT-LLM's perf-overview builds engines with
max_batch_size up to 1024-4096; KV memory binds first for all but the shortest contexts)."""
PROMPT_LEN = 1024
"""Prompt tokens per request when none are given."""
GEN_LEN = 256
"""Generated tokens per request when none are given."""


class AnalysisError(XpucError):
    """A serving analysis that cannot be made: bad lengths or batch, a model that is no decoder."""


# ------------------------------------------------------------------------------- schedules
class Costs:
    """Schedules of one model on one target in one precision, memoized by shape.

    build: the model's graphs (:data:`Build`); model: its name in reports; policy: the precision
    policy that costs them (``backends.precision``); precision: its name in reports.
    chips, tp, pp: the deployment asked for (each optional); what is not given is chosen by
    ``backends.schedule`` for each shape: the smallest deployment that fits it. :meth:`on`
    pins the deployment of one schedule for every other shape. ep: cut mixtures of experts by
    experts (``backends.sharding``)."""

    def __init__(self, build: Build, model: str, target: Target | str, precision: str = "native",
                 policy: str | None = None, chips: int | None = None, tp: int | None = None, pp: int | None = None,
                 ep: bool = False):
        self.build, self.model = build, str(model)
        self.target = backends.load_target(target) if isinstance(target, str) else target
        self.precision, self.policy = precision, policy or precision
        self.chips, self.tp, self.pp, self.ep = chips, tp, pp, ep
        self._plans: dict[tuple[int, int, int], Schedule] = {}

    def step(self, batch: int, seq: int, past: int) -> Schedule:
        """One pass of ``batch`` x ``seq`` new tokens after ``past`` cached ones."""
        key = (batch, seq, past)
        if key not in self._plans:
            self._plans[key] = backends.schedule(self.build(batch, seq, past), self.target,
                                                 precision=self.policy, chips=self.chips, tp=self.tp, pp=self.pp,
                                                 ep=self.ep)
        return self._plans[key]

    def on(self, plan: Schedule) -> "Costs":
        """The same costs with every shape on ``plan``'s deployment."""
        d = plan.deployment
        return Costs(self.build, self.model, self.target, self.precision, self.policy, d.chips, d.tp, d.pp, d.ep)

    def prefill(self, batch: int, prompt_len: int) -> list[tuple[Schedule, int]]:
        """(pass, how many) of the prefill of ``batch`` prompts in chunks of at most
        :data:`PREFILL_TOKENS` tokens (whole prompts; a longer prompt is one chunk alone), or
        half as many prompts, and so on, where a chunk does not fit the deployment."""
        per_chunk = self.chunk(batch, prompt_len)
        while True:
            try:
                first = self.step(per_chunk, prompt_len, 0)
                break
            except backends.ScheduleError:  # one op's activations of the chunk fill an SRAM chip: fewer prompts
                if per_chunk == 1:
                    raise
                per_chunk //= 2
        full, rest = divmod(batch, per_chunk)
        return [(first, full)] + ([(self.step(rest, prompt_len, 0), 1)] if rest else [])

    @staticmethod
    def chunk(batch: int, prompt_len: int) -> int:
        """Prompts per prefill pass."""
        return max(1, min(batch, PREFILL_TOKENS // prompt_len))

    def prefill_s(self, batch: int, prompt_len: int) -> float:
        """The prefill's time: each chunk size's passes overlap in the pipeline (one period
        each), the last of them adds its latency."""
        return sum(plan.steady.period_s * (count - 1) + plan.latency_s for plan, count in self.prefill(batch, prompt_len))

    def largest_batch(self, context: int, cap: int = MAX_BATCH) -> int:
        """The most sequences of ``context`` tokens whose KV cache fits the fullest chip's free
        memory beside one sequence's decode step (at most ``cap``)."""
        one = self.step(1, 1, context - 1)
        per_sequence = max(m.kv for m in one.memory)
        if not per_sequence:
            return self._largest_stateless_batch(context, cap)
        room = min(m.free + m.kv for m in one.memory)
        return max(1, min(cap, int(room // per_sequence)))

    def _largest_stateless_batch(self, context: int, cap: int) -> int:
        """Without a KV cache (Mamba: its state is activations) the batch is bounded by the decode
        step's activations: the largest of cap, cap / 2, ... whose step fits."""
        batch = cap
        while batch > 1:
            try:
                self.step(batch, 1, context - 1)
                return batch
            except backends.ScheduleError:
                batch //= 2
        return 1

    def kv_bytes_per_token(self, past: int) -> float:
        """Bytes of K and V one cached token takes in the whole model, in the precision's KV format."""
        g = self.build(1, 1, past)
        sizes = Policy(self.policy).sizes(g)
        held = {v for n in g.nodes if n.op_type == "Attention" for v in n.inputs[4:6] if v in g.inputs}
        held |= {v for v in g.inputs if v.startswith(CACHE_INPUT_PREFIX)}  # an export's own cache
        return sum(sizes[v] for v in held) / past


    def dynamic_j(self, plan: Schedule) -> float:
        """A pass's energy above its chips' idle power."""
        return plan.energy_j - plan.chips * self.target.power.idle_w * plan.latency_s


# -------------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class LLMReport:
    """A batch of ``batch`` requests of ``prompt_len`` prompt and ``gen_len`` generated tokens,
    served together on one deployment (docs/llm.md defines each metric with an example)."""

    model: str
    target: str
    precision: str
    batch: int
    prompt_len: int
    gen_len: int
    ttft_s: float
    """Time to first token: the prefill of the batch's prompts (:meth:`Costs.prefill_s`)."""
    tpot_s: float
    """Time per output token: one decode step of the batch at the mean context (single-pass latency)."""
    tokens_per_s_per_user: float
    """1 / tpot_s: the speed one user sees while decoding."""
    latency_s: float
    """One request end to end, nothing overlapped: ttft_s + (gen_len - 1) x tpot_s."""
    tokens_per_s: float
    """Output tokens per second of the deployment kept full: batch x gen_len / (ttft_s +
    (gen_len - 1) x the decode step's steady-state period), the period being the slowest
    pipeline stage's busy time (``backends.economics``); with one stage it is tpot_s."""
    tokens_per_s_total: float
    """Prompt and output tokens per second: batch x (prompt_len + gen_len) / the same time."""
    requests_per_s: float
    """Requests per second: batch / the same time."""
    tokens_per_s_per_chip: float
    """tokens_per_s / chips."""
    usd_per_mtok: float
    """Dollars per million output tokens: chips x the preset's price per chip-second x the
    generation's time / (batch x gen_len) x 1e6."""
    joules_per_token: float
    """Energy per output token: (chips x idle power x the generation's time + the dynamic
    energy of every prefill pass and gen_len - 1 decode steps) / (batch x gen_len)."""
    chips: int
    """Chips of the decode step's deployment."""
    deployment: dict
    """The decode step's deployment: {"tp": chips splitting each op, "pp": pipeline stages, "ep":
    mixtures of experts cut by experts}."""
    prefill_deployment: dict
    """The (first) prefill pass's deployment: the same as ``deployment`` unless chips, tp and pp
    were left to choose and the prefill fits a smaller one."""
    memory_level: str
    """The memory that holds the model (HBM, or SRAM on dataflow chips)."""
    memory_per_chip: tuple[ChipMemory, ...]
    """Per pipeline stage, one chip's bytes during the decode step at the mean context (weights,
    the batch's KV cache for each pass in flight, activations, runtime reserve, free)."""
    max_batch: int
    """The most sequences of prompt_len + gen_len tokens whose KV cache fits the memory a single
    sequence's decode step leaves free on its deployment's fullest chip (at most :data:`MAX_BATCH`)."""
    kv_bytes_per_token: float
    """K and V bytes one token adds to the cache, whole model: 2 x layers x kv heads x head dim x KV format bytes."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["memory_per_chip"] = [{"capacity": m.capacity, "weights": m.weights, "kv": m.kv,
                                   "activations": m.activations, "reserve": m.reserve, "free": m.free}
                                  for m in self.memory_per_chip]
        return out


def report(costs: Costs, batch: int | None, prompt_len: int, gen_len: int) -> LLMReport:
    """Serve ``batch`` requests (None: the largest batch that fits, at most :data:`MAX_BATCH`) of
    ``prompt_len`` + ``gen_len`` tokens on the deployment ``costs`` asks for (module docstring).
    ``xpuc.analysis.analyze`` takes a model name instead of :class:`Costs`."""
    check_request(batch, prompt_len, gen_len)
    context = prompt_len + gen_len
    max_batch = costs.largest_batch(context)
    batch = batch or max_batch
    decode = costs.step(batch, 1, prompt_len + gen_len // 2)
    prefill = costs.prefill(batch, prompt_len)
    ttft = costs.prefill_s(batch, prompt_len)
    generation_s = ttft + (gen_len - 1) * decode.steady.period_s
    tokens = batch * gen_len
    chips, target = decode.chips, costs.target
    energy = (chips * target.power.idle_w * generation_s + sum(count * costs.dynamic_j(plan) for plan, count in prefill)
              + (gen_len - 1) * costs.dynamic_j(decode))
    return LLMReport(
        model=costs.model, target=target.name, precision=costs.precision, batch=batch, prompt_len=prompt_len,
        gen_len=gen_len, ttft_s=ttft, tpot_s=decode.latency_s, tokens_per_s_per_user=1 / decode.latency_s,
        latency_s=ttft + (gen_len - 1) * decode.latency_s, tokens_per_s=tokens / generation_s,
        tokens_per_s_total=batch * context / generation_s, requests_per_s=batch / generation_s,
        tokens_per_s_per_chip=tokens / generation_s / chips,
        usd_per_mtok=chips * target.price.usd_per_second() * generation_s / tokens * 1e6,
        joules_per_token=energy / tokens, chips=chips, deployment=decode.deployment.as_dict(),
        prefill_deployment=prefill[0][0].deployment.as_dict(), memory_level=decode.memory_level,
        memory_per_chip=tuple(decode.memory), max_batch=max_batch,
        kv_bytes_per_token=costs.kv_bytes_per_token(context - 1))


def check_request(batch: int | None, prompt_len: int, gen_len: int) -> None:
    """One error for a batch or length that is not a whole number of at least 1 (None: a batch to choose)."""
    for name, value in (("prompt length", prompt_len), ("generated length", gen_len), ("batch", batch)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise AnalysisError(f"{name} must be a whole number of at least 1, got {value!r}")
