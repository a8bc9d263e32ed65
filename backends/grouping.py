"""Kernel grouping: which ops of a graph run as one kernel, decided once for code generation
and for the schedulers alike.

A kernel reads its inputs from the outer memory once, keeps the values passed between its
ops on chip (registers, a buffer), writes its outputs once, and is one launch on a GPU.
The rules read each op's ``ir.ops.Pattern``, as TVM's FuseOps does; they are XLA's three
fusion kinds (``HloInstruction::FusionKind``: kLoop, kInput, kOutput):

- views and shape-only ops are no kernel: a Reshape shares its input's buffer, a Shape is a
  constant;
- an op that is deterministic and whose every input is known before the model runs (weights,
  shapes, results of other such ops) is *folded*: its kernel runs once, at compile time, and
  costs nothing per run;
- output fusion (kOutput): a contraction or a reduction takes the chain of elementwise or
  broadcast ops that are each the only reader of the previous result and keep its shape, as
  an epilogue applied before its output is stored; an epilogue op's other inputs must be
  ready before the kernel's root starts;
- loop and input fusion (kLoop, kInput): an elementwise, broadcast or injective op with one
  output, read by exactly one op, is computed inside that reader's loop when the reader is
  elementwise, broadcast, injective or a reduction. A contraction reads each input element
  many times, so it would recompute such a producer for every use: it never absorbs one,
  except the decoding of a weight stored in a narrow format (a DequantizeLinear or widening
  Cast of constants feeding its B operand, ``ir.passes.quantize``), which it decodes in its
  prologue, panel by panel, as low-bit GEMM kernels do; such a decode is never folded, or the
  narrow weight would be widened back to float32 before the model runs;
- every other op roots a kernel of its own (opaque ops always do).

No fusion crosses between folded and run-time ops, or through a view. Every input of a
kernel is ready before its root runs, so kernels listed by their roots' topological order
can run in that order.

Targets refine this only where an op runs apart from the rest of its kernel: on another
chip, or on the host after a capability fallback (``backends.scheduler``). A kernel never
spans devices, as execution providers partition a graph per device before fusing it
(onnxruntime's ``IExecutionProvider::GetCapability``). The bundled families fuse whatever
the rules allow (TPUs and GPUs through XLA's fusion kinds above, TorchInductor and TensorRT
likewise on GPUs; SRAM-dataflow compilers stream values between units without storing them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ir import ops
from ir.graph import Graph, Node
from ir.ops import Pattern
from ir.ops.quant import decodes_stored_weight

FREE = (Pattern.VIEW, Pattern.SHAPE)
"""No kernel: a view of its input's buffer, or a constant decided by shapes."""
INLINED = (Pattern.ELEMENTWISE, Pattern.BROADCAST, Pattern.INJECTIVE)
"""Computed inside the loop of their only reader, when that reader absorbs producers."""
ABSORBS = (Pattern.ELEMENTWISE, Pattern.BROADCAST, Pattern.INJECTIVE, Pattern.REDUCTION)
"""Read each input element a bounded number of times, so computing a producer inline costs no more."""
EPILOGUE_ROOTS = (Pattern.CONTRACTION, Pattern.REDUCTION)
EPILOGUE_OPS = (Pattern.ELEMENTWISE, Pattern.BROADCAST)


@dataclass(eq=False, slots=True)
class KernelGroup:
    """One kernel: its root, the producers computed inside loops of the kernel, and the
    epilogue applied to the root's output 0 before it is stored."""

    root: Node
    inlined: tuple[Node, ...] = ()
    epilogue: tuple[Node, ...] = ()
    once: bool = False
    """Folded: every input is known before the model runs, so it runs once, at compile time."""
    ops: tuple[Node, ...] = field(init=False)
    """Members in topological order (inlined producers all precede the root)."""

    def __post_init__(self):
        self.ops = (*self.inlined, self.root, *self.epilogue)

    @property
    def intermediates(self) -> list[str]:
        """Values passed from one member to another and read by nothing else: each inlined
        producer's output, and the chain from the root through its epilogue."""
        chain = [self.root, *self.epilogue][:len(self.epilogue)]
        return [n.outputs[0] for n in [*self.inlined, *chain]]


