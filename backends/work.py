"""What one op asks of hardware: its FLOPs, the bytes it reads and writes, and its GEMMs.

FLOPs, op families and matrix products come from the op table (``ir.ops``), and which ops
share a kernel from ``backends.grouping``; this module adds what schedulers need beyond
them: which bytes are weights (values known before the model runs) and which are
activations, counted the way a fused kernel moves them: a value passed between two ops of
one kernel never reaches the outer memory, and an input two ops of a kernel read is read
once (by the first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ir import ops
from ir.graph import Graph, Node
from ir.ops import Gemm, Pattern
from ir.ops.quant import decodes_stored_weight

from .grouping import Grouping, KernelGroup, group_kernels


@dataclass
class OpWork:
    node: Node
    family: str
    fmt: str
    """The number format it computes in ("" for a free op, which computes nothing per run)."""
    flops: int
    activation_bytes: int
    weight_bytes: int
    output_bytes: int
    gemms: list[Gemm] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    """Bytes of each weight it reads, by value name, all resident (to count a shared weight once);
    ``weight_bytes`` is what it moves of them."""
    output_shape: tuple[int, ...] | None = None
    kernel: KernelGroup | None = None
    """The kernel it runs in; None: it costs nothing per run (a view, a shape-only op, or
    folded before the model runs, its outputs then being weights)."""
    prologue: bool = False
    """It decodes a stored weight in its product's prologue: the product's tiles take each
    decoded panel as it is made, so the product starts with it instead of after it."""

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def free(self) -> bool:
        return self.kernel is None

    @property
    def io_bytes(self) -> int:
        return self.activation_bytes + self.weight_bytes + self.output_bytes


def value_bytes(graph: Graph) -> dict[str, int]:
    """Bytes of every value (0 while symbolic), computed once: scheduling a 70B graph asks for
    them tens of thousands of times, and each ``TensorType.nbytes`` re-checks the shape."""
    return {name: v.type.nbytes or 0 for name, v in graph.values.items()}


def op_work(graph: Graph, node: Node, sizes: dict[str, int], grouping: Grouping, read: set[str]) -> OpWork:
    """The work of one op; ``sizes`` is :func:`value_bytes` of the graph; ``read`` holds the
    values its kernel's earlier ops already read (this op's reads are added to it)."""
    opdef = ops.lookup(node.op_type, node.domain)
    work = OpWork(node, opdef.family, "", 0, 0, 0, 0, [], {},
                  _static(graph, node.outputs[0]) if node.outputs and node.outputs[0] else None)
    count_traffic(work, sizes, grouping, read)
    if work.free:  # computes nothing per run: no format, FLOPs or products to cost
        return work
    work.fmt = _format([graph.values[v] if v else None for v in node.inputs],
                       [graph.values[o] for o in node.outputs if o])
    found = ops.static_context(graph, node)
    if found:
        work.flops = int(opdef.flops(found[1], found[2])) if opdef.flops else 0
        contractions = opdef.contractions(found[1], found[2]) if opdef.contractions else []
        work.gemms = [c.gemm for c in contractions]
        _read_weight_slices(graph, work, contractions, sizes)
    return work


def _read_weight_slices(graph: Graph, work: OpWork, contractions, sizes: dict[str, int]) -> None:
    """A product reads of a resident weight only the B matrices its contractions name: a routed
    mixture of experts reads the experts its tokens reach, all of them staying resident."""
    named: dict[str, int] = {}
    for c in contractions:
        if c.weight is not None and work.node.inputs[c.weight.input] in work.weights:
            named[work.node.inputs[c.weight.input]] = named.get(work.node.inputs[c.weight.input], 0) \
                + c.gemm.batch * c.gemm.k * c.gemm.n
    for value, elements in named.items():
        total = graph.type_of(value).numel
        if elements < total:
            work.weight_bytes -= round(sizes[value] * (1 - elements / total))


def count_traffic(work: OpWork, sizes: dict[str, int], grouping: Grouping, read: set[str]) -> None:
    """Set the op's kernel and the bytes it moves to and from the outer memory in that kernel.
    An input the op only indexes (``OpDef.indexed``: a Gather's table) moves the elements the op
    writes, its output's bytes (the same element type), while all of it stays resident."""
    node = work.node
    kernel = grouping.of.get(node.name)
    work.kernel = None if kernel is None or kernel.once else kernel
    on_chip, known = grouping.intermediates, grouping.known
    opdef = ops.lookup(node.op_type, node.domain)
    indexed, in_place = opdef.indexed, opdef.in_place
    weights, weight_bytes, activations = {}, 0, 0
    for i, v in enumerate(node.inputs):
        if in_place and i == in_place[0]:
            continue  # updated where it is: only the update is read and written
        if v and v not in on_chip and v not in read:
            read.add(v)
            moved = min(sizes[v], sizes[node.outputs[0]]) if i in indexed else sizes[v]
            if v in known:
                weights[v] = sizes[v]
                weight_bytes += moved
            else:
                activations += moved
    work.weights, work.weight_bytes, work.activation_bytes = weights, weight_bytes, activations
    work.output_bytes = sizes[node.inputs[in_place[1]]] if in_place else \
        sum(sizes[o] for o in node.outputs if o and o not in on_chip)


def graph_work(graph: Graph, sizes: dict[str, int] | None = None, grouping: Grouping | None = None) -> list[OpWork]:
    """Work of every op in topological order, in the kernels of ``grouping`` (default: the graph's)."""
    sizes = value_bytes(graph) if sizes is None else sizes
    grouping = group_kernels(graph) if grouping is None else grouping
    read: dict[int, set[str]] = {}
    works = [op_work(graph, node, sizes, grouping, read.setdefault(id(grouping.of.get(node.name)), set())
                     if node.name in grouping.of else set()) for node in graph.nodes]
    _reads_in_prologue(graph, works)
    return works


def _reads_in_prologue(graph: Graph, works: list[OpWork]) -> None:
    """A product that decodes its stored weight in its prologue (``backends.grouping``) reads the
    codes and scales itself, tile by tile, as low-bit GEMM kernels do (Marlin, XLA's operand
    fusion of a convert into a dot): their bytes are the product's, and the decode keeps only
    its conversions, which overlap the product's tiles (``OpWork.prologue``)."""
    index = {w.name: w for w in works}
    for w in works:
        kernel = w.kernel
        if kernel is None or w.node is kernel.root or ops.lookup(kernel.root.op_type, kernel.root.domain).pattern \
                is not Pattern.CONTRACTION or kernel.root.inputs[1:2] != w.node.outputs[:1] \
                or not decodes_stored_weight(graph, w.node):
            continue
        product = index[kernel.root.name]
        product.weights.update(w.weights)
        product.weight_bytes += w.weight_bytes
        product.activation_bytes += w.activation_bytes
        w.weights, w.weight_bytes, w.activation_bytes, w.prologue = {}, 0, 0, True


def _format(ins, outs) -> str:
    """The number format an op computes in: its first float tensor, else its first typed one."""
    dtypes = [v.type.dtype for v in [*ins, *outs] if v is not None and v.type.dtype is not None]
    floats = [d for d in dtypes if d.is_float]
    chosen = floats[0] if floats else dtypes[0] if dtypes else None
    return chosen.short if chosen else "f32"


def _static(graph: Graph, name: str) -> tuple[int, ...] | None:
    t = graph.values[name].type if name else None
    return tuple(t.shape) if t is not None and t.is_static else None


def live_bytes(graph: Graph, works: list[OpWork], sizes: dict[str, int] | None = None,
               on_chip: set[str] | frozenset = frozenset()) -> list[int]:
    """Activation bytes held while each op runs: every value already produced (or fed in)
    that this op or a later one still reads. Views alias their input and add nothing; values
    that stay inside a kernel (``on_chip``: ``Grouping.intermediates``) are never stored."""
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
            born.update({out: index[w.name] for out in w.node.outputs if out and out not in on_chip})
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
