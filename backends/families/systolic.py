"""Systolic-array family (TPU, Inferentia, teaching NPUs): matrix products on R x C arrays.

A product is cut into *folds*, the pieces that fit the array; per fold, the streamed
dimension flows through while the array fills and drains (R + C - 2 cycles of skew).
Which dimensions fold and which stream depends on the stationary operand:

- output-stationary (os): M x N folds, K streams;
- weight-stationary (ws): K x N folds, M streams;
- input-stationary (is): K x M folds, N streams.

Cycles = ceil(batch * folds / arrays) * (streamed + R + C - 2) - 1. For os on one 128x128
array this reproduces every SCALE-Sim count in shared/calibration/scalesim_os_128x128.csv
exactly (consecutive folds overlap by one cycle: the -1).

An array with ``weight_load_cycles`` (ws or is) holds a second set of stationary operands
and shifts the next fold's in while the current fold streams, as the TPU's double-buffered
weight tiles and the Neuron TensorE's fast weight load do. Folds then follow one another
without refilling the pipeline; each takes the longer of its stream and the load, so a
product with few streamed rows (M = 1 on a ws array: decode) is bound by loading weights:

    cycles = ceil(batch * folds / arrays) * max(streamed, load) + min(streamed, load) + R + C - 2 - 1

(the first fold's load and the last fold's drain paid once). A format whose peak is a
multiple of the array's one multiply-accumulate per cell per cycle (TPU v5e's MXU: 2 in int8
against 1 in bf16, ``peak_ops_per_cycle``) packs that many into each cell: every cycle count
divides by it. Folds are the tiles of
``backends.tiles``; with ``zero_skipping`` a fold's streamed part shrinks with its zero weights. Operands come from an on-chip
buffer, filled from HBM by double-buffered DMA, so only the first tile's load is exposed;
panels are re-read from HBM when both operands do not fit half the buffer. Other ops run
on the vector unit, streaming through the buffer; so does fused attention's softmax, as a
companion record that overlaps the array's two products.
"""

from __future__ import annotations


from typing import TYPE_CHECKING

from ir import ops
from ir.formats import engine_storage
from ir.ops import Gemm

from ..roofline import reread_bytes, slowest, staged_bytes
from ..tiles import GemmCounts, Tiling, dense_counts, rounds_work, skipped_flops
from .base import Companion, Cost, Family

if TYPE_CHECKING:
    from ..target import Engine, Target
    from ..work import OpWork

DATAFLOWS = ("os", "ws", "is")
_SOFTMAX_FAMILY = ops.lookup("Softmax").family

_TILES = {
    "os": lambda g, r, c: ((r, c, None), g.k),
    "ws": lambda g, r, c: ((None, c, r), g.m),
    "is": lambda g, r, c: ((c, None, r), g.n),
}
"""dataflow -> (the fold's (tm, tn, tk) on an r x c array, the streamed length)."""


def tiling(g: Gemm, engine: Engine) -> Tiling:
    """Folds: the streamed length shrinks with skipped zeros, the fill and drain do not; with
    preloaded weights the part of the load the stream does not hide does not either."""
    rows, cols = engine.array
    (tm, tn, tk), streamed = _TILES[engine.dataflow](g, rows, cols)
    load = engine.weight_load_cycles
    if load is None:
        return Tiling(tm, tn, tk, scaled=streamed, fixed=rows + cols - 2)
    load = int(load)
    return Tiling(tm, tn, tk, scaled=streamed, fixed=max(load - streamed, 0),
                  once=min(streamed, load) + rows + cols - 2)


def gemm_cycles(g: Gemm, engine: Engine, counts: GemmCounts | None = None) -> float:
    """Rounds of ``count`` folds at a time, plus what the pipeline pays once per product;
    consecutive folds overlap by one cycle (the -1)."""
    t = tiling(g, engine)
    return rounds_work(counts or dense_counts(g, t), engine.count) + t.once - 1


