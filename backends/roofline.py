"""Roofline pieces the family models share: the slowest of compute and each memory level,
how often a GEMM's operands must be re-read when they do not fit a buffer, and what its
tiles move on chip."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ir.ops import Gemm

if TYPE_CHECKING:
    from .target import Target
    from .tiles import GemmCounts, Tiling
    from .work import OpWork


def slowest(compute_s: float, sizes: dict[str, float], target: Target) -> tuple[float, str]:
    """(time, bound): compute and every level's transfer overlap, so the slowest one sets the pace."""
    memory_s = max((size / target.bandwidth(level) for level, size in sizes.items()), default=0.0)
    return (compute_s, "compute") if compute_s >= memory_s else (memory_s, "memory")


def operand_bytes(g: Gemm, itemsize: float) -> tuple[float, float, float]:
    """Bytes of A (m x k), B (k x n) and C (m x n) over the whole batch."""
    return (g.batch * g.m * g.k * itemsize, g.batch * g.k * g.n * itemsize, g.batch * g.m * g.n * itemsize)


def reread_bytes(work: OpWork, itemsize: float, capacity: float) -> float:
    """Extra outer-memory reads when a product's operands do not fit ``capacity`` together:
    the smaller operand stays, the larger streams in panels, and each panel re-reads the other.
    Fused attention (two products) keeps its scores on chip, so only single products count."""
    if len(work.gemms) != 1:
        return 0.0
    a, b, _ = operand_bytes(work.gemms[0], itemsize)
    if a + b <= capacity:
        return 0.0
    return min(a * (math.ceil(b / capacity) - 1), b * (math.ceil(a / capacity) - 1))


def streaming_bytes(work: OpWork, target: Target) -> dict[str, float]:
    """An op that reads its inputs and writes its outputs once, through every memory level."""
    return {m.name: float(work.io_bytes) for m in target.memory}


def staged_bytes(work: OpWork, counts: list[GemmCounts], tilings: list[Tiling], itemsize: float) -> float:
    """Bytes a product's tiles move between on-chip levels: A, B and C slices in the format the
    engine computes in, except weights stored narrower (int4, fp8 codes), which travel as
    stored and are decoded next to the engine, as low-bit GEMM kernels do."""
    moved = sum(c.elements for c in counts) * itemsize
    weights = sum(g.batch * g.k * g.n for g in work.gemms)
    stored = work.weight_bytes / weights if weights else itemsize
    if stored >= itemsize:
        return moved
    b = sum(g.batch * g.k * g.n * math.ceil(g.m / t.sizes(g)[0]) for g, t in zip(work.gemms, tilings))
    return moved - b * (itemsize - stored)
