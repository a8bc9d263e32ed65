"""A static memory plan: intermediates share one arena wherever their lifetimes do not overlap.

Lifetimes are kernel-index intervals [first write, last read], inclusive, so a kernel never
writes over a buffer it is still reading. Placement is greedy by size, biggest first, each
buffer at the lowest offset that clears every placed buffer alive at the same time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALIGN = 64


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[str, int]
    peak_bytes: int
    """Size of the arena: the most bytes of intermediates alive at once, after packing."""
    total_bytes: int
    """What the intermediates would take with a buffer each."""


def value_bytes(graph, name: str) -> int:
    """Bytes of a value with a static type (sub-byte types unpacked: one byte each)."""
    t = graph.type_of(name)
    return math.prod(t.shape) * t.dtype.numpy.itemsize


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_memory(sizes: dict[str, int], lifetimes: dict[str, tuple[int, int]]) -> MemoryPlan:
    placed: list[tuple[int, int, int, int]] = []  # offset, size, start, end
    offsets: dict[str, int] = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], lifetimes[n][0], n)):
        size = _aligned(max(sizes[name], 1))
        start, end = lifetimes[name]
        offset = 0
        for o, s, st, en in sorted(p for p in placed if p[2] <= end and start <= p[3]):
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, start, end))
        offsets[name] = offset
    peak = max((o + s for o, s, _, _ in placed), default=0)
    return MemoryPlan(offsets, peak, sum(_aligned(max(s, 1)) for s in sizes.values()))