def macs_per_cell(engine: Engine, fmt: str) -> float:
    """Multiply-accumulates each cell of the array does per cycle in ``fmt``: its ops per cycle
    over two per cell, at least one (a format emulated in passes pays them instead)."""
    rows, cols = engine.array
    return max(1.0, engine.ops_per_cycle(fmt) / (2 * rows * cols))


def matrix_cost(work: OpWork, engine: Engine, fmt: str, target: Target, counts: list[GemmCounts] | None = None) -> Cost:
    """``counts``: the products' tile counts as measured (see ``backends.tiles``); None: dense."""
    itemsize = engine_storage(fmt).itemsize
    buffer, hbm = target.by_role("buffer"), target.outer
    tilings = [tiling(g, engine) for g in work.gemms]
    counts = counts or [dense_counts(g, t) for g, t in zip(work.gemms, tilings)]
    cycles = engine.passes(fmt) * sum(gemm_cycles(g, engine, c) for g, c in zip(work.gemms, counts)) \
        / macs_per_cell(engine, fmt)
    companion = _softmax_on_vector(work, target)
    flops = work.flops - skipped_flops(work.gemms, counts) - (companion.cost.flops if companion else 0)
    compute = max(cycles / engine.clock_hz, flops / engine.peak(fmt))
    sizes = {m.name: staged_bytes(work, counts, tilings, itemsize) for m in target.inner}
    sizes[hbm.name] = work.io_bytes + reread_bytes(work, itemsize, buffer.capacity_bytes / 2)
    first_tile = min(_tile_bytes(work.gemms[0], engine, itemsize), sizes[hbm.name])
    footprint = {buffer.name: min(buffer.capacity_bytes, 2 * first_tile * engine.count)}
    busy, bound = slowest(compute, sizes, target)
    return Cost(hbm.latency_s + first_tile / hbm.effective_bandwidth + busy, sizes, bound, footprint, flops,
                companion)


def _softmax_on_vector(work: OpWork, target: Target) -> Companion | None:
    """Fused attention's softmax (scale, mask, exp, sum, divide: the op's FLOPs beyond its two
    products) on the first vector engine that runs Softmax, reading and writing the scores in
    the on-chip buffer while the array computes the next block's scores."""
    rest = work.flops - sum(g.flops for g in work.gemms)
    if work.node.op_type != "Attention" or rest <= 0:
        return None
    vector = next((e for e in target.engines.values()
                   if e.role == "vector" and e.runs(_SOFTMAX_FAMILY, "Softmax", work.fmt)), None)
    if vector is None:
        return None
    fmt = vector.runs(_SOFTMAX_FAMILY, "Softmax", work.fmt)
    scores = work.gemms[0]
    sizes = {target.by_role("buffer").name: 2 * scores.batch * scores.m * scores.n * engine_storage(fmt).itemsize}
    busy, bound = slowest(rest / (vector.peak(fmt) * vector.efficiency), sizes, target)
    return Companion("softmax", vector, fmt, Cost(busy, sizes, bound, flops=rest))


def _tile_bytes(g: Gemm, engine: Engine, itemsize: float) -> float:
    """One fold's operands: the streamed slices of A and B that the first fold needs."""
    rows, cols = engine.array
    return (min(g.m, rows) * g.k + g.k * min(g.n, cols)) * itemsize


def _check_engine(engine: Engine) -> str | None:
    if engine.role == "matrix" and (engine.array is None or len(engine.array) != 2 or engine.dataflow not in DATAFLOWS):
        return f"a systolic matrix engine needs array = [rows, cols] and dataflow one of {', '.join(DATAFLOWS)}"
    if engine.weight_load_cycles is not None and engine.dataflow == "os":
        return "weight_load_cycles: an output-stationary array preloads no operand (ws or is only)"
    return None


class Systolic(Family):
    name = "systolic"
    shared_stream = False
    memory = ("buffer", "hbm")
    tiling = staticmethod(tiling)
    matrix_cost = staticmethod(matrix_cost)
    waits_for_outer = True
    check_engine = staticmethod(_check_engine)
