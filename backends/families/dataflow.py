"""SRAM-dataflow family (Groq LPU, Cerebras WSE): everything lives in on-chip SRAM.

There is no off-chip memory: weights stay resident and activations flow from op to op in
SRAM, so an op costs the slower of its arithmetic and its SRAM traffic. Chip count and
partitioning (pipeline across chips, tensor-parallel splits within an op) come from the
shared placement step, with SRAM as the capacity; transfers between chips are scheduled
on the interconnect by the driver. The schedule is static: the same graph always gets
the same order and times. A matrix engine with an ``array`` shape pads K and N to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ir.ops import Gemm

from ..roofline import slowest, streaming_bytes
from ..tiles import GemmCounts, Tiling, dense_counts, skipped_flops
from .base import Cost, Family

if TYPE_CHECKING:
    from ..target import Engine, Target
    from ..work import OpWork


def matrix_cost(work: OpWork, engine: Engine, fmt: str, target: Target, counts: list[GemmCounts] | None = None) -> Cost:
    """``counts``: the products' tile counts as measured (see ``backends.tiles``); None: dense.
    Without an ``array`` the engine has no tiles to pad the products to."""
    flops = padded = work.flops
    if engine.array:
        counts = counts or [dense_counts(g, tiling(g, engine)) for g in work.gemms]
        flops -= skipped_flops(work.gemms, counts)
        padded = max(flops, sum(c.work for c in counts))
    sizes = streaming_bytes(work, target)
    busy, bound = slowest(padded / (engine.peak(fmt) * engine.efficiency), sizes, target)
    return Cost(target.outer.latency_s + busy, sizes, bound, flops=flops)


def tiling(g: Gemm, engine: Engine) -> Tiling | None:
    """Array-sized blocks of the weights (K rows by N columns) with all of M streaming through;
    each costs its padded FLOPs. None: an engine without an array has no tiles to count."""
    if not engine.array:
        return None
    rows, cols = engine.array
    return Tiling(None, cols, rows, scaled=2 * g.m * rows * cols)


class Dataflow(Family):
    name = "sram-dataflow"
    shared_stream = False
    memory = ("sram",)
    tiling = staticmethod(tiling)
    matrix_cost = staticmethod(matrix_cost)
    waits_for_outer = True
