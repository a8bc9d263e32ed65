"""Emulated cost: a run on a hardware target, costed from what its counting kernels counted.

This layer sits above both host code generation (``backends.codegen``, which knows nothing
of targets) and the cost models (``backends.scheduler``, which know nothing of code):
:func:`rounding_plan` (:mod:`.numerics`) tells code generation how each op rounds on the
target, :func:`attach` adds counting kernels (:mod:`.counters`) to a lowered host module, and after
each run the counts go through the same scheduler the analytic prediction uses
(``backends.schedule(graph, T, counts)``), so placement, overlap, energy and price are
computed one way, and only what the data decides (zero weights skipped by a
``zero_skipping`` engine) can differ from the prediction.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from backends.codegen import Lowered
from backends.schedule import Schedule
from backends.scheduler import schedule
from backends.target import Target
from ir.graph import Graph

from .counters import COUNTERS, Layout, attach as attach_counters
from .numerics import TargetNumericsError, rounding_plan

__all__ = ["Emulation", "attach", "COUNTERS", "Layout", "rounding_plan", "TargetNumericsError"]


@dataclass
class Emulation:
    graph: Graph
    target: Target
    layout: Layout
    counters: np.ndarray
    _lock: threading.Lock = field(default_factory=threading.Lock)
    """One run at a time: every run of a specialization adds into the same counters."""

    def run(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
            feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], Schedule]:
        """Outputs of ``run(feeds)`` (the host executor, counting kernels included) and the
        schedule its counts give."""
        with self._lock:
            self.counters[:] = 0
            outputs = run(feeds)
            return outputs, schedule(self.graph, self.target, self.layout.read(self.counters))


def attach(graph: Graph, lowered: Lowered, target: Target) -> Emulation:
    """Add counting kernels for ``target`` to ``lowered`` (the host code of ``graph``)."""
    layout = attach_counters(lowered, graph, target)
    return Emulation(graph, target, layout, lowered.constants[COUNTERS])
