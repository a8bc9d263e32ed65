"""Graph -> one LLVM module of kernels, plus what the executor needs to run them.

Which ops form one kernel is decided by ``backends.grouping`` (the schedulers cost the same
kernels); here each kernel is written:

- a producer the grouping inlines is never stored: its reader evaluates it at each index it
  reads, through the producer's pointwise rule;
- epilogue ops (MatMul + bias + activation) are applied to each result of the kernel's
  root before the store;
- views (Reshape ...) share their input's buffer; shape-only ops become constants;
- folded kernels (every input known before the model runs) are marked ``once``: the
  executor runs them when it is built, never per inference;
- an op given a :class:`~.rounding.Rounding` (code compiled for a target's numerics) rounds
  its results as it makes them (inlined, root and epilogue alike), and a product rounds its
  operands as its rule reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from llvmlite import ir as ll

from backends.grouping import KernelGroup, group_kernels
from ir import ops
from ir.graph import Graph, Node
from ir.ops import Pattern

from . import rules
from .emit import F32, STORAGE, Buffer, CodegenError, Kernel, row_extent
from .rounding import NONE, Rounding, round_value
from .tiling import HostTiling, host_tiling


@dataclass
class KernelSpec:
    """One compiled kernel: its symbol, the values behind its pointer arguments, its parallel extent."""

    name: str
    args: list[str]
    extent: int
    work: int
    ops: list[str]
    once: bool = False
    """Computes values known before the model runs (a folded kernel): run once, when the executor is built."""


@dataclass
class Lowered:
    module: ll.Module
    kernels: list[KernelSpec]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    """Arrays made at compile time (e.g. weights laid out for a kernel), by value name."""
    aliases: dict[str, str] = field(default_factory=dict)
    """value -> the value whose buffer it shares (Reshape outputs and the like)."""


class Context:
    """What a lowering rule sees: the kernel under construction and the graph's values."""

    def __init__(self, lowering: "Lowering", kernel: Kernel, group: KernelGroup):
        self.lowering, self.k, self.b, self.group = lowering, kernel, kernel.b, group
        self.graph, self.tiling = lowering.graph, lowering.tiling
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
            return self.result(producer, rules.POINTWISE[rules.key(producer.op_type, producer.domain)](
                self, producer, idx))
        return self.k.load(self.buffer(name), idx)

    # ------------------------------------------------------------- numerics
    def rounding(self, node: Node) -> Rounding:
        return self.lowering.numerics.get(node.name, NONE)

    def multiplied(self, node: Node, value: ll.Value) -> ll.Value:
        """A product's operand element as the op's engine multiplies it (rounded to its format)."""
        fmt = self.rounding(node).operands
        return round_value(self.k, value, fmt) if fmt else value

    def result(self, node: Node, value: ll.Value) -> ll.Value:
        """A value the op computed, as its engine holds it: a float rounded to its compute
        format (an op's integer outputs, such as TopK's indices, stay as they are)."""
        fmt = self.rounding(node).results
        return round_value(self.k, value, fmt) if fmt and value.type == F32 else value

    def read_bcast(self, name: str, out_idx: list[ll.Value]) -> ll.Value:
        """Read with numpy broadcasting against an output index."""
        shape = self.shape(name)
        zero = self.k.i64(0)
        idx = [zero if d == 1 else i for d, i in zip(shape, out_idx[len(out_idx) - len(shape):])]
        return self.read(name, idx)

    def write(self, name: str, idx: list[ll.Value], value: ll.Value) -> None:
        """Store a result; output 0 of the root first passes through the epilogue ops."""
        if name in self.group.root.outputs:
            value = self.result(self.group.root, value)
        if self.group.epilogue and name == self.group.root.outputs[0]:
            for node in self.group.epilogue:
                self._overrides[name] = value
                value = self.result(node, rules.POINTWISE[rules.key(node.op_type, node.domain)](self, node, idx))
                del self._overrides[name]
                name = node.outputs[0]
        self.k.store(self.buffer(name), idx, value)

    def final_output(self) -> str:
        """Name of the value the root's output 0 ends up as after the epilogue."""
        return self.group.epilogue[-1].outputs[0] if self.group.epilogue else self.group.root.outputs[0]


