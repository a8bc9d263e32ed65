"""Placement: which chip holds each op's weights, and which engine runs it.

Chips: ops are packed in topological order onto chips until a chip's outer memory (HBM,
or SRAM on dataflow chips) is full (pipeline parallelism). An op whose own weights and
working set exceed one chip is split along its output columns over several chips (tensor
parallelism); only an op whose output has too few columns to split is an error. The
result is deterministic: the same graph and target always give the same placement.

Engines: the first engine in the spec's order that runs the op's family (or type) in the
number format the precision policy gives it (``backends.precision``: the capability check,
with the vendor's conversions). None means the op goes to the host.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from ir.errors import XpucError
from ir.ops import Gemm

from .precision import Choice, Policy
from .target import Engine, Target
from .work import OpWork


class ScheduleError(XpucError):
    """The graph cannot be scheduled on the target (it does not fit, even split)."""


@dataclass
class Placement:
    pieces: list[tuple[int, float]]
    """(chip, fraction of the op's output columns) for each slice; one (chip, 1.0) unless split."""
    engine: Engine | None
    fmt: str
    reason: str = ""
    """Why the op runs in ``fmt`` (``backends.precision.Choice``)."""

    @property
    def chip(self) -> int:
        return self.pieces[0][0]


def place(works: list[OpWork], target: Target, reserve: float = 0.0,
          policy: Policy | None = None) -> tuple[list[Placement], int]:
    """A placement per op, and the number of chips used.

    ``reserve`` bytes of every chip are kept free for live activations; weights fill the rest.
    An op that fits no chip on its own is cut into column slices that fill the current
    chip's free space, then whole chips, then part of the next, so the chip count stays
    close to total bytes / capacity.
    """
    policy = policy or Policy()
    capacity = target.outer.capacity_bytes - reserve
    if capacity <= 0:
        raise ScheduleError(f"the model's live activations ({reserve / 1e6:,.1f} MB) alone exceed a {target.name} "
                            f"chip's {target.outer.name} ({target.outer.capacity_bytes / 1e6:,.1f} MB)")
    seen_weights: set[str] = set()
    placements, chip, used = [], 0, 0.0
    for work in works:
        choice = Choice(None, work.fmt, "") if work.free else policy.choose(work, target)
        need = _new_weight_bytes(work, seen_weights)
        if need <= capacity:
            if used + need > capacity:
                chip, used = chip + 1, 0.0
            used += need
            placements.append(Placement([(chip, 1.0)], choice.engine, choice.fmt, choice.reason))
            continue
        pieces, left = [], need
        while left > 0:
            if capacity - used < 1:
                chip, used = chip + 1, 0.0
            take = min(capacity - used, left)
            pieces.append((chip, take / need))
            used, left = used + take, left - take
        if len(pieces) > _max_slices(work):
            raise ScheduleError(f"{work.name} ({work.node.op_type}) has {need / 1e6:,.1f} MB of weights but a "
                                f"{target.name} chip has {capacity / 1e6:,.1f} MB of {target.outer.name} left for "
                                f"weights, and its output cannot be cut into {len(pieces)} column slices")
        placements.append(Placement(pieces, choice.engine, choice.fmt, choice.reason))
    chips = chip + 1
    limit = target.interconnect.max_chips
    if limit is not None and chips > limit:
        raise ScheduleError(f"the model needs {chips} {target.name} chips, more than the {limit:.0f} its "
                            f"interconnect ({target.interconnect.topology}) connects")
    return placements, chips


def shard(work: OpWork, fraction: float) -> OpWork:
    """A slice of an op holding ``fraction`` of its output columns (tensor parallelism)."""
    if fraction >= 1.0:
        return work
    piece = copy.copy(work)  # not dataclasses.replace: 3x slower, and SRAM chips cut ~10^4 slices per 70B model
    piece.flops = int(work.flops * fraction)
    piece.weight_bytes = math.ceil(work.weight_bytes * fraction)
    piece.output_bytes = math.ceil(work.output_bytes * fraction)
    piece.gemms = [Gemm(g.batch, g.m, math.ceil(g.n * fraction), g.k) for g in work.gemms]
    return piece


def _new_weight_bytes(work: OpWork, seen: set[str]) -> int:
    """Weight bytes this op brings onto its chip; a weight shared by several ops counts once."""
    fresh = [v for v in work.weights if v not in seen]
    seen.update(fresh)
    return sum(work.weights[v] for v in fresh)


def _max_slices(work: OpWork) -> int:
    """How many column slices an op's output allows (1 for an op without an output axis to cut)."""
    shape = work.output_shape
    return shape[-1] if shape else 1
