"""Placement: which chips run each op, and which engine.

Chips come from the deployment (``backends.deployment``): an op runs on every chip of its
pipeline stage, each doing the share its tensor-parallel cut gives it (``backends.sharding``).

Engines: the first engine in the spec's order that runs the op's family (or type) in the
number format the precision policy gives it (``backends.precision``: the capability check,
with the vendor's conversions). None means the op goes to the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ir.errors import XpucError

from .precision import Choice, Policy
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
    reason: str = ""
    """Why the op runs in ``fmt`` (``backends.precision.Choice``)."""

    @property
    def chip(self) -> int:
        return self.chips[0]


def place(works: list[OpWork], target: Target, layout: Layout, policy: Policy | None = None) -> list[Placement]:
    """A placement per op of ``works``, on the chips of its stage in ``layout``, in the engine and
    format ``policy`` chooses."""
    policy = policy or Policy()
    groups = [layout.deployment.group(s) for s in range(layout.deployment.pp)]
    placements = []
    for work, stage, shard in zip(works, layout.stages, layout.shards):
        choice = Choice(None, work.fmt, "") if work.free else policy.choose(work, target)
        placements.append(Placement(groups[stage], shard, choice.engine, choice.fmt, choice.reason))
    return placements
