"""A schedule: where and when every op runs on a target, what it moves, and what it costs.

The per-op records are what reports and traces read; each names the kernel it is part of
(``backends.grouping``). The totals are derived from them and the target in one place
(:func:`finish`), so every family computes energy, cost and utilization the same way: those
of one pass alone (latency, energy, cost) and those of the deployment kept full
(``steady``, ``backends.economics``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .economics import SteadyState, steady_state

if TYPE_CHECKING:
    from .deployment import ChipMemory, Deployment
    from .target import Target

BOUNDS = ("compute", "memory", "launch", "sync", "interconnect", "host")


@dataclass
class OpSchedule:
    name: str
    op: str
    engine: str
    chip: int
    start_s: float
    duration_s: float
    flops: int
    bytes: dict[str, int]
    bound: str
    utilization: float
    format: str = ""
    kernel: int | None = None
    """The kernel (fused group of ops, one launch) this record is part of; None for transfers."""
    format_reason: str = ""
    """Why it computes in ``format`` (``backends.precision``)."""

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass
class Schedule:
    target: str
    family: str
    ops: list[OpSchedule]
    latency_s: float
    energy_j: float
    cost_usd: float
    chips: int
    utilization: dict[str, float]
    peak_memory: dict[str, int]
    kernels: int
    """Kernels the run launches (each a fused group of ops; records of one kernel share its number)."""
    deployment: Deployment
    memory: list[ChipMemory]
    """Per pipeline stage: what each of its chips holds at ``memory_level``, the level that holds the model."""
    memory_level: str
    steady: SteadyState
    precision: dict[str, str] = field(default_factory=dict)
    """The precision policy: its name and what it stores weights, activations and KV in."""
    launch: str = ""
    """How the host started the kernels (``backends.target.LAUNCHES``)."""


def finish(target: Target, ops: list[OpSchedule], deployment: Deployment, memory: list[ChipMemory],
           peak_memory: dict[str, int], tokens_per_pass: int | None = None) -> Schedule:
    """Totals from the per-op records: latency, energy, cost and utilization per engine, for one
    pass and at steady state."""
    chips = deployment.chips
    latency = max((o.end_s for o in ops), default=0.0)
    busy: dict[str, float] = {}
    for o in ops:
        if o.engine in target.engines and o.flops:
            busy[o.engine] = busy.get(o.engine, 0.0) + o.flops / target.engines[o.engine].peak(o.format)
    utilization = {name: busy.get(name, 0.0) / (latency * chips) if latency else 0.0 for name in target.engines}
    dynamic = sum(dynamic_energy_j(target, o) for o in ops)
    energy = target.power.idle_w * chips * latency + dynamic
    cost = target.price.usd_per_second() * chips * latency
    kernels = len({o.kernel for o in ops if o.kernel is not None})
    return Schedule(target.name, target.family, ops, latency, energy, cost, chips, utilization, peak_memory, kernels,
                    deployment, memory, target.outer.name,
                    steady_state(target, ops, deployment, dynamic, tokens_per_pass))


def dynamic_energy_j(target: Target, o: OpSchedule) -> float:
    """Energy of one record above idle: per-MAC and per-byte energies, or TDP headroom scaled by
    its activity (the busiest of its engine and its memory levels; a host record draws none)."""
    p = target.power
    if p.energy_per_mac_j is not None:
        per_byte = {m.name: m.energy_per_byte_j or 0.0 for m in target.memory}
        return o.flops / 2 * p.energy_per_mac_j + sum(b * per_byte.get(level, 0.0) for level, b in o.bytes.items())
    if not o.duration_s or o.engine not in target.engines:
        return 0.0
    activity = max([o.utilization] + [b / (target.bandwidth(level) * o.duration_s) for level, b in o.bytes.items()])
    return (p.tdp_w - p.idle_w) * o.duration_s * min(1.0, activity)
