"""What one op asks of hardware: its FLOPs, the bytes it reads and writes, and its GEMMs.

FLOPs, op families, patterns and matrix products come from the op table (``ir.ops``); this
module adds what schedulers need beyond them: which bytes are weights (resident constants)
and which are activations, and which ops cost nothing at run time (views, shape-only ops,
and ops a compiler evaluates before the model runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ir import ops
from ir.graph import Graph, Node
from ir.ops import Gemm, Pattern
from ir.summary import node_flops

FREE_PATTERNS = frozenset({Pattern.VIEW, Pattern.SHAPE})
"""Ops that only relabel a buffer or follow from shapes: compilers emit no kernel and move no data for them."""


@dataclass
class OpWork:
    node: Node
    family: str
    fmt: str
    flops: int
    activation_bytes: int
    weight_bytes: int
    output_bytes: int
    gemms: list[Gemm] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    """Bytes of each constant input, by value name (to count a shared weight once)."""
    output_shape: tuple[int, ...] | None = None
    compile_time: bool = False
    """All inputs are constant: a compiler folds it before the model runs (e.g. a weight built
    by ConstantOfShape), so it costs nothing and its outputs are weights."""

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def view(self) -> bool:
        return ops.lookup(self.node.op_type, self.node.domain).pattern in FREE_PATTERNS

    @property
    def free(self) -> bool:
        """Costs nothing at run time: a view, or folded at compile time."""
        return self.view or self.compile_time

    @property
    def io_bytes(self) -> int:
        return self.activation_bytes + self.weight_bytes + self.output_bytes


def value_bytes(graph: Graph) -> dict[str, int]:
    """Bytes of every value (0 while symbolic), computed once: scheduling a 70B graph asks for
    them tens of thousands of times, and each ``TensorType.nbytes`` re-checks the shape."""
    return {name: v.type.nbytes or 0 for name, v in graph.values.items()}


def op_work(graph: Graph, node: Node, sizes: dict[str, int], constants: set[str] | frozenset = frozenset()) -> OpWork:
    """The work of one op; ``sizes`` is :func:`value_bytes` of the graph; ``constants`` names
    values computed from constants only (weights too)."""
    opdef = ops.lookup(node.op_type, node.domain)
    ins = [graph.values[v] if v else None for v in node.inputs]
    outs = [graph.values[o] for o in node.outputs if o]
    weights = {v.name: sizes[v.name] for v in ins if v is not None and (v.const or v.name in constants)}
    activations = sum(sizes[v.name] for v in ins if v is not None and v.name not in weights)
    return OpWork(node, opdef.family, _format(ins, outs), node_flops(graph, node) or 0, activations,
                  sum(weights.values()), sum(sizes[v.name] for v in outs),
                  [c.gemm for c in ops.contractions(graph, node)], weights,
                  _static(graph, node.outputs[0]) if node.outputs and node.outputs[0] else None)


def graph_work(graph: Graph, sizes: dict[str, int] | None = None) -> list[OpWork]:
    """Work of every op in topological order, marking ops that only compute from constants."""
    sizes = value_bytes(graph) if sizes is None else sizes
    constants: set[str] = set()
    works = []
    for node in graph.nodes:
        work = op_work(graph, node, sizes, constants)
        inputs = [v for v in node.inputs if v]
        if inputs and all(v in work.weights for v in inputs) and ops.lookup(node.op_type, node.domain).deterministic:
            work.compile_time = True
            constants.update(o for o in node.outputs if o)
        works.append(work)
    return works


def _format(ins, outs) -> str:
    """The number format an op computes in: its first float tensor, else its first typed one."""
    dtypes = [v.type.dtype for v in [*ins, *outs] if v is not None and v.type.dtype is not None]
    floats = [d for d in dtypes if d.is_float]
    chosen = floats[0] if floats else dtypes[0] if dtypes else None
    return chosen.short if chosen else "f32"


def _static(graph: Graph, name: str) -> tuple[int, ...] | None:
    t = graph.values[name].type if name else None
    return tuple(t.shape) if t is not None and t.is_static else None


def live_bytes(graph: Graph, works: list[OpWork], sizes: dict[str, int] | None = None) -> list[int]:
    """Activation bytes held while each op runs: every value already produced (or fed in)
    that this op or a later one still reads. Views alias their input and add nothing."""
    sizes = value_bytes(graph) if sizes is None else sizes
    index = {w.name: i for i, w in enumerate(works)}
    last_use: dict[str, int] = {}
    for i, w in enumerate(works):
        for v in w.node.inputs:
            if v and v not in w.weights:
                last_use[v] = i
    for v in graph.outputs:
        last_use[v] = len(works) - 1
    born = {v: 0 for v in graph.inputs}
    for w in works:
        if not w.free:
            born.update({out: index[w.name] for out in w.node.outputs if out})
    delta = [0] * (len(works) + 1)
    for v, start in born.items():
        end = max(start, last_use.get(v, start))
        size = sizes[v]
        delta[start] += size
        delta[end + 1] -= size
    live, running = [], 0
    for d in delta[:-1]:
        running += d
        live.append(running)
    return live
