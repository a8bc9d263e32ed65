"""Graph -> Graph passes and the default optimization pipeline.

``optimize(graph)`` copies the graph, then runs ``DEFAULT_PIPELINE``. Each pass can also be
called on its own; all of them mutate and return the graph they are given.
"""

from __future__ import annotations

from typing import Iterable

from ..graph import Graph
from .cse import eliminate_common_subexpressions
from .dce import eliminate_dead_code
from .fold import fold_constants
from .fuse import FUSIONS
from .manager import PassFn, PassManager
from .quantize import quantize
from .shape_inference import infer_shapes
from .simplify import simplify

PASSES: dict[str, PassFn] = {
    "infer-shapes": infer_shapes,
    "fold-constants": fold_constants,
    "simplify": simplify,
    "cse": eliminate_common_subexpressions,
    "dce": eliminate_dead_code,
    **FUSIONS,
}
"""Every pass by its command-line name."""

DEFAULT_PIPELINE = ["infer-shapes", "fold-constants", "simplify", "cse", "dce", *FUSIONS, "infer-shapes", "dce"]


def optimize(graph: Graph, *, pipeline: Iterable[str] = DEFAULT_PIPELINE, print_after_all: bool = False,
             print_after: Iterable[str] = (), manager: PassManager | None = None) -> Graph:
    """Run the optimization pipeline on a copy of ``graph`` and return the result."""
    manager = manager or PassManager([(name, PASSES[name]) for name in pipeline],
                                     print_after_all=print_after_all, print_after=set(print_after))
    return manager.run(graph.copy())


__all__ = ["PASSES", "DEFAULT_PIPELINE", "PassManager", "optimize", "quantize", "infer_shapes", "fold_constants",
           "simplify", "eliminate_common_subexpressions", "eliminate_dead_code"]