@dataclass
class Grouping:
    graph: Graph
    kernels: list[KernelGroup]
    """Kernels that run with every inference, in an order they can run in."""
    folded: list[KernelGroup]
    """Kernels computed once, before the model runs."""
    known: set[str]
    """Values known before the model runs: constants, shapes, results of folded kernels."""
    views: dict[str, str]
    """A view's output -> the value whose buffer it shares."""
    of: dict[str, KernelGroup] = field(init=False)
    """Op name -> its kernel; views and shape-only ops have none."""
    intermediates: set[str] = field(init=False)
    """Values that never leave their kernel: no buffer, no traffic to the outer memory."""

    def __post_init__(self):
        groups = [*self.folded, *self.kernels]
        self.of = {n.name: g for g in groups for n in g.ops}
        self.intermediates = {v for g in groups for v in g.intermediates}

    def apart(self, names: set[str]) -> Grouping:
        """This grouping with every kernel that holds an op of ``names`` cut into one kernel per
        op (a target runs those ops apart from the rest of their kernel)."""
        kernels = []
        for group in self.kernels:
            if names.isdisjoint(n.name for n in group.ops):
                kernels.append(group)
            else:
                kernels += [KernelGroup(n) for n in group.ops]
        return Grouping(self.graph, kernels, self.folded, self.known, self.views)


def group_kernels(graph: Graph) -> Grouping:
    """Group every op of ``graph`` into kernels (see the module docstring)."""
    nodes = graph.nodes
    order = {n.name: i for i, n in enumerate(nodes)}
    pattern = {}
    known = {name for name, v in graph.values.items() if v.const}
    ready: dict[str, int] = {}
    """value -> order of the op that materializes it (-1: known before the model runs)."""
    views: dict[str, str] = {}
    only_reader: dict[str, Node | None] = {}
    """value -> the op reading it, when exactly one op reads it once (else None)."""
    folded: set[str] = set()
    for i, node in enumerate(nodes):
        opdef = ops.lookup(node.op_type, node.domain)
        kind = pattern[node.name] = opdef.pattern
        inputs = [v for v in node.inputs if v]
        for v in inputs:
            only_reader[v] = node if v not in only_reader else None
        outs = [o for o in node.outputs if o]
        if kind is Pattern.VIEW:
            if inputs and inputs[0] in known:
                known.update(outs)
            for o in outs:
                ready[o] = ready.get(inputs[0], -1) if inputs else -1
            views[node.outputs[0]] = node.inputs[0]
            continue
        if kind is Pattern.SHAPE or inputs and opdef.deterministic and all(v in known for v in inputs) \
                and not decodes_stored_weight(graph, node):
            if kind is not Pattern.SHAPE:
                folded.add(node.name)
            known.update(outs)
            for o in outs:
                ready[o] = -1
        else:
            for o in outs:
                ready[o] = i

    outputs = set(graph.outputs)

    def single(value: str) -> Node | None:
        """The only reader of ``value``, if it has exactly one and is not a graph output."""
        return None if value in outputs else only_reader.get(value)

    epilogue_of: dict[str, Node] = {}
    inline_into: dict[str, Node] = {}
    for node in nodes:
        name, kind = node.name, pattern[node.name]
        if kind in EPILOGUE_ROOTS and name not in epilogue_of:
            value, phase, start = node.outputs[0], name in folded, order[name]
            while (reader := single(value)) is not None and pattern[reader.name] in EPILOGUE_OPS \
                    and reader.name not in epilogue_of and (reader.name in folded) == phase \
                    and graph.type_of(reader.outputs[0]).shape == graph.type_of(value).shape \
                    and all(ready.get(v, -1) < start for v in reader.inputs if v and v != value):
                epilogue_of[reader.name] = node
                value = reader.outputs[0]
        elif kind in INLINED and name not in epilogue_of:
            outs = [o for o in node.outputs if o]
            reader = single(outs[0]) if len(outs) == 1 else None
            if reader is not None and (reader.name in folded) == (name in folded) and (
                    pattern[reader.name] in ABSORBS or pattern[reader.name] is Pattern.CONTRACTION
                    and decodes_stored_weight(graph, node) and reader.inputs[1:2] == [outs[0]]):
                inline_into[name] = reader

    def root_of(node: Node) -> Node:
        while node.name in inline_into or node.name in epilogue_of:
            node = inline_into[node.name] if node.name in inline_into else epilogue_of[node.name]
        return node

    members: dict[str, tuple[list[Node], list[Node]]] = {}
    for node in nodes:
        if node.name in epilogue_of:
            members.setdefault(epilogue_of[node.name].name, ([], []))[1].append(node)
        elif node.name in inline_into:
            members.setdefault(root_of(node).name, ([], []))[0].append(node)
    groups = [KernelGroup(n, *map(tuple, members.get(n.name, ((), ()))), once=n.name in folded) for n in nodes
              if pattern[n.name] not in FREE and n.name not in epilogue_of and n.name not in inline_into]
    return Grouping(graph, [g for g in groups if not g.once], [g for g in groups if g.once], known, views)
