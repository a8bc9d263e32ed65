"""Matrix-engine tiles: what one tile of a GEMM costs, counted the same way by the analytic
schedulers and by code generated for a target.

Each family says how it cuts a product (its ``tiling``: systolic folds, GPU thread blocks,
a dataflow chip's array blocks). A tile covers ``tm`` rows of A and C, ``tn`` columns of B
and C and ``tk`` of the shared dimension; a dimension the family does not cut (None) is
covered whole. For a tile of extents (mu, nu, ku) whose B block holds ``nnz`` nonzeros
(ku * nu when the engine multiplies zeros like anything else):

- ``macs``     = mu * nnz
- ``work``     = fixed + ceil(scaled * nnz / (ku * nu)), in the family's unit (cycles, FLOPs):
  ``scaled`` is the dense tile's work that zero weights let the engine skip, ``fixed`` what
  they do not (a systolic array's fill and drain);
- ``elements`` = mu*ku + ku*nu + mu*nu: the A, B and C slices the tile moves on chip.

The schedulers sum these in closed form (:func:`dense_counts`, weights assumed dense);
``backends.emulate.counters`` visits the same tiles at run time and adds them up from the
actual weights. Both results reach the cost models as :class:`GemmCounts`, so on dense
data they agree exactly, and an engine with ``zero_skipping`` is costed from what it met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ir.ops import Gemm


@dataclass(frozen=True)
class Tiling:
    tm: int | None
    tn: int | None
    tk: int | None
    scaled: int
    fixed: int = 0
    once: int = 0
    """Work paid once per product, not per tile (a pipeline's first load and last drain)."""

    def sizes(self, g: Gemm) -> tuple[int, int, int]:
        """Tile extents with uncut dimensions covering the whole product (at least 1)."""
        return self.tm or max(g.m, 1), self.tn or max(g.n, 1), self.tk or max(g.k, 1)


@dataclass(frozen=True)
class GemmCounts:
    """Sums over the tiles of one product (all of its batch)."""

    tiles: int
    work: int
    macs: int
    elements: int


def dense_counts(g: Gemm, t: Tiling) -> GemmCounts:
    """The per-tile quantities summed in closed form, every weight nonzero."""
    tm, tn, tk = t.sizes(g)
    across_m, across_n, across_k = math.ceil(g.m / tm), math.ceil(g.n / tn), math.ceil(g.k / tk)
    tiles = g.batch * across_m * across_n * across_k
    elements = g.batch * (g.m * g.k * across_n + g.k * g.n * across_m + g.m * g.n * across_k)
    return GemmCounts(tiles, tiles * (t.scaled + t.fixed), g.batch * g.m * g.n * g.k, elements)


def rounds_work(c: GemmCounts, units: float) -> float:
    """Work of the tiles dealt ``units`` at a time: each round costs the mean tile's work
    (exactly the tile's work when all tiles are alike, as dense ones are)."""
    return math.ceil(c.tiles / units) * c.work / c.tiles if c.tiles else 0.0


def skipped_flops(gemms: list[Gemm], counts: list[GemmCounts]) -> int:
    """FLOPs the engine did not perform because their weight was zero."""
    return 2 * sum(g.batch * g.m * g.n * g.k - c.macs for g, c in zip(gemms, counts))
