"""Roofline pieces the family models share: the slowest of compute and each memory level,
and how often a GEMM's operands must be re-read when they do not fit a buffer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ir.ops import Gemm

if TYPE_CHECKING:
    from .target import Target
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
