"""GPU family: kernels (``backends.grouping``) launched in order on one stream.

A matrix kernel is cut into thread-block tiles (``tile = [M, N, K]`` of the matrix
engine); tiles run on the SMs (the engine's ``count``) in waves, and the last, partial
wave costs a full one (wave quantization). Small products run the kernels GPU libraries
pick for them (cuBLAS heuristics, CUTLASS's tile and split-K configurations):

- a product with few rows (or columns) takes the smallest tile that covers them, halving
  ``tile`` down to the tensor core's instruction shape ``mma`` (m16n8k16 on Ampere; a
  warpgroup's m64 on Hopper), with A and B swapped when that pads less (swap-AB: the rows
  take the instruction's n8 side), so a decode step's one row is not padded to 128 or 64;
- a product with fewer tiles than SMs splits K into slices until every SM has one
  (split-K): each slice reads its part of A and B and writes a partial C tile that the
  others add to. Memory-bound decode then streams its weights from every SM at the HBM's
  fitted efficiency, as GEMV and split-K kernels do.

Operands are staged through shared memory
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

from ..roofline import reread_bytes, slowest, staged_bytes
from ..tiles import GemmCounts, Tiling, dense_counts, rounds_work, skipped_flops
from .base import Cost, Family

if TYPE_CHECKING:
    from ir.ops import Gemm

    from ..target import Engine, Target
    from ..work import OpWork


def matrix_cost(work: OpWork, engine: Engine, fmt: str, target: Target, counts: list[GemmCounts] | None = None) -> Cost:
    """``counts``: the products' tile counts as measured (see ``backends.tiles``); None: dense."""
    itemsize = engine_storage(fmt).itemsize
    tilings = [tiling(g, engine) for g in work.gemms]
    counts = counts or [dense_counts(g, t) for g, t in zip(work.gemms, tilings)]
    flops = work.flops - skipped_flops(work.gemms, counts)
    compute = max(sum(tile_time(c, engine, fmt) for c in counts), flops / engine.peak(fmt))
    l2, hbm = target.by_role("l2"), target.outer
    on_chip = staged_bytes(work, counts, tilings, itemsize)
    sizes = {m.name: on_chip for m in target.inner}
    sizes[hbm.name] = work.io_bytes + reread_bytes(work, itemsize, l2.capacity_bytes / 2)
    footprint = {target.by_role("buffer").name: _tile_footprint(work.gemms, engine, itemsize),
                 l2.name: min(l2.capacity_bytes, work.io_bytes)}
    busy, bound = slowest(compute, sizes, target)
    return Cost(busy, sizes, bound, footprint, flops)


def tiling(g: Gemm, engine: Engine) -> Tiling:
    """Thread-block tiles over K, or over one of ``slices`` parts of K when the product has
    fewer tiles than SMs (split-K); each costs its padded FLOPs (its K rounded up to the K
    step). Summed over tiles, their A, B and C slices are the L2 -> shared-memory traffic: A
    once per column of tiles, B once per row of tiles, C (the partial sums) once per slice."""
    tm, tn = _tile_sides(g, engine)
    tk = engine.tile[2]
    steps = math.ceil(g.k / tk)
    tiles = g.batch * math.ceil(g.m / tm) * math.ceil(g.n / tn)
    slices = min(steps, max(1, int(engine.count) // tiles))
    depth = math.ceil(steps / slices) * tk
    return Tiling(tm, tn, depth if slices > 1 else None, scaled=2 * tm * tn * depth)


def _tile_sides(g: Gemm, engine: Engine) -> tuple[int, int]:
    """The tile's extent along the product's M and N. Libraries swap A and B for a product
    with fewer rows than the instruction's M (CUTLASS and TensorRT-LLM's swap-AB: compute
    C^T = B^T A^T), so a decode row rides the instruction's small N side (n8) instead of
    Hopper's m64; the orientation that pads fewer output elements wins."""
    full_m, full_n, _ = engine.tile
    least_m, least_n, _ = engine.mma or engine.tile
    sides = [(_covering(g.m, full_m, least_m), _covering(g.n, full_n, least_n)),
             (_covering(g.m, full_n, least_n), _covering(g.n, full_m, least_m))]
    return min(sides, key=lambda s: math.ceil(g.m / s[0]) * s[0] * math.ceil(g.n / s[1]) * s[1])


def _covering(extent: int, full: int, least: int) -> int:
    """The smallest of full, full/2, full/4 ... (not below ``least``) that covers ``extent``."""
    size = full
    while size // 2 >= max(extent, least):
        size //= 2
    return size


def tile_time(c: GemmCounts, engine: Engine, fmt: str) -> float:
    """Seconds for one product: waves of tiles, one tile per SM at a time."""
    return rounds_work(c, engine.count) / (engine.clock_hz * engine.ops_per_cycle(fmt) * engine.efficiency)


def _tile_footprint(gemms: list[Gemm], engine: Engine, itemsize: float) -> float:
    """Double-buffered A and B tiles (one K step each) in shared memory on every busy SM."""
    step = engine.tile[2]
    footprints = []
    for g in gemms:
        t = tiling(g, engine)
        tm, tn, tk = t.sizes(g)
        tiles = g.batch * math.ceil(g.m / tm) * math.ceil(g.n / tn) * math.ceil(g.k / tk)
        footprints.append(min(engine.count, tiles) * 2 * (tm + tn) * step * itemsize)
    return max(footprints)


def _check_engine(engine: Engine) -> str | None:
    if engine.role == "matrix" and (engine.tile is None or len(engine.tile) != 3):
        return "a GPU matrix engine needs tile = [M, N, K] (thread-block tile)"
    if engine.mma is not None and (len(engine.mma) != 3 or any(m > t for m, t in zip(engine.mma, engine.tile))):
        return "mma = [M, N, K] is the tensor core's instruction shape, no larger than tile"
    return None


class Gpu(Family):
    name = "gpu"
    shared_stream = True
    memory = ("buffer", "l2", "hbm")
    tiling = staticmethod(tiling)
    matrix_cost = staticmethod(matrix_cost)
    check_engine = staticmethod(_check_engine)
