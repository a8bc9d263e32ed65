"""The scheduling driver shared by every family: place, cost, order, total.

A family (``backends.families``) supplies only what one op costs on one of its engines and
whether all engines of a chip take work from one queue, as a GPU stream does. Everything
else is common:

- the kernels of ``backends.grouping`` (the ones code generation emits): one launch each
  (``Target.launch_s``, charged to the kernel's first op: every kernel on a stream, the
  chip's first alone under ``launch = "graph"``), and traffic only for the values
  that cross a kernel's boundary, read once; a kernel whose ops placement puts on different
  chips, or partly on the host, runs as one kernel per op instead;
- placement onto chips and engines (``placement``), with unsupported ops sent to the host,
  paying the host link both ways (engine ``host``, bound ``host``, ``host_link`` bytes);
- list scheduling, kernel by kernel in their order: an op starts when its inputs are ready
  and its engine is free, so independent work on different engines or chips overlaps; a
  cost's ``companion`` (work the op hands to a second engine) is a second record that
  starts with it;
- chip-to-chip transfers and tensor-parallel all-gathers as ``interconnect`` records;
- peak memory per level (resident weights plus live activations at the outer level,
  tile and buffer footprints at inner levels) and the totals in ``schedule.finish``.
"""

from __future__ import annotations

import copy
from collections import defaultdict

from ir.formats import Format
from ir.graph import Graph

from .families import FAMILIES, Family
from .grouping import Grouping, group_kernels
from .placement import Placement, ScheduleError, place, shard
from .precision import Policy
from .schedule import OpSchedule, Schedule, finish
from .target import Engine, Target
from .tiles import GemmCounts
from .work import OpWork, count_traffic, graph_work, live_bytes

