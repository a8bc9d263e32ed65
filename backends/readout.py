"""Reading schedules for the portability report: the one adapter between a ``Schedule`` and
``xpuc compare``, so that what the cost model learns to say is wired in here and nowhere else.

A schedule costs one pass alone and the deployment kept full (``Schedule.steady``), names
each record's engine and the format it ran in, and says its deployment. What each function
below reads, or will once the cost model says it (issue 8; the field names are those the
issue gives, else proposed):

- :func:`per_pass`: the steady state (the deployment kept full: its period, dollars and joules
  per pass), and the basis says so.
- :func:`asked_formats`: the format each op asked for and why its engine ran another
  (proposed ``OpSchedule.asked_format`` and ``format_reason``); today the op's tensor types
  (the scheduler's own rule, ``backends.work``), the reason being the engine's ``auto_cast``.
- :func:`record_node`: the IR node a record belongs to (proposed ``OpSchedule.node``); today
  its name less the scheduler's suffixes for slices, companions and all-gathers.
- :func:`deployment`: chips, tensor and pipeline degrees and memory per chip.
- :func:`launch_seconds`: the launch each record carries (proposed ``OpSchedule.launch_s``);
  today the scheduler's rule: a kernel's launch is charged to its first op, every slice of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ir import ops
from ir.graph import Graph

from . import report
from .schedule import OpSchedule, Schedule, dynamic_energy_j
from .target import Target
from .work import graph_work

INTERCONNECT = "interconnect"
"""The family of chip-to-chip records (transfers and all-gathers), which no op type owns."""

_SUFFIXES = (re.compile(r"\[\d+\]$"), re.compile(r"(\[\d+\])?\.[A-Za-z_]+(\[\d+\])?$"))
"""What the scheduler appends to a node's name: ``[i]`` for slice i of an op cut over chips, then
``.label`` for a companion (``.softmax``) or ``.allgather[i]``; tried in this order, so a node
named with dots keeps them."""


@dataclass(frozen=True)
class PassEconomics:
    """Seconds, dollars and joules the deployment spends per pass of the graph.

    basis: "single pass" (one pass at a time, nothing overlapped: the pass's latency) or
    "steady state" (the deployment kept full: 1 / throughput)."""

    basis: str
    seconds: float
    usd: float
    joules: float


def per_pass(s: Schedule) -> PassEconomics:
    steady = s.steady
    return PassEconomics("steady state", steady.period_s, steady.usd_per_pass, steady.joules_per_pass)


def deployment(s: Schedule) -> dict:
    """How the model is spread over chips: chips, ``tp``, ``pp`` and memory per chip (weights,
    KV, activations, reserve, free: ``report.memory_per_chip``)."""
    return {**report.deployment(s), "memory_per_chip": report.memory_per_chip(s)}


def asked_formats(graph: Graph) -> dict[str, str]:
    """The format each op computes in by its own tensor types, by node name: what it asks of an
    engine before the engine's ``auto_cast``."""
    return {w.name: w.fmt for w in graph_work(graph) if not w.free}


def record_node(record: OpSchedule, nodes: dict[str, str] | set[str]) -> str | None:
    """The node a record is (part of), or None for a transfer between chips."""
    for name in (record.name, *(suffix.sub("", record.name) for suffix in _SUFFIXES)):
        if name in nodes:
            return name
    return None


def family(record: OpSchedule) -> str:
    """The op family (``OpDef.family``) of a record; chip-to-chip records are ``interconnect``."""
    domain, _, op_type = record.op.rpartition(".")
    opdef = ops.lookup(op_type, domain)
    return opdef.family if opdef is not None else INTERCONNECT


def launch_seconds(s: Schedule, target: Target) -> list[float]:
    """Per record, the kernel launch its duration includes: the launch overhead on each slice of
    a kernel's first op on the chip (not on its companion, nor on the host), 0 elsewhere."""
    first: dict[int, str] = {}
    for r in s.ops:
        if r.kernel is not None:
            first.setdefault(r.kernel, _SUFFIXES[0].sub("", r.name))
    return [target.launch_overhead_s if r.kernel is not None and r.engine in target.engines
            and _SUFFIXES[0].sub("", r.name) == first[r.kernel] else 0.0 for r in s.ops]


def record_energy_j(target: Target, record: OpSchedule, seconds: float) -> float:
    """What ``seconds`` of a record cost in energy: its dynamic energy (the schedule's own model)
    plus its chip's idle power over those seconds."""
    return dynamic_energy_j(target, record) + target.power.idle_w * seconds
