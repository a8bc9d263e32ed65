"""Emulated cost: a run on a hardware target, costed from what its counting kernels counted.

``runtime.compile(model, target=T)`` adds counting kernels (``backends.codegen.counters``)
to the host code; after each run, the counts go through the same scheduler the analytic
prediction uses (``backends.schedule(graph, T, counts)``), so placement, overlap, energy
and price are computed one way, and only what the data decides (zero weights skipped by a
``zero_skipping`` engine) can differ from the prediction.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

import backends
from backends.codegen import Lowered
from backends.codegen.counters import COUNTERS, Layout, attach as attach_counters
from backends.schedule import Schedule
from backends.target import Target
from ir.errors import XpucError
from ir.graph import Graph

from .executor import Executor


@dataclass
class Emulation:
    graph: Graph
    target: Target
    layout: Layout
    counters: np.ndarray
    _lock: threading.Lock = field(default_factory=threading.Lock)
    """One run at a time: every run of a specialization adds into the same counters."""

    def run(self, executor: Executor, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], Schedule]:
        with self._lock:
            self.counters[:] = 0
            outputs = executor.run(feeds)
            return outputs, backends.schedule(self.graph, self.target, self.layout.read(self.counters))


def hardware_target(target) -> Target | None:
    """None for the host CPU itself; else the preset name, spec path or ``Target`` to emulate."""
    if isinstance(target, Target):
        return target
    if not isinstance(target, (str, os.PathLike)):
        raise XpucError(f"target must be 'cpu', a preset name, a spec path or a backends.Target, "
                        f"got {type(target).__name__}")
    return None if target == "cpu" else backends.load_target(target)


def attach(graph: Graph, lowered: Lowered, target: Target) -> Emulation:
    layout = attach_counters(lowered, graph, target)
    return Emulation(graph, target, layout, lowered.constants[COUNTERS])
