"""Graph -> one LLVM module of kernels, plus what the executor needs to run them.

Fusion is decided here, once, from the op tables in :mod:`rules`:

- a pointwise op whose single consumer evaluates it in its own loop is *inlined* (never
  stored): chains of elementwise and index-remapping ops become one loop nest;
- elementwise consumers of an anchor's output (MatMul + bias + activation) become its
  *epilogue*, applied to each result before the store;
- alias ops (Reshape ...) share their input's buffer.

Every remaining op is the root of one kernel. A kernel runs at the position of the last op
it contains, so every input it reads has been computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir as ll

from ir.graph import Graph, Node

from . import rules
from .emit import STORAGE, Buffer, CodegenError, Kernel, row_extent
from .schedule import CpuSchedule, host_schedule

@dataclass
class KernelSpec:
    """One compiled kernel: its symbol, the values behind its pointer arguments, its parallel extent."""

    name: str
    args: list[str]
    extent: int
    work: int
    ops: list[str]


@dataclass
class Lowered:
    module: ll.Module
    kernels: list[KernelSpec]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    """Arrays made at compile time (e.g. weights laid out for a kernel), by value name."""
    aliases: dict[str, str] = field(default_factory=dict)
    """value -> the value whose buffer it shares (Reshape outputs and the like)."""


@dataclass
class Group:
    root: Node
    epilogue: list[Node]
    position: int


class Context:
    """What a lowering rule sees: the kernel under construction and the graph's values."""

    def __init__(self, lowering: "Lowering", kernel: Kernel, group: Group):
        self.lowering, self.k, self.b, self.group = lowering, kernel, kernel.b, group
        self.graph, self.schedule = lowering.graph, lowering.schedule
        self.args: list[str] = []
        self._overrides: dict[str, ll.Value] = {}

    # ----------------------------------------------------------------- facts
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.graph.type_of(name).shape)

    def dtype(self, name: str):
        return self.graph.type_of(name).dtype

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.const_data(name) if name else None

    def operand(self, node: Node, index: int, default=None) -> np.ndarray:
        """An input code generation needs at compile time (axes, bounds); ``default`` when absent."""
        name = node.inputs[index] if index < len(node.inputs) else ""
        if not name:
            return default
        data = self.const(name)
        if data is None:
            raise CodegenError(f"{node.name}: input {index} ({name!r}) of {node.op_type} must be a constant "
                               "for CPU code generation")
        return data

    def buffer(self, name: str) -> Buffer:
        """The buffer behind a value, made an argument of this kernel on first use."""
        if name not in self.args:
            self.args.append(name)
        return Buffer.contiguous(self.args.index(name), self.dtype(name), self.shape(name))

    def add_constant(self, data: np.ndarray, hint: str) -> Buffer:
        """A compile-time array (e.g. a transposed weight) passed to this kernel."""
        name = f"{hint}__{len(self.lowering.constants)}"
        self.lowering.constants[name] = np.ascontiguousarray(data)
        self.args.append(name)
        return Buffer.contiguous(len(self.args) - 1, self.lowering.dtype_of(data), data.shape)

    # ------------------------------------------------------------- elements
    def read(self, name: str, idx: list[ll.Value]) -> ll.Value:
        """Element ``idx`` of a value: computed inline when fused, else loaded."""
        if name in self._overrides:
            return self._overrides[name]
        producer = self.lowering.inlined.get(name)
        if producer is not None:
            return rules.POINTWISE[rules.key(producer.op_type, producer.domain)](self, producer, idx)
        return self.k.load(self.buffer(name), idx)

    def read_bcast(self, name: str, out_idx: list[ll.Value]) -> ll.Value:
        """Read with numpy broadcasting against an output index."""
        shape = self.shape(name)
        zero = self.k.i64(0)
        idx = [zero if d == 1 else i for d, i in zip(shape, out_idx[len(out_idx) - len(shape):])]
        return self.read(name, idx)

    def write(self, name: str, idx: list[ll.Value], value: ll.Value) -> None:
        """Store a result; output 0 of the root first passes through the epilogue ops."""
        if self.group.epilogue and name == self.group.root.outputs[0]:
            for node in self.group.epilogue:
                self._overrides[name] = value
                value = rules.POINTWISE[rules.key(node.op_type, node.domain)](self, node, idx)
                del self._overrides[name]
                name = node.outputs[0]
        self.k.store(self.buffer(name), idx, value)

    def final_output(self) -> str:
        """Name of the value the root's output 0 ends up as after the epilogue."""
        return self.group.epilogue[-1].outputs[0] if self.group.epilogue else self.group.root.outputs[0]


