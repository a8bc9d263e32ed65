"""Deployments: how many chips run a model, cut how, and what each chip's memory holds.

A deployment is ``tp`` x ``pp`` chips: ``pp`` pipeline stages, each a contiguous run of the
graph's ops on its own ``tp`` chips, which split every op the Megatron way
(``backends.sharding``), or with ``ep`` its mixtures of experts by experts (``tp`` must divide
each one's expert count). Chip ``stage * tp + rank`` is rank ``rank`` of stage ``stage``.

What one chip must hold at the level that holds the model (HBM, or SRAM on dataflow chips):

- **weights**: its share of its stage's weights (1/tp of split ops', all of replicated ops';
  under ``ep`` its E/tp experts and the whole router: ``sharding.resident``);
- **KV**: the attention keys and values of this pass (a KV-cache reservation for the pass's
  batch and context: its K and V plus any past cache it reads), split by heads, for each of
  the ``pp`` passes a full pipeline has in flight (``backends.economics``);
- **activations**: the most activation bytes live at once while its stage runs;
- **reserve**: the share of memory the serving runtime keeps for itself (the level's
  ``reserve_fraction``: CUDA context, workspaces, allocator slack);
- **free**: what is left.

Unless told otherwise (``chips``, ``tp``, ``pp``, each optional), :func:`deploy` picks the
smallest deployment that fits every chip: the fewest chips, then the largest ``tp`` (within
the interconnect's ``domain_chips``; by default powers of two, as head counts are), with
stages cut where the greedy fill of each chip ends. With ``pp`` given, stages are balanced:
the largest stage's weights are as small as contiguous cuts allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ir.graph import Graph
from ir.ops.moe import EXPERT_INPUTS

from .grouping import Grouping
from .placement import ScheduleError
from .report import si
from .sharding import COLUMNS, EXPERT_OPS, SPLIT, Shard, plan_shards, resident
from .target import Target
from .work import OpWork, live_bytes

KV_INPUTS = (1, 2, 4, 5)
"""Attention inputs that hold keys and values: K, V, past_key, past_value."""


@dataclass(frozen=True)
class Deployment:
    tp: int
    pp: int
    ep: bool = False
    """Mixtures of experts are cut by experts over each stage's ``tp`` chips (``backends.sharding``)."""

    @property
    def chips(self) -> int:
        return self.tp * self.pp

    def as_dict(self) -> dict:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep}

    def describe(self) -> str:
        return f"tp {self.tp} x pp {self.pp}" + (", experts over each stage's tp chips (ep)" if self.ep else "")

    def group(self, stage: int) -> tuple[int, ...]:
        """The chips of a pipeline stage."""
        return tuple(range(stage * self.tp, (stage + 1) * self.tp))


@dataclass(frozen=True)
class ChipMemory:
    """Bytes of one chip of a stage at the level that holds the model."""

    capacity: float
    weights: float
    kv: float
    activations: float
    reserve: float

    @property
    def used(self) -> float:
        return self.weights + self.kv + self.activations + self.reserve

    @property
    def free(self) -> float:
        return self.capacity - self.used

    def describe(self) -> str:
        return (f"weights {si(self.weights, 'B')} + KV {si(self.kv, 'B')} + activations "
                f"{si(self.activations, 'B')} + reserve {si(self.reserve, 'B')} = "
                f"{si(self.used, 'B')} of {si(self.capacity, 'B')}")


@dataclass
class Layout:
    """A deployment and where everything goes in it."""

    deployment: Deployment
    shards: list[Shard]
    """Per op (``works`` order): how its stage's chips split it."""
    stages: list[int]
    """Per op: its pipeline stage."""
    memory: list[ChipMemory]
    """Per stage: each of its chips (they hold alike)."""


