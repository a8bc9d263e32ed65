"""Graph -> Graph passes and the default optimization pipeline.

``optimize(graph)`` copies the graph, then runs ``DEFAULT_PIPELINE``. Each pass follows the
contract in :mod:`.manager` (``run`` says whether it changed the graph; calling it returns
the graph, mutated in place), so it can also be used on its own.
"""

from __future__ import annotations

from typing import Iterable

from ..graph import Graph
from .cse import eliminate_common_subexpressions
from .dce import eliminate_dead_code
from .decode import DecodeStep, derive_decode_step
from .kv_cache import InPlaceKVCache
from .fold import fold, fold_constants
from .fuse import FUSIONS
from .manager import (STATIC_SHAPES, FixedPoint, Pass, PassManager, PassResult, Requirement, Sequence,
                      graph_pass)
from .quantize import quantize
from .shape_inference import infer_shapes
from .simplify import simplify, simplify_rules

PASSES: dict[str, Pass] = {p.name: p for p in [
    infer_shapes, fold, fold_constants, simplify_rules, simplify, eliminate_common_subexpressions,
    eliminate_dead_code, *FUSIONS.values(),
]}
"""Every optimization pass by its command-line name (groups included: fold-constants, simplify).
The generation passes (:class:`DecodeStep`, :class:`InPlaceKVCache`) derive other graphs of a
model rather than optimize one, so they are not pipeline entries."""

DEFAULT_PIPELINE = ["infer-shapes", "fold-constants", "simplify", "cse", "dce", *FUSIONS, "infer-shapes", "dce"]


def optimize(graph: Graph, *, pipeline: Iterable[str] = DEFAULT_PIPELINE, print_after_all: bool = False,
             print_after: Iterable[str] = (), manager: PassManager | None = None) -> Graph:
    """Run the optimization pipeline on a copy of ``graph`` and return the result."""
    manager = manager or PassManager([(name, PASSES[name]) for name in pipeline],
                                     print_after_all=print_after_all, print_after=set(print_after))
    return manager.run(graph.copy())


__all__ = ["PASSES", "DEFAULT_PIPELINE", "Pass", "PassResult", "Requirement", "STATIC_SHAPES", "Sequence",
           "FixedPoint", "graph_pass", "PassManager", "optimize", "infer_shapes", "fold", "fold_constants",
           "simplify", "simplify_rules", "eliminate_common_subexpressions", "eliminate_dead_code", "quantize",
           "DecodeStep", "derive_decode_step", "InPlaceKVCache"]
