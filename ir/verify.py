"""The IR verifier: structural invariants every pass must preserve."""

from __future__ import annotations

import networkx as nx

from .errors import VerificationError
from .graph import Graph


def verify(graph: Graph) -> Graph:
    """Check that ``graph`` is acyclic, every value has at most one producer and every use is defined.

    Returns the graph so it can sit in a pipeline. Raises VerificationError listing all problems.
    """
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(graph.nx):
        cycle = nx.find_cycle(graph.nx)
        problems.append("the graph has a cycle: " + " -> ".join(str(u) for u, *_ in cycle))
    produced: dict[str, str] = {}
    for name, data in graph.nx.nodes(data=True):
        node = data["node"]
        for out in node.outputs:
            if not out:
                continue
            if out in produced:
                problems.append(f"value {out!r} is produced by both {produced[out]!r} and {name!r}")
            produced[out] = name
            if out not in graph.values:
                problems.append(f"op {name!r} produces {out!r}, which has no value entry")
            elif graph.values[out].const:
                problems.append(f"op {name!r} produces {out!r}, which is also a constant")
    defined = set(produced) | set(graph.inputs) | {v.name for v in graph.initializers()}
    for name, data in graph.nx.nodes(data=True):
        for value in data["node"].inputs:
            if value and value not in defined:
                problems.append(f"op {name!r} reads {value!r}, which nothing defines")
    for out in graph.outputs:
        if out not in defined:
            problems.append(f"graph output {out!r} is not defined")
    for value in graph.inputs:
        if value in produced:
            problems.append(f"graph input {value!r} is also produced by op {produced[value]!r}")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise VerificationError(f"invalid graph {graph.name!r}: " + "; ".join(shown))
    return graph