class Lowering:
    def __init__(self, graph: Graph, schedule: CpuSchedule):
        self.graph, self.schedule = graph, schedule
        self.constants: dict[str, np.ndarray] = {}
        self.inlined: dict[str, Node] = {}
        self.aliases: dict[str, str] = {}

    @staticmethod
    def dtype_of(data: np.ndarray):
        from ir.dtypes import DType
        return DType.from_numpy(data.dtype)

    def check(self) -> None:
        missing: dict[str, list[str]] = {}
        for node in self.graph.nodes:
            op = rules.key(node.op_type, node.domain)
            if not any(op in table for table in (rules.POINTWISE, rules.ANCHORS, rules.ALIASES, rules.STATIC)):
                missing.setdefault(op, []).append(node.name)
        if missing:
            raise CodegenError("no CPU code generation for: " + "; ".join(
                f"{op} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})" for op, names in sorted(missing.items())))
        for name, value in self.graph.values.items():
            t = value.type
            used = self.graph.num_uses(name) or name in self.graph.inputs
            if used and (t.shape is None or not t.is_static or t.dtype is None):
                raise CodegenError(f"value {name!r} has type {t}: code generation needs static shapes "
                                   "(bind input shapes first)")
            if used and t.dtype not in STORAGE:
                raise CodegenError(f"value {name!r} has element type {t.dtype}, which CPU code generation "
                                   "does not support")
            if value.weightless and used:
                raise CodegenError(f"constant {name!r} has no data (the model was loaded with weights=False)")

    def plan(self) -> list[Group]:
        g = self.graph
        order = {n.name: i for i, n in enumerate(g.nodes)}
        kind = {n.name: rules.key(n.op_type, n.domain) for n in g.nodes}
        single = lambda v: g.num_uses(v) == 1 and v not in g.outputs  # noqa: E731
        in_epilogue: set[str] = set()
        groups: list[Group] = []
        for node in g.nodes:
            op = kind[node.name]
            if op in rules.ANCHORS:
                chain, v = [], node.outputs[0]
                while rules.ANCHORS[op].epilogue and v and single(v):
                    (consumer, _), = g.consumers(v)
                    if (kind[consumer.name] not in rules.ELEMENTWISE or consumer.name in in_epilogue
                            or self._shape(consumer.outputs[0]) != self._shape(v)):
                        break
                    chain.append(consumer)
                    v = consumer.outputs[0]
                position = max(order[n.name] for n in [node, *chain])
                readers = [reader for out in node.outputs[1:] if out for reader, _ in g.consumers(out)]
                if any(order[reader.name] < position for reader in readers):
                    chain, position = [], order[node.name]  # a reader of another output must not wait for it
                in_epilogue.update(n.name for n in chain)
                groups.append(Group(node, chain, position))
        for node in g.nodes:
            op = kind[node.name]
            if op in rules.STATIC:
                self.constants.update(zip(node.outputs, rules.STATIC[op](g, node)))
            elif op in rules.ALIASES:
                self.aliases[node.outputs[0]] = node.inputs[0]
            elif op in rules.POINTWISE and node.name not in in_epilogue:
                out = node.outputs[0]
                consumer = g.consumers(out)[0][0] if single(out) else None
                if consumer is not None and (kind[consumer.name] in rules.POINTWISE or
                                             (kind[consumer.name] in rules.ANCHORS and
                                              rules.ANCHORS[kind[consumer.name]].inline_inputs)):
                    self.inlined[out] = node
                else:
                    groups.append(Group(node, [], order[node.name]))
        return sorted(groups, key=lambda grp: grp.position)

    def _shape(self, name: str):
        return self.graph.type_of(name).shape

    def lower(self, module_name: str = "xpuc") -> Lowered:
        self.check()
        module = ll.Module(module_name)
        module.triple = ""
        kernels = []
        for i, group in enumerate(self.plan()):
            node = group.root
            name = f"k{i}_{_symbol(node.op_type)}"
            kernel = Kernel(module, name)
            ctx = Context(self, kernel, group)
            op = rules.key(node.op_type, node.domain)
            if op in rules.ANCHORS:
                extent = rules.ANCHORS[op].emit(ctx, node)
            else:
                extent = _emit_pointwise(ctx, node)
            kernel.finish()
            work = sum(math.prod(ctx.shape(o)) for o in node.outputs if o) or 1
            kernels.append(KernelSpec(name, ctx.args, extent, work * _cost(node, ctx),
                                      [node.name] + [n.name for n in group.epilogue]))
        return Lowered(module, kernels, self.constants, self.aliases)


def _emit_pointwise(ctx: Context, node: Node) -> int:
    out = node.outputs[0]
    shape = ctx.shape(out)
    with ctx.k.parallel_rows(shape) as idx:
        ctx.write(out, idx, rules.POINTWISE[rules.key(node.op_type, node.domain)](ctx, node, idx))
    return row_extent(shape)


def _cost(node: Node, ctx: Context) -> int:
    """Rough work per output element, for deciding whether to split a kernel across threads."""
    if node.op_type in ("MatMul", "Gemm", "FusedMatMul", "Conv", "Attention"):
        return max(1, int(np.prod(ctx.shape(node.inputs[1])[-2:-1] or (1,))) * 2)
    return 1


def _symbol(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def value_inputs(graph: Graph) -> list[str]:
    """Graph inputs whose contents reach a shape operand (:data:`rules.SHAPE_OPERANDS`), not
    through a Shape or Size op: code for the graph can only be generated per value of them."""
    pending = [node.inputs[i] for node in graph.nodes if not node.domain
               for i in rules.SHAPE_OPERANDS.get(node.op_type, ()) if i < len(node.inputs) and node.inputs[i]]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = graph.producer(name)
        if producer is not None and producer.op_type not in ("Shape", "Size"):
            pending.extend(i for i in producer.inputs if i)
    return [name for name in graph.inputs if name in seen]


def lower(graph: Graph, schedule: CpuSchedule | None = None) -> Lowered:
    """Lower a graph with static shapes into one LLVM module (see the module docstring)."""
    return Lowering(graph, schedule or host_schedule()).lower()
