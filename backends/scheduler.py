"""The scheduling driver shared by every family: place, cost, order, total.

A family (``backends.families``) supplies only what one op costs on one of its engines and
whether all engines of a chip take work from one queue, as a GPU stream does. Everything
else is common:

- the kernels of ``backends.grouping`` (the ones code generation emits): one launch each
  (``Target.launch_s``: every kernel on a stream, the chip's first alone under ``launch =
  "graph"``; and on statically scheduled chips ``sync_s``; charged to the kernel's first op),
  and traffic only for the values
  that cross a kernel's boundary, read once; a kernel whose ops placement puts on different
  chips, or partly on the host, runs as one kernel per op instead;
- the deployment (``deployment``: tensor x pipeline parallel chips, memory per chip) and
  placement onto its chips and engines (``placement``), with unsupported ops sent to the
  host, paying the host link both ways (engine ``host``, bound ``host``, ``host_link`` bytes);
- list scheduling, kernel by kernel in their order: an op starts when its inputs are ready
  and its engine is free, so independent work on different engines or chips overlaps; a
  cost's ``companion`` (work the op hands to a second engine) is a second record that
  starts with it;
- each chip of a stage runs its share of a tensor-parallel op (``sharding.pieces``); the
  all-reduces and all-gathers that the cut calls for, an experts cut's all-to-alls (its
  tokens' routed rows out before it, the results back after it), and the hops between
  pipeline stages, are ``interconnect`` records costed by ``collectives``;
- on a chip that holds the weights in SRAM and multiplies int8, integer products' codes
  unpacked to int8 once at load where the deployment has room (``Policy.unpacked``), so no
  decode runs per pass;
- peak memory per level (the fullest chip's weights, KV and live activations at the outer
  level, tile and buffer footprints at inner levels) and the totals in ``schedule.finish``.
"""

from __future__ import annotations

import copy
from collections import defaultdict

from ir.formats import Format
from ir.graph import Graph
from ir.ops.moe import DEFAULT_TOP_K

from . import collectives
from .deployment import Layout, deploy
from .economics import tokens_per_pass
from .families import FAMILIES, Cost, Family
from .grouping import Grouping, group_kernels
from .placement import Placement, ScheduleError, place
from .precision import Policy
from .schedule import OpSchedule, Schedule, finish
from .sharding import EXPERTS, pieces
from .target import Engine, Target
from .tiles import GemmCounts
from .work import OpWork, count_traffic, graph_work


def schedule(graph: Graph, target: Target, counts: dict[str, list[GemmCounts]] | None = None,
             precision: str | Format = "native", *, chips: int | None = None, tp: int | None = None,
             pp: int | None = None, ep: bool = False) -> Schedule:
    """Predict when and where every op of ``graph`` runs on ``target``, and what it costs.

    counts: matrix ops' tile counts measured by generated code, by op name (``backends.tiles``);
    ops without them (and shares of tensor-parallel ops) are costed with dense weights.
    precision: an ``ir.formats`` name or record: what every value is stored in and every op
    computes in (``backends.precision``); native: the graph's types as the vendor runs them.
    chips, tp, pp: the deployment (``backends.deployment``); what is not given is chosen, by
    default the smallest deployment that fits. ep: cut mixtures of experts by experts over each
    stage's tp chips (expert parallelism, ``backends.sharding``)."""
    family = FAMILIES[target.family]
    policy = Policy(precision)
    sizes = policy.sizes(graph)
    grouping = group_kernels(graph)
    works = graph_work(graph, sizes, grouping)
    _require_static(graph, works)
    policy.assign(works)
    layout = deploy(graph, works, grouping, sizes, target, chips, tp, pp, ep)
    sizes, works, layout = _unpack_where_room(graph, policy, grouping, sizes, works, layout, target)
    placements = place(works, target, layout, policy)
    grouping = _on_one_device(grouping, works, placements, sizes)
    index = {w.name: i for i, w in enumerate(works)}
    builder = _Timeline(grouping.views, sizes, target, family, counts or {})
    for number, kernel in enumerate(grouping.kernels):
        for i, node in enumerate(n for n in kernel.ops if n.name not in policy.unpacked_at_load):
            work, p = works[index[node.name]], placements[index[node.name]]
            if p.engine is None:
                builder.run_on_host(work, p, number)
            else:
                builder.run(work, p, number, launch=i == 0)
    result = finish(target, builder.records, layout.deployment, layout.memory,
                    _peak_memory(layout, target, builder), tokens_per_pass(graph))
    result.precision, result.launch = policy.describe(), target.launch
    return result


