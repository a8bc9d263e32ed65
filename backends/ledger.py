"""The fallback ledger: what a model had to give up to run on a target, priced from its schedule.

Every record of the schedule that shows one of these is listed, grouped by op type, engine,
formats and reason, with the time, energy and bytes its records cost:

- ``host``: no engine runs the op in its format, so it ran on the host (cost: the host
  record, both link crossings and the host's arithmetic);
- ``vector``: a product ran on a vector engine, the target's matrix engines taking the op but
  not its format (the product's records);
- ``conversion``: a format conversion ran as an op: a Cast between number formats, a
  Quantize-, Dequantize- or DynamicQuantizeLinear (its records);
- ``split``: an op was cut over the chips of a tensor-parallel stage (the collective that
  completes it: the all-reduce of its partial sums, or the all-gather of its output);
- ``auto-cast``: the op ran in a format other than its own, its engine's ``auto_cast`` or a
  wider format where no engine runs its own (``backends.precision.WIDER``) (the op's records,
  run in the new format; the model charges no separate conversion).

A record's time here is its own: a GPU kernel's launch, which the scheduler charges to the
kernel's first op, belongs to the kernel, which launches whatever its ops' formats (a weight's
decode that opens its product's kernel would otherwise carry the product's launch).

The *porting share* is the time of the first four kinds over the schedule's busy time (all
records' own time summed, so engines that overlap each count their own time). Auto-casts are
left out of it: the op itself runs at the engine's speed, in another format.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ir.formats import FORMATS
from ir.graph import Graph

from . import readout
from .report import si
from .schedule import OpSchedule, Schedule
from .target import Engine, Target

KINDS = ("host", "vector", "conversion", "split", "auto-cast")
COLLECTIVES = {"AllReduce": "cut over chips: its partial sums all-reduced on each",
               "AllGather": "cut over chips: its output all-gathered on each"}
"""The scheduler's records that complete an op cut over chips (``backends.sharding``), with
what each does: listed as ``split`` under the op's node, never as the op itself."""
PORTING_KINDS = ("host", "vector", "conversion", "split")
"""Kinds whose time counts in the porting share."""

CONVERSION_OPS = ("Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
NUMBER_FORMATS = frozenset(d.short for f in FORMATS.values() for d in (f.weights, f.activations, f.accumulator))
"""Element types a product can be put in or accumulate in (``ir.formats``): a Cast between two of
them is a format conversion; one to or from an index type (int64 positions, booleans) is the
model's own."""


@dataclass
class Entry:
    kind: str
    op: str
    engine: str
    formats: str
    """``asked->ran`` for an auto-cast or a conversion, else the format it ran in."""
    reason: str
    records: int = 0
    time_s: float = 0.0
    energy_j: float = 0.0
    bytes: dict[str, int] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)
    """The ops (IR nodes) concerned, each once; an op cut over chips has a record per slice."""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class GraphFacts:
    """What the ledger needs of the graph, found once for every target it is compared on:
    each op's own format, and the formats each conversion op converts between."""

    asked: dict[str, str]
    conversions: dict[str, str]


def graph_facts(graph: Graph) -> GraphFacts:
    conversions = {}
    for node in graph.nodes:
        if node.op_type in CONVERSION_OPS:
            src, dst = (graph.values[v].type.dtype for v in (node.inputs[0], node.outputs[0]))
            conversions[node.name] = f"{src.short if src else '?'}->{dst.short if dst else '?'}"
    return GraphFacts(readout.asked_formats(graph), conversions)


@dataclass
class Ledger:
    target: str
    entries: list[Entry]
    busy_s: float
    """All records' own time summed (launches left out)."""

    def time_s(self, kinds: tuple[str, ...] = PORTING_KINDS) -> float:
        return sum(e.time_s for e in self.entries if e.kind in kinds)

    @property
    def porting_share(self) -> float:
        return self.time_s() / self.busy_s if self.busy_s else 0.0

    def brief(self) -> str:
        """One line: count and time per kind, largest first; ``none`` when nothing was given up."""
        per_kind = defaultdict(lambda: [0, 0.0])
        for e in self.entries:
            per_kind[e.kind][0] += len(e.ops)
            per_kind[e.kind][1] += e.time_s
        parts = [f"{kind} {n} op(s) {si(t, 's')}" for kind, (n, t) in
                 sorted(per_kind.items(), key=lambda kv: -kv[1][1])]
        return "; ".join(parts) or "none"


def ledger(s: Schedule, target: Target, facts: GraphFacts) -> Ledger:
    nodes = {r.name: readout.record_node(r, facts.asked) for r in s.ops}
    op_types = {nodes[r.name]: r.op for r in s.ops if r.op not in COLLECTIVES}
    matrix = {name for name, e in target.engines.items() if e.role == "matrix"}
    on_matrix = {nodes[r.name] for r in s.ops if r.engine in matrix}
    launches = readout.launch_seconds(s, target)
    entries: dict[tuple, Entry] = {}
    for record, launch in zip(s.ops, launches):
        node = nodes[record.name]
        found = None if node is None else _classify(record, node, target, facts, on_matrix)
        if found is None:
            continue
        kind, formats, reason = found
        op = op_types.get(node, record.op)
        entry = entries.setdefault((kind, op, record.engine, formats, reason),
                                   Entry(kind, op, record.engine, formats, reason))
        seconds = record.duration_s - launch
        entry.records += 1
        entry.time_s += seconds
        entry.energy_j += readout.record_energy_j(target, record, seconds)
        for level, size in record.bytes.items():
            entry.bytes[level] = entry.bytes.get(level, 0) + size
        entry.ops.append(node)
    for entry in entries.values():
        entry.ops = list(dict.fromkeys(entry.ops))
    ordered = sorted(entries.values(), key=lambda e: (KINDS.index(e.kind), -e.time_s))
    return Ledger(s.target, ordered, sum(o.duration_s for o in s.ops) - sum(launches))


def _classify(record: OpSchedule, node: str, target: Target, facts: GraphFacts,
              on_matrix: set[str]) -> tuple[str, str, str] | None:
    """(kind, formats, reason) of a record the ledger lists, else None. ``on_matrix``: nodes with
    a record on a matrix engine (a companion on a vector engine is then no fallback)."""
    asked = facts.asked[node]
    if record.op in COLLECTIVES:
        return "split", asked, COLLECTIVES[record.op]
    family, op_type = readout.family(record), record.op.rpartition(".")[2]
    takers = [e for e in target.engines.values() if family in e.ops or op_type in e.ops]
    if record.engine == "host":
        return "host", asked, _lacking(takers, asked) if takers else f"no engine runs {family} ops"
    if node in facts.conversions and _converts_formats(facts.conversions[node]):
        return "conversion", facts.conversions[node], f"{op_type} between number formats"
    matrix = [e for e in takers if e.role == "matrix"]
    if matrix and node not in on_matrix and record.flops:
        return "vector", record.format, _lacking(matrix, asked)
    if record.format != asked:
        return "auto-cast", f"{asked}->{record.format}", f"{record.engine} converts {asked} to {record.format}"
    return None


def _lacking(engines: list[Engine], fmt: str) -> str:
    return "; ".join(f"{e.name} runs {', '.join(e.formats)}, not {fmt}" for e in engines)


def _converts_formats(formats: str) -> bool:
    src, _, dst = formats.partition("->")
    return src in NUMBER_FORMATS and dst in NUMBER_FORMATS and src != dst
