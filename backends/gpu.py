"""GPU family: one kernel per (fused) op, launched in order on one stream.

A matrix kernel is cut into thread-block tiles (``tile = [M, N, K]`` of the matrix
engine); tiles run on the SMs (the engine's ``count``) in waves, and the last, partial
wave costs a full one (wave quantization). Operands are staged through shared memory
from L2: every tile reads its A rows and B columns, so L2 traffic grows with the number
of tiles across. HBM sees each tensor once while both operands fit in L2, plus panel
re-reads when they do not. Everything else is a streaming kernel on the vector engine
(CUDA cores). A kernel's time is the slowest of compute and each level's traffic, plus
the launch overhead; it is labelled launch-bound when the overhead is the larger part.
"""

from __future__ import annotations

import math

from ir.dtypes import DType

from .roofline import operand_bytes, reread_bytes, slowest, streaming_bytes
from .schedule import Cost
from .target import Engine, Target
from .work import Gemm, OpWork

shared_stream = True


def op_cost(work: OpWork, engine: Engine, fmt: str, target: Target) -> Cost:
    itemsize = DType.from_short(fmt).itemsize
    if engine.role == "matrix" and work.gemms:
        compute = max(sum(tile_time(g, engine, fmt) for g in work.gemms), work.flops / engine.peak(fmt))
        l2, hbm = target.memory[-2], target.outer
        on_chip = sum(_tile_traffic(g, engine, itemsize) for g in work.gemms)
        sizes = {m.name: on_chip for m in target.memory[:-1]}
        sizes[hbm.name] = work.io_bytes + reread_bytes(work, itemsize, l2.capacity_bytes / 2)
        footprint = {target.memory[0].name: _tile_footprint(work.gemms, engine, itemsize),
                     l2.name: min(l2.capacity_bytes, work.io_bytes)}
    else:
        compute = work.flops / (engine.peak(fmt) * engine.efficiency)
        sizes, footprint = streaming_bytes(work, target), {}
    busy, bound = slowest(compute, sizes, target)
    launch = target.launch_overhead_s
    return Cost(busy + launch, sizes, "launch" if launch > busy else bound, footprint)


def tile_time(g: Gemm, engine: Engine, fmt: str) -> float:
    """Seconds for one product: waves of padded thread-block tiles, one tile per SM at a time."""
    tm, tn, tk = engine.tile
    tiles = g.batch * math.ceil(g.m / tm) * math.ceil(g.n / tn)
    waves = math.ceil(tiles / engine.count)
    flops_per_tile = 2 * tm * tn * math.ceil(g.k / tk) * tk
    return waves * flops_per_tile / (engine.clock_hz * engine.peak_ops_per_cycle[fmt] * engine.efficiency)


def _tile_traffic(g: Gemm, engine: Engine, itemsize: float) -> float:
    """L2 -> shared-memory bytes: A once per column of tiles, B once per row of tiles, C once."""
    tm, tn, _ = engine.tile
    a, b, c = operand_bytes(g, itemsize)
    return a * math.ceil(g.n / tn) + b * math.ceil(g.m / tm) + c


def _tile_footprint(gemms: list[Gemm], engine: Engine, itemsize: float) -> float:
    """Double-buffered A and B tiles in shared memory on every busy SM."""
    tm, tn, tk = engine.tile
    busy = min(engine.count, max(g.batch * math.ceil(g.m / tm) * math.ceil(g.n / tn) for g in gemms))
    return busy * 2 * (tm + tn) * tk * itemsize