def _unpack_where_room(graph: Graph, policy: Policy, grouping: Grouping, sizes: dict[str, int],
                       works: list[OpWork], layout: Layout, target: Target):
    """On a chip that holds the weights in SRAM and multiplies int8: the same deployment with
    integer products' codes unpacked to int8 at load (``Policy.unpacked``) if every chip still
    has room, else as it was. The compiler spends spare SRAM rather than a vector unit's time
    on every pass."""
    if target.outer.role != "sram" or not any(e.handles("matmul", "MatMul") and e.multiplies("i8")
                                              for e in target.engines.values()):
        return sizes, works, layout
    wide, decodes = policy.unpacked(sizes, graph)
    if not decodes:
        return sizes, works, layout
    wide_works = graph_work(graph, wide, grouping)
    policy.assign(wide_works)
    d = layout.deployment
    try:
        wide_layout = deploy(graph, wide_works, grouping, wide, target, d.chips, d.tp, d.pp, d.ep)
    except ScheduleError:
        return sizes, works, layout
    policy.unpacked_at_load = decodes
    return wide, wide_works, wide_layout


def _require_static(graph: Graph, works: list[OpWork]) -> None:
    """Refuse values that costed ops touch while their shapes hold symbols: they would count
    0 bytes and 0 FLOPs, and the schedule would look valid."""
    unbound = {name for name, v in graph.values.items() if not v.type.is_static}
    symbolic = [v for w in works if not w.free for v in (*w.node.inputs, *w.node.outputs) if v in unbound] \
        if unbound else []
    if not symbolic:
        return
    inputs = [name for name in graph.inputs if not graph.values[name].type.is_static]
    if inputs:
        binds = " ".join(f"--input-shape {name}=" + "x".join(str(d).upper() for d in graph.values[name].type.shape)
                         for name in inputs)
        raise ScheduleError(f"cannot cost a graph whose shapes hold symbols: bind {', '.join(inputs)} ({binds}, "
                            "each symbol a number; input_shapes= when loading from Python)")
    raise ScheduleError(f"cannot cost a graph whose shapes hold symbols although its inputs are bound: "
                        f"{', '.join(sorted(set(symbolic))[:5])} depend on values known only as the model runs")


def _on_one_device(grouping: Grouping, works: list[OpWork], placements: list[Placement],
                   sizes: dict[str, int]) -> Grouping:
    """The grouping with every kernel whose ops placement spreads over pipeline stages, or partly
    onto the host, cut into one kernel per op (whose traffic is recounted: they store what they pass on)."""
    places: dict[int, object] = {}
    spread: set[int] = set()
    for work, p in zip(works, placements):
        if work.free or len(work.kernel.ops) == 1:
            continue
        place = p.chips if p.engine is not None else None
        if place is None or places.setdefault(id(work.kernel), place) != place:
            spread.add(id(work.kernel))
    if not spread:
        return grouping
    apart = {w.name for w in works if not w.free and id(w.kernel) in spread}
    grouping = grouping.apart(apart)
    for work in works:
        if work.name in apart:
            count_traffic(work, sizes, grouping, set())
    return grouping


