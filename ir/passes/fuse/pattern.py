"""Small helpers for fusion passes: walk a pattern back from its last op, then replace it.

A fusion rule is a function ``rule(graph, node) -> bool`` that treats ``node`` as the *root*
(last op) of a pattern, walks producers backwards with :func:`producer_of` (or, from a
pattern's first op, readers forward with :func:`sole_consumer`), checks constants
with :func:`scalar` / :func:`close`, checks with :func:`private` that no op it is about to
delete feeds anything outside the pattern, and finally calls :func:`replace_with`.
:func:`rewrite` runs a list of rules over every op of the graph.

All helpers return ``None`` / ``False`` on a mismatch rather than raising: a pattern that
does not match is the normal case.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ...graph import Graph, Node

Rule = Callable[[Graph, Node], bool]

COMMUTATIVE = frozenset({"Add", "Mul"})


def _types(op_types: str | Iterable[str]) -> frozenset[str]:
    return frozenset([op_types] if isinstance(op_types, str) else op_types)


def producer_of(graph: Graph, value: str, op_types: str | Iterable[str], *, single_use: bool = True) -> Node | None:
    """The op of a type in ``op_types`` (default domain) that produces ``value``, or None.

    With ``single_use`` (the default) it also requires ``value`` to have exactly one reader
    and not be a graph output, so fusing the producer away cannot change another result.
    """
    node = graph.producer(value) if value else None
    if node is None or node.domain or node.op_type not in _types(op_types):
        return None
    if single_use and graph.num_uses(value) != 1:
        return None
    return node


def skip(graph: Graph, value: str, op_types: str | Iterable[str] = "Cast") -> tuple[str, list[Node]]:
    """Walk back from ``value`` through single-use ops of ``op_types`` (e.g. Casts).

    Returns the value found before them and the ops walked over (last op first).
    """
    walked = []
    while (node := producer_of(graph, value, op_types)) is not None:
        walked.append(node)
        value = node.inputs[0]
    return value, walked


def sole_consumer(graph: Graph, value: str, op_types: str | Iterable[str]) -> Node | None:
    """The one op (of a type in ``op_types``, default domain) reading ``value``, when it is read
    exactly once and is not a graph output; for matching forward from a pattern's first op."""
    readers = graph.consumers(value)
    if graph.num_uses(value) != 1 or len(readers) != 1:
        return None
    node = readers[0][0]
    return node if not node.domain and node.op_type in _types(op_types) else None


def scalar(graph: Graph, value: str) -> float | None:
    """The number held by a one-element constant, else None.

    One element only: a constant of shape [D] filled with one number would broadcast its
    operand to a new shape, so it is not a scalar for pattern purposes.
    """
    data = graph.const_data(value)
    if data is None or data.size != 1 or data.dtype.kind not in "fiub":
        return None
    return float(data.reshape(-1)[0])


def close(found: float | None, expected: float, rtol: float = 1e-3) -> bool:
    """``found`` is a number within ``rtol`` of ``expected`` (exporters round constants to fp16/fp32)."""
    return found is not None and abs(found - expected) <= rtol * abs(expected)


def operands(node: Node) -> list[tuple[str, str]]:
    """Both (this, other) orderings of a commutative binary op's inputs, the first only otherwise."""
    a, b = node.inputs[:2]
    return [(a, b), (b, a)] if node.op_type in COMMUTATIVE else [(a, b)]


PRODUCT_OPS = ("Mul", "Div", "Pow")


def product(graph: Graph, value: str) -> tuple[float, list[str], list[Node]]:
    """Flatten ``value`` as ``scale * leaf_1 * ... * leaf_n``.

    Walks the Mul tree under ``value``'s producer (the producer itself may have other
    readers, ops below it must be single-use), folding one-element constant factors and
    divisors into ``scale`` and expanding ``Pow(x, k)`` for k in 2..4 into k copies of x.
    So ``0.5 * x``, ``x / 2`` and ``x * 0.5`` all give (0.5, [x]); ``Pow(x, 2)`` and
    ``x * x`` both give (1.0, [x, x]). Returns (scale, leaves in input order, ops walked).
    """
    scale, leaves, nodes = 1.0, [], []

    def walk(v: str, top: bool) -> None:
        nonlocal scale
        node = producer_of(graph, v, PRODUCT_OPS, single_use=not top)
        second = scalar(graph, node.inputs[1]) if node is not None and len(node.inputs) == 2 else None
        if node is None or node.op_type == "Pow" and second not in (2.0, 3.0, 4.0) \
                or node.op_type == "Div" and not second:
            c = scalar(graph, v)
            if c is not None:
                scale *= c
            else:
                leaves.append(v)
            return
        nodes.append(node)
        if node.op_type == "Mul":
            walk(node.inputs[0], False)
            walk(node.inputs[1], False)
        elif node.op_type == "Div":
            scale /= second
            walk(node.inputs[0], False)
        else:
            leaves.extend([node.inputs[0]] * int(second))

    walk(value, True)
    return scale, leaves, nodes


def private(graph: Graph, nodes: Sequence[Node], root: Node) -> bool:
    """Every output of ``nodes`` except ``root``'s is read only by ops in ``nodes`` (no graph outputs).

    The DAG-shaped generalisation of "single use": ``x * x`` reading one value twice, or a
    mean feeding both a Sub and nothing else, is still private to the pattern.
    """
    inside = {n.name for n in nodes} | {root.name}
    for node in nodes:
        if node.name == root.name:
            continue
        for out in node.outputs:
            if out and (out in graph.outputs or any(c.name not in inside for c, _ in graph.consumers(out))):
                return False
    return True


def replace_with(graph: Graph, nodes: Sequence[Node], op_type: str, inputs: Sequence[str],
                 attrs: dict[str, Any] | None = None, *, domain: str = "", root: Node | None = None) -> Node:
    """Replace the pattern ``nodes`` by one op writing the root's output under the same name.

    ``root`` defaults to ``nodes[0]``; its first output keeps its name (and inferred type), so
    graph outputs and downstream readers are untouched. The other ``nodes`` are removed once
    nothing reads them (check :func:`private` before calling). Returns the new op.
    """
    root = root or nodes[0]
    out = root.outputs[0]
    hint = root.name
    graph.remove_node(root, drop_outputs=False)
    new = graph.add_node(op_type, inputs, [out], attrs, domain=domain, name=graph.fresh_name(f"{op_type}_{hint}"))
    pending = [n for n in nodes if n is not root]
    while dead := [n for n in pending if all(not o or graph.num_uses(o) == 0 for o in n.outputs)]:
        for node in dead:
            graph.remove_node(node)
        pending = [n for n in pending if n not in dead]
    return new


def add_constant_like(graph: Graph, data: np.ndarray, like: str, hint: str = "const") -> str:
    """A new constant holding ``data`` in the dtype of value ``like`` (for folded scales, biases)."""
    dtype = graph.type_of(like).dtype
    return graph.add_constant(np.asarray(data).astype(dtype.numpy if dtype is not None else np.float32), hint)


def rewrite(graph: Graph, rules: Sequence[Rule]) -> bool:
    """Try every rule on every op (as a pattern root), in topological order, once per op;
    whether any rule fired."""
    changed = False
    for node in graph.nodes:
        for rule in rules:
            if graph.has_node(node.name) and rule(graph, node):
                changed = True
                break
    return changed
