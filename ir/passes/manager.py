"""The pass manager: runs Graph -> Graph passes in order, verifying and optionally printing.

Printing mirrors MLIR's ``--mlir-print-ir-after-all``: a banner, then the IR text.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from ..graph import Graph
from ..printer import format_graph
from ..verify import verify

PassFn = Callable[[Graph], Graph]


@dataclass
class PassManager:
    """Runs ``passes`` (name, function) in order.

    print_after_all / print_after: write the IR to ``out`` after every pass / the named ones.
    timings: seconds spent in each pass of the last run, for reports and benchmarks.
    """

    passes: list[tuple[str, PassFn]]
    print_after_all: bool = False
    print_after: set[str] = field(default_factory=set)
    verify_each: bool = True
    out: TextIO = sys.stderr
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.print_after) - {name for name, _ in self.passes}
        if unknown:
            from ..errors import XpucError
            raise XpucError(f"unknown pass {', '.join(sorted(unknown))}; passes are: "
                            f"{', '.join(name for name, _ in self.passes)}")

    def run(self, graph: Graph) -> Graph:
        self.timings = {}
        for name, fn in self.passes:
            start = time.perf_counter()
            graph = fn(graph)
            if self.verify_each:
                verify(graph)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            if self.print_after_all or name in self.print_after:
                self.out.write(f"// ----- IR after {name} ({len(graph)} ops) ----- //\n{format_graph(graph)}\n\n")
        return graph
