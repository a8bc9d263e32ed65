"""One model on several targets: the comparison behind ``xpuc compare`` (``docs/portability.md``).

Per target: the formats its FLOPs ran in, chips, latency, throughput, work per dollar and per
joule, cost per million units of work, the porting share and ledger (``backends.ledger``),
the accuracy delta of the format it computes in, and its architectural efficiency; across
targets, the performance-portability score of Pennycook, Sewall and Lee (PMBS 2016).

The arithmetic is here, as plain functions of a schedule's numbers (read through
``backends.readout``); running the model for accuracy is the caller's (``runtime.accuracy``),
passed in as a function of a format name.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from ir.errors import XpucError
from ir.formats import FORMATS, lookup
from ir.graph import Graph

from . import ledger as ledgers
from . import readout
from .capabilities import chip_peak
from .placement import ScheduleError
from .schedule import Schedule
from .scheduler import schedule
from .target import Target

TOKEN_INPUTS = ("input_ids",)
"""Inputs whose elements are tokens: a graph with one does its work in tokens, else in inferences."""

EMULATED = {"f32": "fp32", **{f.weights.short: name for name, f in FORMATS.items()
                              if f.weights is f.activations and f.changes_graph}}
"""The ``ir.formats`` format whose rounding matches a product run in an engine format
(bf16 -> bf16, f16 -> fp16, f8e4m3 -> fp8-e4m3 ...): how accuracy is measured for a target
whose numerics the host cannot reproduce (``backends.numerics`` refuses them)."""

Accuracy = Callable[[str, Target | None], dict]
"""(format name, target or None) -> accuracy of each output against float32 on the same inputs
(``runtime.accuracy``): the graph in the format, computed with the target's numerics when a
target is given (an ``XpucError`` where the host cannot reproduce them), else the host's."""


@dataclass(frozen=True)
class Work:
    """How much a pass does: ``count`` tokens (elements of ``input_ids``) or inferences (batch)."""

    count: int
    unit: str


def work_units(graph: Graph) -> Work:
    for name in graph.inputs:
        t = graph.type_of(name)
        if name in TOKEN_INPUTS and t.is_static:
            return Work(max(1, math.prod(t.shape)), "token")
    first = graph.type_of(graph.inputs[0]) if graph.inputs else None
    batch = first.shape[0] if first is not None and first.is_static and first.shape else 1
    return Work(int(batch), "inference")


# ------------------------------------------------------------------------- the arithmetic
def flops_by_format(s: Schedule, target: Target) -> dict[str, int]:
    """FLOPs of the records on the target's engines, by the format they ran in (host fallbacks
    are not the chip's)."""
    by = defaultdict(int)
    for o in s.ops:
        if o.engine in target.engines and o.flops:
            by[o.format] += o.flops
    return dict(sorted(by.items(), key=lambda kv: -kv[1]))


def efficiency(flops: float, seconds: float, chips: int, peak_per_chip: float) -> float:
    """Architectural efficiency: achieved FLOP/s over the deployment's peak in the format the work
    ran in, ``(flops / seconds) / (chips * peak_per_chip)``."""
    return flops / seconds / (chips * peak_per_chip) if seconds and peak_per_chip else 0.0


def performance_portability(efficiencies: list[float | None]) -> float:
    """Pennycook et al.'s PP: the harmonic mean of the per-platform efficiencies, 0 when any
    platform cannot run the model (None) or reaches none of its peak."""
    if not efficiencies or any(e is None or e <= 0 for e in efficiencies):
        return 0.0
    return len(efficiencies) / sum(1 / e for e in efficiencies)


@dataclass(frozen=True)
class UnitEconomics:
    """What one unit of work costs at the schedule's basis (``readout.PassEconomics``)."""

    per_s: float
    """Units per second the deployment completes."""
    per_s_per_usd_hour: float
    """Units per second per dollar-per-hour of the deployment (= units per dollar / 3600)."""
    per_s_per_watt: float
    """Units per second per watt of average power (= units per joule)."""
    joules: float
    usd_per_million: float


def unit_economics(units_per_pass: int, p: readout.PassEconomics) -> UnitEconomics:
    return UnitEconomics(units_per_pass / p.seconds, units_per_pass / (p.usd * 3600), units_per_pass / p.joules,
                         p.joules / units_per_pass, 1e6 * p.usd / units_per_pass)


# ---------------------------------------------------------------------------- the rows
@dataclass
class Row:
    target: str
    family: str
    cannot_run: str = ""
    """Why the model cannot run on the target (empty when it can)."""
    formats: dict[str, float] = field(default_factory=dict)
    """Share of the chip's FLOPs run in each format."""
    chips: int = 0
    deployment: dict = field(default_factory=dict)
    """``readout.deployment``: chips, tensor and pipeline degrees, memory per chip."""
    latency_s: float = 0.0
    basis: str = ""
    economics: UnitEconomics | None = None
    meets_latency: bool | None = None
    flops: int = 0
    peak_flops_per_s: float = 0.0
    """The deployment's peak in the format most FLOPs ran in."""
    efficiency: float | None = None
    ledger: ledgers.Ledger | None = None
    accuracy_format: str | None = None
    accuracy: dict | None = None
    accuracy_note: str = ""


