"""GPU family: kernels (``backends.grouping``) launched in order on one stream.

A matrix kernel is cut into thread-block tiles (``tile = [M, N, K]`` of the matrix
engine); tiles run on the SMs (the engine's ``count``) in waves, and the last, partial
wave costs a full one (wave quantization). Operands are staged through shared memory
from L2: every tile reads its A rows and B columns, so L2 traffic grows with the number
of tiles across. HBM sees each tensor once while both operands fit in L2, plus panel
re-reads when they do not. Everything else is a streaming kernel on the vector engine
(CUDA cores). An op's time is the slowest of compute and each level's traffic; the
scheduler adds the launch overhead to each kernel's first op, labelled launch-bound when
the overhead is the larger part.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ir.formats import engine_storage

from ..roofline import reread_bytes, slowest
from ..tiles import GemmCounts, Tiling, dense_counts, rounds_work, skipped_flops
from .base import Cost, Family

if TYPE_CHECKING:
    from ir.ops import Gemm

    from ..target import Engine, Target
    from ..work import OpWork


def matrix_cost(work: OpWork, engine: Engine, fmt: str, target: Target, counts: list[GemmCounts] | None = None) -> Cost:
    """``counts``: the products' tile counts as measured (see ``backends.tiles``); None: dense."""
    itemsize = engine_storage(fmt).itemsize
    counts = counts or [dense_counts(g, tiling(g, engine)) for g in work.gemms]
    flops = work.flops - skipped_flops(work.gemms, counts)
    compute = max(sum(tile_time(c, engine, fmt) for c in counts), flops / engine.peak(fmt))
    l2, hbm = target.by_role("l2"), target.outer
    on_chip = sum(c.elements for c in counts) * itemsize
    sizes = {m.name: on_chip for m in target.inner}
    sizes[hbm.name] = work.io_bytes + reread_bytes(work, itemsize, l2.capacity_bytes / 2)
    footprint = {target.by_role("buffer").name: _tile_footprint(work.gemms, engine, itemsize),
                 l2.name: min(l2.capacity_bytes, work.io_bytes)}
    busy, bound = slowest(compute, sizes, target)
    return Cost(busy, sizes, bound, footprint, flops)


def tiling(g: Gemm, engine: Engine) -> Tiling:
    """Thread-block tiles over all of K; each costs its padded FLOPs (K rounded up to the K step).
    Summed over tiles, their A, B and C slices are the L2 -> shared-memory traffic: A once per
    column of tiles, B once per row of tiles, C once."""
    tm, tn, tk = engine.tile
    return Tiling(tm, tn, None, scaled=2 * tm * tn * math.ceil(g.k / tk) * tk)


def tile_time(c: GemmCounts, engine: Engine, fmt: str) -> float:
    """Seconds for one product: waves of tiles, one tile per SM at a time."""
    return rounds_work(c, engine.count) / (engine.clock_hz * engine.peak_ops_per_cycle[fmt] * engine.efficiency)


def _tile_footprint(gemms: list[Gemm], engine: Engine, itemsize: float) -> float:
    """Double-buffered A and B tiles in shared memory on every busy SM."""
    tm, tn, tk = engine.tile
    busy = min(engine.count, max(g.batch * math.ceil(g.m / tm) * math.ceil(g.n / tn) for g in gemms))
    return busy * 2 * (tm + tn) * tk * itemsize


def _check_engine(engine: Engine) -> str | None:
    if engine.role == "matrix" and (engine.tile is None or len(engine.tile) != 3):
        return "a GPU matrix engine needs tile = [M, N, K] (thread-block tile)"
    return None


class Gpu(Family):
    name = "gpu"
    shared_stream = True
    memory = ("buffer", "l2", "hbm")
    tiling = staticmethod(tiling)
    matrix_cost = staticmethod(matrix_cost)
    check_engine = staticmethod(_check_engine)
