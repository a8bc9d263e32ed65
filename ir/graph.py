"""The xpuc IR: a dataflow graph of ONNX-vocabulary ops over ``networkx.MultiDiGraph``.

Nodes of the networkx graph are op names; each carries a :class:`Node`. An edge
``producer -> consumer`` with key ``dst_index`` exists for every tensor that flows between
two ops, with attributes ``value``, ``src_index`` and ``dst_index``. Tensors themselves are
:class:`Value` objects kept in ``Graph.values``; graph inputs and constants have no producer.

Invariants (checked by :func:`ir.verify.verify`): acyclic, one producer per value, every
input of every op is defined. The mutation methods keep the edges, the producer map and
the use lists in step, so passes never touch networkx directly.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import networkx as nx
import numpy as np

from .dtypes import DType
from .errors import VerificationError
from .types import UNKNOWN, TensorType


@dataclass(eq=False)
class Value:
    """A tensor in the graph.

    ``const`` marks a compile-time constant (an initializer or a folded result). Its
    ``data`` may be ``None``: a *weightless* constant, whose shape and dtype are known but
    whose contents were not loaded (``weights=False``) so huge models can still be scheduled.
    """

    name: str
    type: TensorType = UNKNOWN
    const: bool = False
    data: np.ndarray | None = None

    @property
    def weightless(self) -> bool:
        return self.const and self.data is None


@dataclass(eq=False)
class Node:
    """One op: an ONNX op type (qualified by ``domain``), its attributes, and value names.

    A missing optional input is the empty string, as in ONNX.
    """

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    @property
    def qualified_type(self) -> str:
        return f"{self.domain}.{self.op_type}" if self.domain else self.op_type

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


DONATED = "xpuc.donated_inputs"
"""Metadata key: comma-separated graph inputs whose buffers the caller hands over, so an op
that updates an input in place (``OpDef.in_place``: a KV cache's TensorScatter) writes into
the caller's buffer instead of a copy (JAX's ``donate_argnums``)."""


class Graph:
    """A model: values, ops and the opset they are written in."""

    def __init__(self, name: str = "main", opsets: dict[str, int] | None = None):
        self.name = name
        self.opsets: dict[str, int] = dict(opsets or {"": 23})
        self.values: dict[str, Value] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.metadata: dict[str, str] = {}
        self._nx = nx.MultiDiGraph()
        self._producer: dict[str, tuple[str, int]] = {}
        self._uses: dict[str, list[tuple[str, int]]] = {}
        self._order: dict[str, int] = {}
        self._next_order = 0
        self._next_name: dict[str, int] = {}
        self._topo_cache: list[Node] | None = None

    # ----------------------------------------------------------------- queries
    @property
    def opset(self) -> int:
        """Version of the default ONNX domain."""
        return self.opsets[""]

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The underlying networkx graph (read it; mutate through Graph methods only)."""
        return self._nx

    def __len__(self) -> int:
        return self._nx.number_of_nodes()

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    @property
    def nodes(self) -> list[Node]:
        """Ops in a deterministic topological order (insertion order breaks ties)."""
        if self._topo_cache is None:
            try:
                order = nx.lexicographical_topological_sort(self._nx, key=self._order.__getitem__)
                self._topo_cache = [self._nx.nodes[n]["node"] for n in order]
            except nx.NetworkXUnfeasible:
                cycle = nx.find_cycle(self._nx)
                names = " -> ".join(str(u) for u, *_ in cycle)
                raise VerificationError(f"the graph has a cycle: {names}") from None
        return list(self._topo_cache)

    def node(self, name: str) -> Node:
        return self._nx.nodes[name]["node"]

    def has_node(self, name: str) -> bool:
        return name in self._nx

    def producer(self, value: str) -> Node | None:
        entry = self._producer.get(value)
        return None if entry is None else self.node(entry[0])

    def consumers(self, value: str) -> list[tuple[Node, int]]:
        """(node, input index) for every use of ``value`` by an op (graph outputs excluded)."""
        return [(self.node(n), i) for n, i in self._uses.get(value, ())]

    def num_uses(self, value: str) -> int:
        return len(self._uses.get(value, ())) + self.outputs.count(value)

    def donated_inputs(self) -> set[str]:
        """The inputs the caller hands over to be updated in place (``DONATED``)."""
        return {n for n in self.metadata.get(DONATED, "").split(",") if n in self.inputs}

    def type_of(self, value: str) -> TensorType:
        return self.values[value].type

    def const_data(self, value: str) -> np.ndarray | None:
        """Contents of a constant value, or None (not constant, or weightless)."""
        v = self.values.get(value)
        return v.data if v is not None and v.const else None

    def is_const(self, value: str) -> bool:
        v = self.values.get(value)
        return v is not None and v.const

    def initializers(self) -> list[Value]:
        return [v for v in self.values.values() if v.const]

    # --------------------------------------------------------------- building
    def fresh_name(self, hint: str) -> str:
        """A value or node name not yet used in this graph: ``hint`` and a number counted per
        hint, so a name depends only on the names asked for with the same hint before it (the
        same fused graph gets the same names whatever else its passes named)."""
        while True:
            number = self._next_name.get(hint, 0)
            self._next_name[hint] = number + 1
            name = f"{hint}_{number}"
            if name not in self.values and name not in self._nx:
                return name

    def add_value(self, name: str, type: TensorType = UNKNOWN, *, const: bool = False,
                  data: np.ndarray | None = None) -> Value:
        if name in self.values:
            raise VerificationError(f"value {name!r} is defined twice")
        value = Value(name, type, const, data)
        self.values[name] = value
        return value

    def add_input(self, name: str, type: TensorType) -> Value:
        value = self.add_value(name, type)
        self.inputs.append(name)
        return value

    def add_constant(self, data: np.ndarray, hint: str = "const") -> str:
        """Add a constant with known contents; returns its (fresh) name."""
        data = np.asarray(data)
        name = self.fresh_name(hint)
        self.add_value(name, TensorType(DType.from_numpy(data.dtype), tuple(data.shape)), const=True, data=data)
        return name

    def add_node(self, op_type: str, inputs: Iterable[str], outputs: Iterable[str] | int = 1,
                 attrs: dict[str, Any] | None = None, *, domain: str = "", name: str | None = None) -> Node:
        """Add an op. ``outputs`` is a list of value names or a count of fresh ones."""
        name = name if name is not None and name not in self._nx else self.fresh_name(name or op_type)
        if isinstance(outputs, int):
            outputs = [self.fresh_name(f"{name}_out") for _ in range(outputs)]
        node = Node(name, op_type, list(inputs), list(outputs), dict(attrs or {}), domain)
        for out in node.outputs:
            if out in self._producer:
                raise VerificationError(f"value {out!r} has two producers: {self._producer[out][0]!r} and {name!r}")
            if out in self.values and (self.values[out].const or out in self.inputs):
                raise VerificationError(f"op {name!r} writes {out!r}, which is a graph input or constant")
        self._nx.add_node(name, node=node)
        self._order[name] = self._next_order
        self._next_order += 1
        for index, out in enumerate(node.outputs):
            if out not in self.values:
                self.add_value(out)
            self._producer[out] = (name, index)
            for consumer, dst in self._uses.get(out, ()):
                self._nx.add_edge(name, consumer, key=dst, value=out, src_index=index, dst_index=dst)
        for dst, value in enumerate(node.inputs):
            if value:
                self._link(node, dst, value)
        self._topo_cache = None
        return node

    def _link(self, node: Node, dst: int, value: str) -> None:
        self._uses.setdefault(value, []).append((node.name, dst))
        producer = self._producer.get(value)
        if producer is not None:
            self._nx.add_edge(producer[0], node.name, key=dst, value=value, src_index=producer[1], dst_index=dst)

    def _unlink(self, node: Node, dst: int) -> None:
        value = node.inputs[dst]
        if not value:
            return
        self._uses[value].remove((node.name, dst))
        producer = self._producer.get(value)
        if producer is not None:
            self._nx.remove_edge(producer[0], node.name, key=dst)

    def set_input(self, node: Node, index: int, value: str) -> None:
        """Rewire input ``index`` of ``node`` to read ``value`` ("" for absent)."""
        while len(node.inputs) <= index:
            node.inputs.append("")
        self._unlink(node, index)
        node.inputs[index] = value
        if value:
            self._link(node, index, value)
        self._topo_cache = None

    def replace_uses(self, old: str, new: str) -> None:
        """Make every op and graph output that reads ``old`` read ``new`` instead."""
        for consumer, index in self.consumers(old):
            self.set_input(consumer, index, new)
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_node(self, node: Node, *, drop_outputs: bool = True) -> None:
        """Delete an op. Its output values are deleted too unless still in use."""
        for dst in range(len(node.inputs)):
            self._unlink(node, dst)
        for out in node.outputs:
            self._producer.pop(out, None)
            if drop_outputs and not self._uses.get(out) and out not in self.outputs:
                self.values.pop(out, None)
                self._uses.pop(out, None)
        self._nx.remove_node(node.name)
        del self._order[node.name]
        self._topo_cache = None

    def remove_value(self, name: str) -> None:
        """Delete a value that nothing produces or reads."""
        if self._uses.get(name) or name in self.outputs or name in self._producer:
            raise VerificationError(f"value {name!r} is still in use")
        self.values.pop(name, None)
        self._uses.pop(name, None)
        if name in self.inputs:
            self.inputs.remove(name)

    def make_constant(self, name: str, data: np.ndarray) -> None:
        """Turn an op-produced value into a constant holding ``data`` (its producer stays until DCE)."""
        value = self.values[name]
        producer = self._producer.pop(name, None)
        if producer is not None:
            node = self.node(producer[0])
            for consumer, dst in self._uses.get(name, ()):
                self._nx.remove_edge(node.name, consumer, key=dst)
            node.outputs[producer[1]] = ""
        value.const, value.data = True, np.asarray(data)
        value.type = TensorType(DType.from_numpy(value.data.dtype), tuple(value.data.shape))
        self._topo_cache = None

    # ------------------------------------------------------------------ copies
    def copy(self) -> "Graph":
        """A structural copy: new nodes, values and edges; constant arrays are shared, not copied."""
        other = _copy.copy(self)
        other.opsets = dict(self.opsets)
        other.values = {n: Value(v.name, v.type, v.const, v.data) for n, v in self.values.items()}
        other.inputs, other.outputs = list(self.inputs), list(self.outputs)
        other.metadata = dict(self.metadata)
        other._nx = nx.MultiDiGraph()
        for name, data in self._nx.nodes(data=True):
            n = data["node"]
            other._nx.add_node(name, node=Node(n.name, n.op_type, list(n.inputs), list(n.outputs),
                                               _copy.deepcopy(n.attrs), n.domain))
        other._nx.add_edges_from(self._nx.edges(keys=True, data=True))
        other._producer = dict(self._producer)
        other._uses = {k: list(v) for k, v in self._uses.items()}
        other._order = dict(self._order)
        other._topo_cache = None
        return other

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self)} ops, {len(self.inputs)} inputs, {len(self.outputs)} outputs>"