def deploy(graph: Graph, works: list[OpWork], grouping: Grouping, sizes: dict[str, int], target: Target,
           chips: int | None = None, tp: int | None = None, pp: int | None = None, ep: bool = False) -> Layout:
    """The deployment asked for (any of ``chips``, ``tp``, ``pp``; the rest chosen; ``ep``: expert
    parallelism), or the smallest that fits; :class:`ScheduleError` when the one asked for cannot fit."""
    for name, value in (("chips", chips), ("tp", tp), ("pp", pp)):
        if value is not None and value < 1:
            raise ScheduleError(f"--{name} must be at least 1, got {value}")
    if chips is not None and tp is not None and pp is not None and chips != tp * pp:
        raise ScheduleError(f"--chips {chips} is not --tp {tp} x --pp {pp}")
    for name, degree in (("tp", tp), ("pp", pp)):
        if chips is not None and degree is not None and chips % degree:
            raise ScheduleError(f"--chips {chips} is not a multiple of --{name} {degree}")
    link = target.interconnect
    limit = int(link.max_chips) if link.max_chips is not None else None
    for count in (chips, tp and pp and tp * pp):
        if count and limit is not None and count > limit:
            raise ScheduleError(f"{count} chips is more than the {limit} a {target.name} interconnect "
                                f"({link.topology}) connects")
    memory = _Memory(graph, works, grouping, sizes, target, ep)
    domain = int(link.domain_chips)
    experts = _expert_counts(graph, works, tp) if ep else set()
    degrees = [d for d in _tp_candidates(domain, chips, tp, pp) if all(e % d == 0 for e in experts)]
    if not degrees:
        raise ScheduleError(f"--ep puts E/tp whole experts on each chip, and no tensor-parallel degree --chips "
                            f"{chips} allows divides {_count(experts)} experts")
    best, closest = _smallest(memory, degrees, chips, pp)
    degree = domain
    while best is None and tp is None and chips is None and degree < (limit or 1 << 16):
        degree *= 2  # an op's share fits no chip of the domain: the least tensor parallelism beyond it
        if all(e % degree == 0 for e in experts):
            best, _ = _smallest(memory, [degree], chips, pp)
    if best is None:
        smallest = None
        if chips is not None or tp is not None or pp is not None:
            try:
                smallest = deploy(graph, works, grouping, sizes, target, ep=ep).deployment
            except ScheduleError:
                pass
        whole = f"; --ep keeps whole experts on a chip (tp divides {_count(experts)})" if experts else ""
        raise ScheduleError(_no_fit(target, chips, tp, pp, closest, smallest) + whole)
    deployment, cut = best
    if limit is not None and deployment.chips > limit:
        raise ScheduleError(f"the model needs {deployment.chips} {target.name} chips (tp {deployment.tp} x pp "
                            f"{deployment.pp}), more than the {limit} its interconnect ({link.topology}) connects")
    stages = cut.balanced(deployment.pp) if pp is not None or chips is not None else cut.greedy()
    return Layout(deployment, cut.shards, stages, cut.stage_memory(stages, deployment.pp))


def _expert_counts(graph: Graph, works: list[OpWork], tp: int | None) -> set[int]:
    """The expert counts of the graph's mixtures of experts, which an experts cut's degree must
    divide; :class:`ScheduleError` when there is none, or when ``tp`` does not divide one."""
    counts = {graph.type_of(w.node.inputs[EXPERT_INPUTS[0]]).shape[0]
              for w in works if w.node.op_type in EXPERT_OPS and not w.free}
    if not counts:
        raise ScheduleError(f"--ep cuts mixtures of experts by experts, and {graph.name} has none")
    if tp is not None and any(count % tp for count in counts):
        raise ScheduleError(f"--ep puts E/tp whole experts on each chip: --tp {tp} does not divide "
                            f"{_count(counts)} experts")
    return counts


def _count(counts: set[int]) -> str:
    return " or ".join(map(str, sorted(counts)))