def schedule(graph: Graph, target: Target, counts: dict[str, list[GemmCounts]] | None = None,
             precision: str | Format = "native") -> Schedule:
    """Predict when and where every op of ``graph`` runs on ``target``, and what it costs.

    counts: matrix ops' tile counts measured by generated code, by op name (``backends.tiles``);
    ops without them (and slices of split ops) are costed with dense weights.
    precision: an ``ir.formats`` name or record: what every value is stored in and every op
    computes in (``backends.precision``); native: the graph's types as the vendor runs them."""
    family = FAMILIES[target.family]
    policy = Policy(precision)
    sizes = policy.sizes(graph)
    grouping = group_kernels(graph)
    works = graph_work(graph, sizes, grouping)
    _require_static(graph, works)
    policy.assign(works)
    live = live_bytes(graph, works, sizes, grouping.intermediates)
    placements, chips = place(works, target, reserve=max(live, default=0), policy=policy)
    grouping = _on_one_device(grouping, works, placements, sizes)
    index = {w.name: i for i, w in enumerate(works)}
    builder = _Timeline(grouping.views, sizes, target, family, counts or {})
    for number, kernel in enumerate(grouping.kernels):
        for i, node in enumerate(kernel.ops):
            work, p = works[index[node.name]], placements[index[node.name]]
            if p.engine is None:
                builder.run_on_host(work, p, number)
            else:
                builder.run(work, p, number, launch=i == 0)
    result = finish(target, builder.records, chips, _peak_memory(works, placements, live, target, builder))
    result.precision, result.launch = policy.describe(), target.launch
    return result


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
    """The grouping with every kernel whose ops placement spreads over chips, or partly onto
    the host, cut into one kernel per op (whose traffic is recounted: they store what they pass on)."""
    places: dict[int, object] = {}
    spread: set[int] = set()
    for work, p in zip(works, placements):
        if work.free or len(work.kernel.ops) == 1:
            continue
        place = p.pieces if p.engine is not None and len(p.pieces) == 1 else None
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
        self.ready: dict[str, tuple[int | None, float]] = {}
        self.copies: dict[tuple[str, int], float] = {}
        self.footprint: dict[str, float] = defaultdict(float)
        self.launched: set[int] = set()

    def run(self, work: OpWork, p: Placement, kernel: int, launch: bool) -> None:
        """Cost one op of ``kernel`` on its engine; the kernel's first op (``launch``) pays its launch."""
        split = len(p.pieces) > 1
        done = 0.0
        for i, (chip, fraction) in enumerate(p.pieces):
            piece = shard(work, fraction)
            counts = None if split else self.counts.get(work.name)
            cost = self.family.op_cost(piece, p.engine, p.fmt, self.target, counts)
            overhead = 0.0
            if launch:
                overhead = self.target.launch_s(first_on_chip=chip not in self.launched)
                self.launched.add(chip)
            if overhead:
                cost = copy.copy(cost)
                cost.duration_s, cost.bound = cost.duration_s + overhead, \
                    "launch" if overhead > cost.duration_s else cost.bound
            for level, size in cost.footprint.items():
                self.footprint[level] = max(self.footprint[level], size)
            name = f"{work.name}[{i}]" if split else work.name
            parts = [(name, p.engine, p.fmt, cost, p.reason)]
            if cost.companion:  # both engines start together: the op's tiles pipeline between them
                c = cost.companion
                parts.append((f"{name}.{c.label}", c.engine, c.fmt, c.cost,
                              f"{c.label} beside the {p.fmt} products, in {c.fmt}"))
            start = max([self._inputs_ready(work, chip)] + [self.free[(chip, self._lane(e))] for _, e, *_ in parts])
            for label, engine, fmt, part, reason in parts:
                flops = piece.flops if part.flops is None else part.flops
                util = flops / (engine.peak(fmt) * part.duration_s) if part.duration_s else 0.0
                self._record(OpSchedule(label, work.node.qualified_type, engine.name, chip, start, part.duration_s,
                                        flops, _ints(part.bytes), part.bound, util, fmt, kernel, reason),
                             self._lane(engine))
                done = max(done, start + part.duration_s)
        if split:
            done = self._all_gather(work, p.pieces, done)
        for out in work.node.outputs:
            self.ready[out] = (p.pieces[-1][0], done)

    def _lane(self, engine: Engine) -> str:
        return "stream" if self.family.shared_stream else engine.name

    def run_on_host(self, work: OpWork, p: Placement, kernel: int) -> None:
        chip, host, moved = p.chip, self.target.host, work.activation_bytes + work.weight_bytes + work.output_bytes
        duration = 2 * host.latency_s + moved / host.bandwidth_bytes_per_s + work.flops / host.flops_per_s
        start = max(self._inputs_ready(work, chip), self.free[(chip, "host")])
        self._record(OpSchedule(work.name, work.node.qualified_type, "host", chip, start, duration, work.flops,
                                {self.target.outer.name: moved, "host_link": moved}, "host", 0.0, work.fmt, kernel,
                                p.reason),
                     "host")
        for out in work.node.outputs:
            self.ready[out] = (chip, start + duration)

    def _inputs_ready(self, work: OpWork, chip: int) -> float:
        """When all inputs are on ``chip``: producers' ends, plus transfers from other chips."""
        t = 0.0
        for value in work.node.inputs:
            where, when = self._ready(value)
            if where is not None and where != chip:
                if (value, chip) not in self.copies:
                    self.copies[(value, chip)] = self._transfer(value, where, chip, when)
                when = self.copies[(value, chip)]
            t = max(t, when)
        return t

    def _ready(self, value: str) -> tuple[int | None, float]:
        """(chip, time) a value is ready at; a view's is its source's, a value known before
        the model runs (a weight, a shape, a folded result) is ready anywhere at time 0."""
        while value not in self.ready:
            if value not in self.views:
                return None, 0.0
            value = self.views[value]
        return self.ready[value]

    def _transfer(self, value: str, src: int, dst: int, after: float) -> float:
        link = self.target.interconnect
        size = self.sizes[value]
        start = max(after, self.free[(src, "interconnect")])
        duration = link.latency_s + size / link.bandwidth_bytes_per_s
        self._record(OpSchedule(f"{value}->chip{dst}", "Transfer", "interconnect", src, start, duration, 0,
                                {"interconnect": size}, "interconnect", 0.0), "interconnect")
        return start + duration

    def _all_gather(self, work: OpWork, pieces: list[tuple[int, float]], after: float) -> float:
        """Ring all-gather of a column-split output: each chip receives the slices it lacks."""
        link = self.target.interconnect
        start = max([after] + [self.free[(chip, "interconnect")] for chip, _ in pieces])
        end = start
        for i, (chip, fraction) in enumerate(pieces):
            size = int(work.output_bytes * (1 - fraction))
            duration = (len(pieces) - 1) * link.latency_s + size / link.bandwidth_bytes_per_s
            self._record(OpSchedule(f"{work.name}.allgather[{i}]", "AllGather", "interconnect", chip, start,
                                    duration, 0, {"interconnect": size}, "interconnect", 0.0), "interconnect")
            end = max(end, start + duration)
        return end

    def _record(self, record: OpSchedule, lane: str) -> None:
        self.records.append(record)
        self.free[(record.chip, lane)] = record.end_s


def _peak_memory(works: list[OpWork], placements: list[Placement], live: list[int], target: Target,
                 timeline: _Timeline) -> dict[str, int]:
    """Outer level: the fullest chip's resident weights plus the activations live while it works;
    inner levels: the largest tile or buffer footprint of any op."""
    weights: dict[int, float] = defaultdict(float)
    activations: dict[int, float] = defaultdict(float)
    seen: set[str] = set()
    for work, p, held in zip(works, placements, live):
        for name, size in work.weights.items():
            if name not in seen:
                seen.add(name)
                for chip, fraction in p.pieces:
                    weights[chip] += size * fraction
        for chip, _ in p.pieces:
            activations[chip] = max(activations[chip], held)
    peak = {m.name: int(timeline.footprint.get(m.name, 0)) for m in target.inner}
    peak[target.outer.name] = int(max(weights[c] + activations[c] for c in set(weights) | set(activations) | {0}))
    return peak


def _ints(sizes: dict[str, float]) -> dict[str, int]:
    return {k: int(round(v)) for k, v in sizes.items()}
