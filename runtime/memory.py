"""Refusing what cannot fit in memory, before anything is allocated or compiled.

Hostile sizes (``--input-shape input_ids=1x100000000`` on a 32k vocabulary) would otherwise
fail deep inside optimization or numpy with ``MemoryError``, or get the process killed by
the OS. Two checks run before any buffer of the run exists and before LLVM is called:

- :func:`refuse_huge_tensors`, as soon as input shapes are bound: a tensor the model
  computes that alone needs more than the memory available is named, with its size;
- :func:`refuse_huge_run`, once the memory plan is known: the arena of intermediates, the
  outputs and the inputs of one run together.

Available memory is what the kernel reports as available to a new allocation: Linux's
``MemAvailable`` plus free swap (elsewhere, the free physical pages).
"""

from __future__ import annotations

import os

from ir.errors import XpucError
from ir.graph import Graph
from ir.summary import format_bytes

from .memory_plan import MemoryPlan, value_bytes


class MemoryLimitError(XpucError):
    """A model, at the bound shapes, needs more memory than the machine has available."""


def available_bytes() -> int | None:
    """Bytes a new allocation can get now (None where the OS does not say)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return sum(int(fields[key].split()[0]) * 1024 for key in ("MemAvailable", "SwapFree"))
    except (OSError, KeyError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def refuse_huge_tensors(graph: Graph) -> None:
    """Raise if one input or computed tensor of ``graph`` (constants exist already) exceeds
    the memory available; names the largest."""
    available = available_bytes()
    if available is None:
        return
    sizes = [(value_bytes(graph, name), name) for name, value in graph.values.items()
             if not value.const and value.type.is_static and value.type.dtype is not None]
    size, name = max(sizes, default=(0, ""))
    if size > available:
        raise MemoryLimitError(f"tensor {name!r} ({graph.type_of(name)}) needs {format_bytes(size)}, more than the "
                               f"{format_bytes(available)} of memory available: use smaller input shapes")


def refuse_huge_run(graph: Graph, plan: MemoryPlan) -> None:
    """Raise if one run's buffers (intermediates' arena, outputs, inputs) exceed the memory available."""
    available = available_bytes()
    if available is None:
        return
    ends = {name: value_bytes(graph, name) for name in [*graph.inputs, *graph.outputs]}
    total = plan.peak_bytes + sum(ends.values())
    if total > available:
        name = max(ends, key=ends.get) if ends else ""
        raise MemoryLimitError(
            f"a run needs {format_bytes(total)} ({format_bytes(plan.peak_bytes)} of intermediates, the largest "
            f"input or output {name!r} {format_bytes(ends.get(name, 0))}), more than the "
            f"{format_bytes(available)} of memory available: use smaller input shapes")
