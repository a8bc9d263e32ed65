"""The pass contract and the pass manager.

A pass (:class:`Pass`) mutates a graph and says whether it changed it (``run`` returns a
:class:`PassResult`, as torch.fx's ``PassBase`` does); called directly, ``pass_(graph)``
returns the graph, so passes compose as plain functions. A pass may declare what it
requires (:class:`Requirement`, e.g. static shapes): the manager runs it only when the
graph meets that, and otherwise leaves a note saying which pass did not run and how to
make it run, instead of letting it silently find nothing.

Passes that need each other are composed here, not by calling one another:
:class:`Sequence` runs its members once in order; :class:`FixedPoint` runs rounds until one
changes nothing, with cleanup passes (DCE, shape inference) between rounds that did.

Printing mirrors MLIR's ``--mlir-print-ir-after-all``: a banner, then the IR text.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from ..errors import XpucError
from ..graph import Graph
from ..printer import format_graph
from ..verify import verify


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    changed: bool


@dataclass(frozen=True)
class Requirement:
    """Something a pass needs of a graph to do its work; ``hint`` says how a user provides it."""

    name: str
    holds: Callable[[Graph], bool]
    hint: str


STATIC_SHAPES = Requirement("static shapes", lambda g: all(g.type_of(name).is_static for name in g.inputs),
                            "bind the input shapes (--input-shape NAME=1x128, or input_shapes=...)")


class Pass:
    """A graph transformation with a name, what it requires, and ``run -> PassResult``."""

    name: str
    requires: tuple[Requirement, ...] = ()

    def run(self, graph: Graph) -> PassResult:
        raise NotImplementedError

    def __call__(self, graph: Graph) -> Graph:
        """Run on ``graph`` (mutated in place) and return it."""
        return self.run(graph).graph

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


class FunctionPass(Pass):
    """A pass written as ``fn(graph) -> bool`` (whether it changed the graph)."""

    def __init__(self, name: str, fn: Callable[[Graph], bool], requires: tuple[Requirement, ...] = ()):
        self.name, self.fn, self.requires = name, fn, requires
        self.__doc__ = fn.__doc__

    def run(self, graph: Graph) -> PassResult:
        return PassResult(graph, bool(self.fn(graph)))


def graph_pass(name: str, *, requires: tuple[Requirement, ...] = ()) -> Callable[[Callable[[Graph], bool]], Pass]:
    """Decorator: make ``fn(graph) -> changed`` the pass ``name``."""
    return lambda fn: FunctionPass(name, fn, requires)


class Sequence(Pass):
    """Members run once, in order."""

    def __init__(self, name: str, members: list[Pass]):
        self.name, self.members = name, members

    def run(self, graph: Graph) -> PassResult:
        changed = False
        for member in self.members:
            changed |= member.run(graph).changed
        return PassResult(graph, changed)


class FixedPoint(Pass):
    """``passes`` run in turn until a whole round of them changes nothing; after each round
    that changed the graph, the ``cleanup`` passes restore what the next round relies on
    (dead ops gone, types up to date)."""

    MAX_ROUNDS = 100

    def __init__(self, name: str, passes: list[Pass], cleanup: list[Pass] = ()):
        self.name, self.passes, self.cleanup = name, passes, list(cleanup)

    def run(self, graph: Graph) -> PassResult:
        for round_ in range(self.MAX_ROUNDS):
            if not any([p.run(graph).changed for p in self.passes]):
                return PassResult(graph, round_ > 0)
            for p in self.cleanup:
                p.run(graph)
        raise RuntimeError(f"{self.name} did not reach a fixed point in {self.MAX_ROUNDS} rounds")


@dataclass
class PassManager:
    """Runs ``passes`` (name, pass) in order.

    print_after_all / print_after: write the IR to ``out`` after every pass / the named ones.
    timings: seconds spent in each pass of the last run, for reports and benchmarks.
    notes: passes of the last run that did not run, and why (an unmet requirement).
    """

    passes: list[tuple[str, Pass]]
    print_after_all: bool = False
    print_after: set[str] = field(default_factory=set)
    verify_each: bool = True
    out: TextIO = sys.stderr
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        unknown = set(self.print_after) - {name for name, _ in self.passes}
        if unknown:
            raise XpucError(f"unknown pass {', '.join(sorted(unknown))}; passes are: "
                            f"{', '.join(name for name, _ in self.passes)}")

    def run(self, graph: Graph) -> Graph:
        self.timings, self.notes = {}, []
        for name, pass_ in self.passes:
            start = time.perf_counter()
            unmet = [r for r in pass_.requires if not r.holds(graph)]
            if unmet:
                self.notes.append(f"{name} did not run: it needs {', '.join(r.name for r in unmet)}; "
                                  + "; ".join(r.hint for r in unmet))
            else:
                graph = pass_.run(graph).graph
                if self.verify_each:
                    verify(graph)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            if self.print_after_all or name in self.print_after:
                self.out.write(f"// ----- IR after {name} ({len(graph)} ops) ----- //\n{format_graph(graph)}\n\n")
        return graph