@dataclass
class Comparison:
    model: str
    precision: str
    work: Work
    latency_target_s: float | None
    rows: list[Row]
    targets: list[Target]
    schedules: dict[str, Schedule]

    @property
    def portability(self) -> float:
        return performance_portability([r.efficiency for r in self.rows])

    def least(self, cost: Callable[[UnitEconomics], float]) -> Row | None:
        """The row with the least ``cost`` per unit among the targets that run the model within the
        latency target (all that run it, without one): the hardware-neutral cost per unit of work."""
        able = [r for r in self.rows if r.economics is not None and r.meets_latency is not False]
        return min(able, key=lambda r: cost(r.economics), default=None)


def compare(graph: Graph, targets: list[Target], *, model: str = "", precision: str | None = None,
            accuracy: Accuracy | None = None, accuracy_missing: str = "",
            latency_target_s: float | None = None, chips: int | None = None, tp: int | None = None,
            pp: int | None = None, ep: bool = False) -> Comparison:
    """Schedule ``graph`` (already optimized) on each target in ``precision`` (the cost model's
    policy, ``backends.precision``; None: native) and compare them. ``accuracy``: measures a format against float32 (None: the model
    has no weights to run, ``accuracy_missing`` says why). ``chips``, ``tp``, ``pp``, ``ep``: the deployment
    on every target, where given (else each target's smallest that fits, ``backends.deployment``)."""
    work, facts = work_units(graph), ledgers.graph_facts(graph)
    rows, schedules, measured = [], {}, {}
    for target in targets:
        row = Row(target.name, target.family)
        rows.append(row)
        try:
            s = schedule(graph, target, precision=precision or "native", chips=chips, tp=tp, pp=pp, ep=ep)
        except ScheduleError as exc:
            row.cannot_run = str(exc)
            continue
        schedules[target.name] = s
        _fill(row, s, target, work, facts, latency_target_s)
        _accuracy(row, precision, accuracy, accuracy_missing, measured, target)
    return Comparison(model or graph.name, precision or "native", work, latency_target_s, rows, targets, schedules)


def _fill(row: Row, s: Schedule, target: Target, work: Work, facts: ledgers.GraphFacts,
          latency_target_s: float | None) -> None:
    p = readout.per_pass(s)
    by_format = flops_by_format(s, target)
    row.flops = sum(o.flops for o in s.ops)
    chip_flops = sum(by_format.values())
    row.formats = {f: n / chip_flops for f, n in by_format.items()}
    row.chips, row.deployment, row.latency_s, row.basis = s.chips, readout.deployment(s), s.latency_s, p.basis
    row.economics = unit_economics(work.count, p)
    row.meets_latency = None if latency_target_s is None else s.latency_s <= latency_target_s
    peak = chip_peak(target, next(iter(by_format))) if by_format else 0.0
    row.peak_flops_per_s = s.chips * peak
    row.efficiency = efficiency(row.flops, p.seconds, s.chips, peak)
    row.ledger = ledgers.ledger(s, target, facts)


def _accuracy(row: Row, precision: str | None, accuracy: Accuracy | None, missing: str,
              measured: dict[tuple, dict], target: Target) -> None:
    """The accuracy delta of the target: with a ``--precision`` that changes the graph, the graph
    in that format; else the graph run with the target's own numerics (``runtime.compile(model,
    target=T)``: each product's operands rounded to the format its engine runs, TF32 and bf16
    passes included), once per target; where the host cannot reproduce them, the format most of
    its FLOPs ran in applied to the graph."""
    if accuracy is None:
        row.accuracy_note = missing or "not measured"
        return
    main = next(iter(row.formats), "f32")
    if precision and lookup(precision).changes_graph:
        fmt, key = lookup(precision).name, (lookup(precision).name, None)
        row.accuracy_note = f"the graph in {fmt}; the target's own rounding beyond it is not emulated"
    else:
        key = ("native", target.name)
        try:
            if key not in measured:
                measured[key] = accuracy("native", target)
            row.accuracy_format, row.accuracy = main, measured[key]
            row.accuracy_note = f"{main} products: the target's numerics, run on the host"
            return
        except XpucError as exc:
            refused = str(exc)
        fmt = EMULATED.get(main)
        if fmt is None:
            row.accuracy_note = f"{main} products are not emulated on the host ({refused})"
            return
        key = (fmt, None)
        row.accuracy_note = (f"{main} products: the reference itself" if fmt == "fp32" else
                             f"{main} products: the graph quantized to {fmt} (weights and activations rounded); "
                             f"target numerics refused: {refused}")
    if key not in measured:
        measured[key] = accuracy(fmt, None)
    row.accuracy_format, row.accuracy = fmt, measured[key]