class Lowering:
    def __init__(self, graph: Graph, tiling: HostTiling, numerics: Mapping[str, Rounding] | None = None):
        self.graph, self.tiling = graph, tiling
        self.numerics = dict(numerics or {})
        self.constants: dict[str, np.ndarray] = {}
        self.grouping = group_kernels(graph)
        self.inlined: dict[str, Node] = {p.outputs[0]: p for g in [*self.grouping.folded, *self.grouping.kernels]
                                         for p in g.inlined}
        self.aliases: dict[str, str] = {}

    @staticmethod
    def dtype_of(data: np.ndarray):
        from ir.dtypes import DType
        return DType.from_numpy(data.dtype)

    def check(self) -> None:
        missing: dict[str, list[str]] = {}
        for node in self.graph.nodes:
            op = rules.key(node.op_type, node.domain)
            if not any(op in table for table in (rules.POINTWISE, rules.ANCHORS, rules.STATIC)) and not _view(node):
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

    def _buffers(self) -> None:
        """Views share their input's buffer, as does an in-place op's output a donated input's;
        outputs decided by shapes become constants."""
        donated = self.graph.donated_inputs()
        for node in self.graph.nodes:
            if _view(node):
                self.aliases[node.outputs[0]] = node.inputs[0]
            in_place = ops.lookup(node.op_type, node.domain).in_place
            buffer = node.inputs[in_place[0]] if in_place else ""
            if buffer in donated and self.graph.num_uses(buffer) == 1:
                self.aliases[node.outputs[0]] = buffer
            rule = rules.STATIC.get(rules.key(node.op_type, node.domain))
            if rule is not None:
                self.constants.update((name, data) for name, data in zip(node.outputs, rule(self.graph, node))
                                      if name and data is not None)

    def lower(self, module_name: str = "xpuc") -> Lowered:
        self.check()
        self._buffers()
        module = ll.Module(module_name)
        module.triple = ""
        kernels = []
        for i, group in enumerate([*self.grouping.folded, *self.grouping.kernels]):
            node = group.root
            name = f"k{i}_{_symbol(node.op_type)}"
            kernel = Kernel(module, name)
            ctx = Context(self, kernel, group)
            op = rules.key(node.op_type, node.domain)
            if op in rules.ANCHORS:
                extent = rules.ANCHORS[op](ctx, node)
            else:
                extent = _emit_pointwise(ctx, node)
            kernel.finish()
            work = sum(math.prod(ctx.shape(o)) for o in node.outputs if o) or 1
            kernels.append(KernelSpec(name, ctx.args, extent, work * _work_per_element(node, ctx),
                                      [n.name for n in group.ops], group.once))
        return Lowered(module, kernels, self.constants, self.aliases)


def _emit_pointwise(ctx: Context, node: Node) -> int:
    out = node.outputs[0]
    shape = ctx.shape(out)
    with ctx.k.parallel_rows(shape) as idx:
        ctx.write(out, idx, rules.POINTWISE[rules.key(node.op_type, node.domain)](ctx, node, idx))
    return row_extent(shape)


def _work_per_element(node: Node, ctx: Context) -> int:
    """Rough work per output element, for deciding whether to split a kernel across threads:
    a multiply and an add per step of the op's first matrix product, else one."""
    products = ops.contractions(ctx.graph, node)
    return max(1, 2 * products[0].gemm.k) if products else 1


def _symbol(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _view(node: Node) -> bool:
    return ops.lookup(node.op_type, node.domain).pattern is Pattern.VIEW


def value_inputs(graph: Graph) -> list[str]:
    """Graph inputs whose contents reach a shape operand (``OpDef.shape_operands``), not through
    a shape-only op (Shape, Size): code for the graph can only be generated per value of them."""
    pending = [node.inputs[i] for node in graph.nodes
               for i in ops.lookup(node.op_type, node.domain).shape_operands if i < len(node.inputs) and node.inputs[i]]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = graph.producer(name)
        if producer is not None and ops.lookup(producer.op_type, producer.domain).pattern is not Pattern.SHAPE:
            pending.extend(i for i in producer.inputs if i)
    return [name for name in graph.inputs if name in seen]


def lower(graph: Graph, tiling: HostTiling | None = None, numerics: Mapping[str, Rounding] | None = None) -> Lowered:
    """Lower a graph with static shapes into one LLVM module (see the module docstring);
    ``numerics`` maps op names to how they round (default: the host's float32 throughout)."""
    return Lowering(graph, tiling or host_tiling(), numerics).lower()
