"""What one op asks of hardware: its FLOPs, the bytes it reads and writes, and its GEMMs.

FLOPs and op families come from the op table (``ir.ops``, via ``ir.summary.node_flops``);
this module adds what schedulers need beyond a FLOP count: which bytes are weights
(resident constants) and which are activations, and the matrix products an op is made
of (MatMul and Gemm directly, Conv as an im2col GEMM per group, Attention as its two
batched products), so tile and array models can pad and fold them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ir import ops
from ir.graph import Graph, Node
from ir.summary import node_flops

VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size",
                      "Constant"})
"""Ops that only relabel a buffer: compilers emit no kernel and move no data for them."""


@dataclass(frozen=True)
class Gemm:
    """``batch`` independent products of an (m x k) by a (k x n) matrix."""

    batch: int
    m: int
    n: int
    k: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


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
        return self.node.op_type in VIEW_OPS

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
    gemm_rule = _GEMMS.get(node.op_type)
    gemms = gemm_rule(graph, node) if gemm_rule else []
    return OpWork(node, opdef.family, _format(ins, outs), node_flops(graph, node) or 0, activations,
                  sum(weights.values()), sum(sizes[v.name] for v in outs), [g for g in gemms if g is not None],
                  weights, _static(graph, node.outputs[0]) if node.outputs and node.outputs[0] else None)


def graph_work(graph: Graph, sizes: dict[str, int] | None = None) -> list[OpWork]:
    """Work of every op in topological order, marking ops that only compute from constants."""
    sizes = value_bytes(graph) if sizes is None else sizes
    constants: set[str] = set()
    works = []
    for node in graph.nodes:
        work = op_work(graph, node, sizes, constants)
        inputs = [v for v in node.inputs if v]
        if inputs and all(v in work.weights for v in inputs):
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


def _matmul(graph: Graph, node: Node) -> list[Gemm | None]:
    a, out = _static(graph, node.inputs[0]), _static(graph, node.outputs[0])
    if a is None or out is None:
        return [None]
    m = a[-2] if len(a) > 1 else 1
    n = out[-1] if len(_static(graph, node.inputs[1]) or ()) > 1 else 1
    return [Gemm(max(1, math.prod(out) // max(1, m * n)), m, n, a[-1])]


def _gemm(graph: Graph, node: Node) -> list[Gemm | None]:
    a, out = _static(graph, node.inputs[0]), _static(graph, node.outputs[0])
    if a is None or out is None:
        return [None]
    return [Gemm(1, out[0], out[1], a[0] if node.attr("transA", 0) else a[1])]


def _conv(graph: Graph, node: Node) -> list[Gemm | None]:
    """im2col: each group multiplies (N*H'*W') x (C/g*kh*kw) patches by the (C/g*kh*kw) x (Cout/g) weights."""
    w, out = _static(graph, node.inputs[1]), _static(graph, node.outputs[0])
    if w is None or out is None:
        return [None]
    group = node.attr("group", 1)
    return [Gemm(group, out[0] * math.prod(out[2:]), w[0] // group, math.prod(w[1:]))]


def _attention(graph: Graph, node: Node) -> list[Gemm | None]:
    """Scores Q·Kᵀ (sq x skv over d) and context P·V (sq x dv over skv), per batch and query head."""
    q, k, out = (_static(graph, v) for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    if q is None or k is None or out is None:
        return [None]
    if len(q) == 4:
        b, heads, sq, d = q
        skv, dv = k[2], out[3]
    else:
        heads = node.attr("q_num_heads")
        b, sq, d = q[0], q[1], q[2] // heads
        skv, dv = k[1], out[2] // heads
    past = _static(graph, node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
    skv += past[2] if past else 0
    return [Gemm(b * heads, sq, skv, d), Gemm(b * heads, sq, dv, skv)]


_GEMMS = {"MatMul": _matmul, "FusedMatMul": _matmul, "Gemm": _gemm, "Conv": _conv, "Attention": _attention}


def live_bytes(graph: Graph, works: list[OpWork], sizes: dict[str, int] | None = None) -> list[int]:
    """Activation bytes held while each op runs: every value already produced (or fed in)
    that this op or a later one still reads. Views alias their input and add nothing."""
    if not works:  # everything folded away: no op runs, so nothing is held while one does
        return []
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