class _Timeline:
    def __init__(self, views: dict[str, str], sizes: dict[str, int], target: Target, family: Family,
                 counts: dict[str, list[GemmCounts]]):
        self.views, self.sizes, self.target, self.family, self.counts = views, sizes, target, family, counts
        self.records: list[OpSchedule] = []
        self.free: dict[tuple[int, str], float] = defaultdict(float)
        self.ready: dict[str, tuple[tuple[int, ...] | None, float, float]] = {}
        """Value -> (the chips holding it, when, the share of it each holds)."""
        self.copies: dict[tuple[str, int], float] = {}
        self.footprint: dict[str, float] = defaultdict(float)
        self.launched: set[int] = set()

    def run(self, work: OpWork, p: Placement, kernel: int, launch: bool) -> None:
        """Cost one op of ``kernel`` on its engine, on each chip of its stage; the kernel's first
        op (``launch``) pays its launch. Its tensor-parallel cut's collective follows it."""
        chips = p.chips
        shares = pieces(work, p.shard, len(chips))
        costs: dict[int, Cost] = {}
        done, began, routed = 0.0, float("inf"), 0.0
        if p.shard.kind == EXPERTS:  # each chip's tokens go to the chips holding their experts first
            ready = max(self._inputs_ready(work, chip, rank) for rank, chip in enumerate(chips))
            routed = self._all_to_all("dispatch", work, chips, work.node.inputs[0], ready)
        for rank, chip in enumerate(chips):
            share = shares[rank]
            if id(share) not in costs:
                costs[id(share)] = self._cost(work, share, p)
            base = costs[id(share)]
            cost = self._with_overhead(base, chip) if launch else base
            parts = [("", p.engine, p.fmt, cost, p.reason)]
            if cost.companion:  # both engines start together: the op's tiles pipeline between them
                c = cost.companion
                parts.append((f".{c.label}", c.engine, c.fmt, c.cost,
                              f"{c.label} beside the {p.fmt} products, in {c.fmt}"))
            name = f"{work.name}[{rank}]" if len(chips) > 1 else work.name
            start = max([routed, self._inputs_ready(work, chip, rank)] + [self.free[(chip, self._lane(e))]
                                                                          for _, e, *_ in parts])
            began = min(began, start)
            for label, engine, fmt, part, reason in parts:
                flops = share.flops if part.flops is None else part.flops
                util = flops / (engine.peak(fmt) * part.duration_s) if part.duration_s else 0.0
                self._record(OpSchedule(name + label, work.node.qualified_type, engine.name, chip, start,
                                        part.duration_s, flops, _ints(part.bytes), part.bound, util, fmt, kernel,
                                        reason), self._lane(engine))
                done = max(done, start + part.duration_s)
        held = 1.0
        if p.shard.kind == EXPERTS:
            done = self._all_to_all("combine", work, chips, work.node.outputs[0], done)
        if p.shard.reduces:
            done = self._collective("AllReduce", work, chips, done)
        elif p.shard.gather_output:
            done = self._collective("AllGather", work, chips, done)
        elif shares[0] is not work and shares[0].output_bytes < work.output_bytes:
            held = 1 / len(chips)
        for out in work.node.outputs:  # a prologue's panels feed its product as they are decoded
            self.ready[out] = (chips, began if work.prologue else done, held)

    def _cost(self, work: OpWork, share: OpWork, p: Placement) -> Cost:
        """One chip's share on its engine (measured tile counts apply to the whole op only),
        its footprints kept for the peak."""
        counts = self.counts.get(work.name) if share is work else None
        cost = self.family.op_cost(share, p.engine, p.fmt, self.target, counts)
        for level, size in cost.footprint.items():
            self.footprint[level] = max(self.footprint[level], size)
        return cost

    def _with_overhead(self, cost: Cost, chip: int) -> Cost:
        """``cost`` plus what a kernel's first op pays on ``chip``: its launch (every kernel on a
        stream, the chip's first under ``launch = "graph"``) and, on a statically scheduled chip,
        its synchronization."""
        launch_s = self.target.launch_s(first_on_chip=chip not in self.launched)
        self.launched.add(chip)
        overhead = launch_s + self.target.sync_s
        if not overhead:
            return cost
        cost = copy.copy(cost)
        label = "launch" if launch_s >= self.target.sync_s else "sync"
        cost.duration_s, cost.bound = cost.duration_s + overhead, label if overhead > cost.duration_s else cost.bound
        return cost

    def _lane(self, engine: Engine) -> str:
        return "stream" if self.family.shared_stream else engine.name

    def run_on_host(self, work: OpWork, p: Placement, kernel: int) -> None:
        host, moved = self.target.host, work.activation_bytes + work.weight_bytes + work.output_bytes
        duration = 2 * host.latency_s + moved / host.effective_bandwidth + work.flops / host.flops_per_s
        chip = p.chip
        start = max(self._inputs_ready(work, chip, 0), self.free[(chip, "host")])
        self._record(OpSchedule(work.name, work.node.qualified_type, "host", chip, start, duration, work.flops,
                                {self.target.outer.name: moved, "host_link": moved}, "host", 0.0, work.fmt, kernel,
                                p.reason),
                     "host")
        for out in work.node.outputs:
            self.ready[out] = (p.chips, start + duration, 1.0)

    def _inputs_ready(self, work: OpWork, chip: int, rank: int) -> float:
        """When all inputs are on ``chip``: producers' ends, plus hops from another stage (from
        the chip of the same rank there, each chip receiving the share it computes with)."""
        t = 0.0
        for value in work.node.inputs:
            where, when, held = self._ready(value)
            if where is not None and chip not in where:
                if (value, chip) not in self.copies:
                    src = where[rank % len(where)]
                    self.copies[(value, chip)] = self._transfer(value, held, src, chip, when)
                when = self.copies[(value, chip)]
            t = max(t, when)
        return t

    def _ready(self, value: str) -> tuple[tuple[int, ...] | None, float, float]:
        """(chips, time, share) a value is ready at; a view's is its source's, a value known
        before the model runs (a weight, a shape, a folded result) is ready anywhere at time 0."""
        while value not in self.ready:
            if value not in self.views:
                return None, 0.0, 1.0
            value = self.views[value]
        return self.ready[value]

    def _transfer(self, value: str, held: float, src: int, dst: int, after: float) -> float:
        """A pipeline hop: ``src`` sends its share of ``value`` to ``dst``."""
        size = self.sizes[value] * held
        start = max(after, self.free[(src, "interconnect")])
        duration = collectives.hop_s(self.target.interconnect, size)
        self._record(OpSchedule(f"{value}->chip{dst}", "Transfer", "interconnect", src, start, duration, 0,
                                {"interconnect": int(size)}, "interconnect", 0.0), "interconnect")
        return start + duration

    def _collective(self, kind: str, work: OpWork, chips: tuple[int, ...], after: float) -> float:
        """The stage's chips all-reduce the op's partial sums, or all-gather its split output."""
        link, n = self.target.interconnect, len(chips)
        size = sum(self.sizes[o] for o in work.node.outputs if o)
        duration = (collectives.all_reduce_s if kind == "AllReduce" else collectives.all_gather_s)(link, n, size)
        sent = (2 if kind == "AllReduce" else 1) * (n - 1) / n * size
        return self._exchange(kind, kind.lower(), work, chips, after, duration, sent)

    def _all_to_all(self, step: str, work: OpWork, chips: tuple[int, ...], value: str, after: float) -> float:
        """An experts cut's dispatch or combine: each chip holds ``top_k`` rows of ``value`` for each
        of its 1/n of the tokens, and sends each row to (or back from) the chip of its expert."""
        link, n = self.target.interconnect, len(chips)
        size = self.sizes[value] / n * work.node.attr("top_k", DEFAULT_TOP_K)
        return self._exchange("AllToAll", step, work, chips, after, collectives.all_to_all_s(link, n, size),
                              collectives.all_to_all_bytes(link, n, size))

    def _exchange(self, kind: str, step: str, work: OpWork, chips: tuple[int, ...], after: float, duration: float,
                  sent: float) -> float:
        """Records of one collective on every chip of the stage, once their links are free."""
        start = max([after] + [self.free[(chip, "interconnect")] for chip in chips])
        for rank, chip in enumerate(chips):
            self._record(OpSchedule(f"{work.name}.{step}[{rank}]", kind, "interconnect", chip, start,
                                    duration, 0, {"interconnect": int(sent)}, "interconnect", 0.0), "interconnect")
        return start + duration

    def _record(self, record: OpSchedule, lane: str) -> None:
        self.records.append(record)
        self.free[(record.chip, lane)] = record.end_s


def _peak_memory(layout: Layout, target: Target, timeline: _Timeline) -> dict[str, int]:
    """Outer level: the fullest chip's weights, KV and live activations (its runtime reserve
    aside); inner levels: the largest tile or buffer footprint of any op."""
    peak = {m.name: int(timeline.footprint.get(m.name, 0)) for m in target.inner}
    peak[target.outer.name] = int(max(m.weights + m.kv + m.activations for m in layout.memory))
    return peak


def _ints(sizes: dict[str, float]) -> dict[str, int]:
    return {k: int(round(v)) for k, v in sizes.items()}
