"""Hardware families, each one module implementing ``base.Family``, registered here once.

Adding a family: a module in this package with a :class:`Family` subclass (its tiling,
matrix and vector cost, the memory roles and engine keys its model needs, whether its
engines share a stream), and its entry in :data:`FAMILIES`. Specs name it in ``family``.
"""

from .base import Companion, Cost, Family
from .dataflow import Dataflow
from .gpu import Gpu
from .systolic import Systolic

FAMILIES: dict[str, Family] = {f.name: f for f in (Gpu(), Systolic(), Dataflow())}

__all__ = ["FAMILIES", "Family", "Cost", "Companion"]
