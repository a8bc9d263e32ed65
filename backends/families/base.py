"""What a hardware family is to xpuc: the interface every family module implements.

A family (GPU, systolic array, SRAM dataflow ...) turns a target spec's numbers into costs.
Everything else is shared: placement, the kernels (``backends.grouping``), list
scheduling, transfers and totals live in ``backends.scheduler``; the counting kernels of
emulated runs (``backends.emulate``) walk the family's tiling. A new family is one module
with a :class:`Family` subclass and its entry in ``backends.families.FAMILIES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..roofline import slowest, streaming_bytes

if TYPE_CHECKING:
    from ir.ops import Gemm

    from ..target import Engine, Target
    from ..tiles import GemmCounts, Tiling
    from ..work import OpWork


@dataclass
class Cost:
    """What a family's model says one op costs on one chip."""

    duration_s: float
    bytes: dict[str, float]
    bound: str
    footprint: dict[str, float] = field(default_factory=dict)
    """Bytes the op keeps resident at inner memory levels while it runs (tiles, buffers)."""
    flops: int | None = None
    """FLOPs of this part when the op is shared with a companion; None: all of the op's."""
    companion: Companion | None = None


@dataclass
class Companion:
    """Part of an op that runs at the same time on another engine of the chip, such as fused
    attention's softmax on a systolic chip's vector unit while the array multiplies."""

    label: str
    engine: Engine
    fmt: str
    cost: Cost


class Family(ABC):
    """One class of hardware. Subclasses set the class attributes and implement the methods
    (plain functions of their module, attached as static methods)."""

    name: ClassVar[str]
    """The spec's ``family`` value."""
    shared_stream: ClassVar[bool]
    """All engines of a chip take work from one queue (a GPU stream), so their ops never overlap."""
    memory: ClassVar[tuple[str, ...]]
    """Memory-level roles (``backends.target.MEMORY_ROLES``) its cost model reads; a spec must have them."""
    waits_for_outer: ClassVar[bool] = False
    """Each op that touches the outer memory first waits for its latency (no launch hides it)."""

    @staticmethod
    @abstractmethod
    def tiling(g: Gemm, engine: Engine) -> Tiling | None:
        """How the family cuts one product into tiles (``backends.tiles``); None: it counts no tiles."""

    @staticmethod
    @abstractmethod
    def matrix_cost(work: OpWork, engine: Engine, fmt: str, target: Target,
                    counts: list[GemmCounts] | None = None) -> Cost:
        """An op with matrix products on a matrix engine; ``counts``: the products' tile counts as
        measured by counting kernels, None for dense weights."""

    def vector_cost(self, work: OpWork, engine: Engine, fmt: str, target: Target) -> Cost:
        """Any other op: it streams its inputs and outputs through every level once, at the
        engine's efficiency, after the outer memory's latency when the family waits for it
        (``waits_for_outer``) and the op reads or writes that memory (an op inside a kernel
        that only passes values on chip does not)."""
        sizes = streaming_bytes(work, target)
        busy, bound = slowest(work.flops / (engine.peak(fmt) * engine.efficiency), sizes, target)
        wait = target.outer.latency_s if self.waits_for_outer and work.io_bytes else 0.0
        return Cost(wait + busy, sizes, bound)

    @staticmethod
    def check_engine(engine: Engine) -> str | None:
        """What a spec's engine lacks for this family's model, or None."""
        return None

    def op_cost(self, work: OpWork, engine: Engine, fmt: str, target: Target,
                counts: list[GemmCounts] | None = None) -> Cost:
        if engine.role == "matrix" and work.gemms:
            return self.matrix_cost(work, engine, fmt, target, counts)
        return self.vector_cost(work, engine, fmt, target)
