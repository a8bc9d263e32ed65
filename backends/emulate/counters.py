"""Counting kernels: code that walks a hardware target's tiles of every matrix product at run
time and adds each tile's quantities (``backends.tiles``) into a counters buffer.

``attach(lowered, graph, target)`` adds, right after the kernel that computes a product on
the host, one kernel that visits the product's tiles in the target family's tiling (a
systolic array's folds, a GPU's thread blocks, a dataflow chip's array blocks). Per tile it
adds the tile count, the family's work, MACs and operand elements into the op's slots of
one int64 array that every counting kernel receives as its first argument. On an engine
with ``zero_skipping`` it first counts the nonzero weights of the tile's B block in memory
as the model runs, so the counts follow the data; otherwise a tile's weights count as dense
and no weight is read. Counting never touches the arithmetic: how the products compute (in
the target's formats, :mod:`.numerics`, or the host's float32) is decided apart from it.

The counters live in ``Lowered.constants`` under :data:`COUNTERS` (the executor passes
constants by address); whoever runs the model zeroes them before a run and reads them
after it with :meth:`Layout.read`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from llvmlite import ir as ll

from backends.families import FAMILIES
from backends.precision import Policy
from backends.target import Target
from backends.tiles import GemmCounts, Tiling
from backends.work import graph_work
from ir import ops
from ir.dtypes import DType
from ir.graph import Graph, Node
from ir.ops import Gemm, Operand

from backends.codegen.emit import I64, Buffer, Kernel, is_float
from backends.codegen.lower import KernelSpec, Lowered

COUNTERS = "__xpuc_counters__"
FIELDS = tuple(f.name for f in fields(GemmCounts))


@dataclass
class Layout:
    """Which (op, product) each group of ``len(FIELDS)`` counters belongs to."""

    slots: list[tuple[str, int]]

    def read(self, counters: np.ndarray) -> dict[str, list[GemmCounts]]:
        table = counters[:len(self.slots) * len(FIELDS)].reshape(len(self.slots), len(FIELDS))
        counts: dict[str, list[GemmCounts]] = {}
        for (op, _), row in zip(self.slots, table):
            counts.setdefault(op, []).append(GemmCounts(*(int(v) for v in row)))
        return counts


def attach(lowered: Lowered, graph: Graph, target: Target) -> Layout:
    """Add a counting kernel after each matrix product the target's matrix engines run."""
    tiling = FAMILIES[target.family].tiling
    layout = Layout([])
    policy = Policy()
    for work in graph_work(graph):
        engine = None if work.free else policy.choose(work, target).engine
        if work.free or not work.gemms or engine is None or engine.role != "matrix":
            continue
        tilings = [tiling(g, engine) for g in work.gemms]
        if None in tilings:
            continue
        weights = [c.weight for c in ops.contractions(graph, work.node)]
        first = len(layout.slots)
        layout.slots += [(work.name, i) for i in range(len(work.gemms))]
        spec = _emit(lowered.module, graph, work.node, first, work.gemms, tilings,
                     weights if engine.zero_skipping else [None] * len(work.gemms))
        after = next((i + 1 for i, k in enumerate(lowered.kernels) if work.name in k.ops), len(lowered.kernels))
        lowered.kernels.insert(after, spec)
    lowered.constants[COUNTERS] = np.zeros(max(1, len(layout.slots) * len(FIELDS)), np.int64)
    return layout


def _emit(module: ll.Module, graph: Graph, node: Node, first: int, gemms: list[Gemm], tilings: list[Tiling],
          weights: list[Operand | None]) -> KernelSpec:
    name = f"count{first}_{''.join(c if c.isalnum() else '_' for c in node.name)}"
    k = Kernel(module, name)
    counters = k.base(Buffer.contiguous(0, DType.INT64, (1,)))
    args = [COUNTERS]
    for slot, (g, t, w) in enumerate(zip(gemms, tilings, weights), start=first):
        b_operand = None
        if w is not None:
            value = node.inputs[w.input]
            if value not in args:
                args.append(value)
            dtype = graph.type_of(value).dtype
            b_operand = (k.base(Buffer.contiguous(args.index(value), dtype, (1,))), dtype, w)
        _count_tiles(k, counters, slot * len(FIELDS), g, t, b_operand)
    k.finish()
    return KernelSpec(name, args, 1, 1, [node.name])


def _count_tiles(k: Kernel, counters, base: int, g: Gemm, t: Tiling, b_operand) -> None:
    """for each batch, m-tile, n-tile, k-tile: add the tile's quantities (module docstring of
    ``backends.tiles``); with ``b_operand`` the tile's nonzero weights are counted first."""
    b = k.b
    tm, tn, tk = t.sizes(g)
    w = b_operand[2] if b_operand else None
    batch_shape = w.batch_shape if w else (g.batch,)
    nnz_slot = k.alloca(I64, 1)
    with k.nest(batch_shape, name="batch") as bidx:
        b_off = k.i64(w.offset if w else 0)
        for i, stride in zip(bidx, w.batch_strides if w else ()):
            b_off = b.add(b_off, b.mul(i, k.i64(stride)))
        with k.loop(0, g.m, tm, name="tm") as i0, k.loop(0, g.n, tn, name="tn") as j0, \
                k.loop(0, g.k, tk, name="tk") as k0:
            mu, nu, ku = _extent(k, i0, tm, g.m), _extent(k, j0, tn, g.n), _extent(k, k0, tk, g.k)
            block = b.mul(ku, nu)
            if b_operand is None:
                nnz, work = block, k.i64(t.scaled + t.fixed)
            else:
                nnz = _nonzeros(k, b_operand, b_off, (k0, ku), (j0, nu), nnz_slot)
                kept = b.udiv(b.add(b.mul(k.i64(t.scaled), nnz), b.sub(block, k.i64(1))), block)
                work = b.add(k.i64(t.fixed), kept)
            elements = b.add(b.add(b.mul(mu, ku), block), b.mul(mu, nu))
            for field, value in zip(FIELDS, (k.i64(1), work, b.mul(mu, nnz), elements)):
                slot = b.gep(counters, [k.i64(base + FIELDS.index(field))])
                b.store(b.add(b.load(slot), value), slot)


def _extent(k: Kernel, start, size: int, limit: int):
    """min(size, limit - start): a tile's extent, short at the edge."""
    rest = k.b.sub(k.i64(limit), start)
    return k.b.select(k.b.icmp_signed("<", rest, k.i64(size)), rest, k.i64(size))


def _nonzeros(k: Kernel, b_operand, b_off, rows, cols, acc):
    """Nonzero elements (NaN counts as nonzero) of B[k0:k0+ku, j0:j0+nu]."""
    b = k.b
    pointer, dtype, w = b_operand
    (k0, ku), (j0, nu) = rows, cols
    b.store(k.i64(0), acc)
    with k.loop(k0, b.add(k0, ku), name="nzk") as kk, k.loop(j0, b.add(j0, nu), name="nzj") as j:
        offset = b.add(b_off, b.add(b.mul(kk, k.i64(w.row)), b.mul(j, k.i64(w.col))))
        value = k.widen(b.load(b.gep(pointer, [offset])), dtype)
        if is_float(value.type):
            nonzero = b.fcmp_unordered("!=", value, ll.Constant(value.type, 0.0))
        elif value.type.width == 1:
            nonzero = value
        else:
            nonzero = b.icmp_unsigned("!=", value, ll.Constant(value.type, 0))
        b.store(b.add(b.load(acc), b.zext(nonzero, I64)), acc)
    return b.load(acc)