def _smallest(memory: "_Memory", degrees: list[int], chips: int | None, pp: int | None):
    """(deployment, cut) of the fewest chips over ``degrees`` (ties: the first), and the first
    cut that did not fit (for the error message)."""
    best, closest = None, None
    for degree in degrees:
        cut = memory.cut(degree)
        stages = cut.fewest_stages()
        if stages is not None and pp is not None:
            stages = pp if pp >= stages else None
        elif stages is not None and chips is not None:
            stages = chips // degree if chips // degree >= stages else None
        if stages is None:
            closest = closest or cut
        elif best is None or degree * stages < best[0].chips:
            best = (Deployment(degree, stages, memory.ep), cut)
    return best, closest


def _tp_candidates(domain: int, chips: int | None, tp: int | None, pp: int | None) -> list[int]:
    """Tensor-parallel degrees to try, largest first (ties go to the first tried)."""
    if tp is not None:
        return [tp]
    if chips is not None:
        return [chips // pp] if pp is not None else [d for d in range(min(domain, chips), 0, -1) if chips % d == 0]
    return [1 << i for i in range(int(math.log2(domain)), -1, -1)]


class _Memory:
    """Per-op memory needs, for one tensor-parallel degree at a time."""

    def __init__(self, graph: Graph, works: list[OpWork], grouping: Grouping, sizes: dict[str, int], target: Target,
                 ep: bool):
        self.graph, self.works, self.grouping, self.sizes, self.target = graph, works, grouping, sizes, target
        self.ep = ep
        self.kv_values = {v for w in works if w.family == "attention" and not w.free
                          for i, v in enumerate(w.node.inputs) if v and i in KV_INPUTS}

    def cut(self, tp: int) -> "_Cut":
        shards = plan_shards(self.works, self.grouping, self.graph.outputs, tp, self.ep)
        split = {o for w, s in zip(self.works, shards) if s.kind in (COLUMNS, SPLIT) for o in w.node.outputs if o}
        per_chip = {v: (0 if v in self.kv_values else -(-size // tp) if v in split else size)
                    for v, size in self.sizes.items()}
        live = live_bytes(self.graph, self.works, per_chip, self.grouping.intermediates)
        weights, kv, seen = [], [], set()
        for work, shard in zip(self.works, shards):
            share = tp if shard.splits_weights else 1
            held = resident(work, shard, tp)
            fresh = [v for v in work.weights if v not in seen]
            seen.update(fresh)
            weights.append(sum(held[v] for v in fresh))
            kv.append(0.0 if work.family != "attention" or work.free else
                      sum(self.sizes[v] for i, v in enumerate(work.node.inputs) if v and i in KV_INPUTS) / share)
        return _Cut(self.target, tp, shards, weights, kv, live)


class _Cut:
    """One tensor-parallel degree's per-op needs per chip, and the stages they allow. A full
    pipeline of ``pp`` stages has ``pp`` passes in flight, so each stage holds the KV cache of
    ``pp`` passes."""

    def __init__(self, target: Target, tp: int, shards: list[Shard], weights: list[float], kv: list[float],
                 live: list[int]):
        self.target, self.tp, self.shards = target, tp, shards
        self.weights, self.kv, self.live = weights, kv, live
        store = target.outer
        self.capacity, self.reserve = store.capacity_bytes, store.capacity_bytes * store.reserve_fraction

    def _fill(self, bound: float, flight: int, room: float | None = None) -> list[int] | None:
        """Stages by greedy fill: an op joins the current stage while the stage's weights and the
        KV of ``flight`` passes stay within ``bound`` and they and its activations within ``room``
        (default: the chip's capacity less its reserve); None if one op alone does not fit."""
        stages, stage, load, peak = [], 0, 0.0, 0.0
        room = self.capacity - self.reserve if room is None else room
        for weights, kv, held in zip(self.weights, self.kv, self.live):
            need = weights + kv * flight
            if need > bound or need + held > room:
                return None
            if load + need > bound or load + need + max(peak, held) > room:
                stage, load, peak = stage + 1, 0.0, 0.0
            load, peak = load + need, max(peak, held)
            stages.append(stage)
        return stages

    def greedy(self) -> list[int] | None:
        """The fewest stages, by greedy fill, each holding the KV of as many passes as there are stages."""
        flight = 1
        for _ in range(32):
            stages = self._fill(math.inf, flight)
            if stages is None:
                return None
            count = stages[-1] + 1 if stages else 1
            if count <= flight:
                return stages
            flight = count
        return None

    def fewest_stages(self) -> int | None:
        stages = self.greedy()
        return None if stages is None else (stages[-1] + 1 if stages else 1)

    def balanced(self, pp: int, room: float | None = None) -> list[int]:
        """Exactly ``pp`` contiguous stages whose largest load (weights, KV of ``pp`` passes) is (nearly) least."""
        loads = [w + k * pp for w, k in zip(self.weights, self.kv)]
        lo, hi = max(loads, default=0.0), sum(loads) or 1.0
        best = self._fill(hi, pp, room)
        for _ in range(60):
            mid = (lo + hi) / 2
            stages = self._fill(mid, pp, room)
            if stages is not None and (stages[-1] + 1 if stages else 1) <= pp:
                best, hi = stages, mid
            else:
                lo = mid
            if hi - lo <= 1e-6 * hi:
                break
        return _spread(best, pp, len(loads))

    def stage_memory(self, stages: list[int], pp: int) -> list[ChipMemory]:
        weights, kv, peak = [0.0] * pp, [0.0] * pp, [0.0] * pp
        for stage, w, k, held in zip(stages, self.weights, self.kv, self.live):
            weights[stage] += w
            kv[stage] += k * pp
            peak[stage] = max(peak[stage], held)
        return [ChipMemory(self.capacity, weights[s], kv[s], peak[s], self.reserve) for s in range(pp)]

    def worst(self) -> ChipMemory:
        """The fullest chip if each op ran on its own stage (what cannot fit however it is cut)."""
        i = max(range(len(self.weights)), key=lambda j: self.weights[j] + self.kv[j] + self.live[j], default=None)
        if i is None:
            return ChipMemory(self.capacity, 0.0, 0.0, 0.0, self.reserve)
        return ChipMemory(self.capacity, self.weights[i], self.kv[i], self.live[i], self.reserve)


def _spread(stages: list[int], pp: int, ops: int) -> list[int]:
    """Cut the longest stages in two until there are ``pp`` (stages keep at least one op)."""
    if ops < pp:
        raise ScheduleError(f"{pp} pipeline stages need at least {pp} ops; the model has {ops}")
    cuts = [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    bounds = [0, *cuts, len(stages)]
    while len(bounds) - 1 < pp:
        j = max(range(len(bounds) - 1), key=lambda k: bounds[k + 1] - bounds[k])
        bounds.insert(j + 1, (bounds[j] + bounds[j + 1]) // 2)
    out = []
    for stage in range(pp):
        out += [stage] * (bounds[stage + 1] - bounds[stage])
    return out


def _no_fit(target: Target, chips, tp, pp, cut: _Cut, smallest: Deployment | None) -> str:
    store = target.outer.name
    stages = cut.fewest_stages()
    if stages is None:
        why = f"one op's share alone needs {cut.worst().describe()} of {store} on a chip"
    else:
        want = pp or (chips // cut.tp if chips else stages)
        fullest = max(cut.stage_memory(cut.balanced(want, math.inf), want), key=lambda m: m.used)
        why = f"tp {cut.tp} x pp {want} puts {fullest.describe()} of {store} on its fullest chip"
    asked = ", ".join(f"{k} {v}" for k, v in (("chips", chips), ("tp", tp), ("pp", pp)) if v is not None)
    hint = f"; the smallest deployment that fits is tp {smallest.tp} x pp {smallest.pp}" if smallest else ""
    if asked:
        return f"the model does not fit {target.name} chips with {asked}: {why}{hint}"
    return f"the model does not fit {target.name} chips at any tensor-parallel degree: {why}"
