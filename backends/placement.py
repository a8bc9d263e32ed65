"""Placement: which chips run each op, and which engine.

Chips come from the deployment (``backends.deployment``): an op runs on every chip of its
pipeline stage, each doing the share its tensor-parallel cut gives it (``backends.sharding``).

Engines: the first engine in the spec's order that runs the op's family (or type) in its
number format, after the engine's auto-casts (the capability check). None means the op
goes to the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ir.errors import XpucError

from .target import Engine, Target
from .work import OpWork

if TYPE_CHECKING:
    from .deployment import Layout
    from .sharding import Shard


class ScheduleError(XpucError):
    """The graph cannot be scheduled on the target (it does not fit, even split)."""


@dataclass
class Placement:
    chips: tuple[int, ...]
    """Its stage's chips; each runs the op's share (``shard``)."""
    shard: Shard
    engine: Engine | None
    fmt: str

    @property
    def chip(self) -> int:
        return self.chips[0]


def choose_engine(work: OpWork, target: Target) -> tuple[Engine | None, str]:
    for engine in target.engines.values():
        fmt = engine.runs(work.family, work.node.op_type, work.fmt)
        if fmt is not None:
            return engine, fmt
    return None, work.fmt


def place(works: list[OpWork], target: Target, layout: Layout) -> list[Placement]:
    """A placement per op of ``works``, on the chips of its stage in ``layout``."""
    groups = [layout.deployment.group(s) for s in range(layout.deployment.pp)]
    placements = []
    for work, stage, shard in zip(works, layout.stages, layout.shards):
        engine, fmt = (None, work.fmt) if work.free else choose_engine(work, target)
        placements.append(Placement(groups[stage], shard, engine, fmt))
    return placements
