"""Systolic-array family (TPU, Inferentia, teaching NPUs): matrix products on R x C arrays.

A product is cut into *folds*, the pieces that fit the array; per fold, the streamed
dimension flows through while the array fills and drains (R + C - 2 cycles of skew).
Which dimensions fold and which stream depends on the stationary operand:

- output-stationary (os): M x N folds, K streams;
- weight-stationary (ws): K x N folds, M streams;
- input-stationary (is): K x M folds, N streams.

Cycles = ceil(batch * folds / arrays) * (streamed + R + C - 2) - 1. For os on one 128x128
array this reproduces every SCALE-Sim count in shared/calibration/scalesim_os_128x128.csv
exactly (consecutive folds overlap by one cycle: the -1). Operands come from an on-chip
buffer, filled from HBM by double-buffered DMA, so only the first tile's load is exposed;
panels are re-read from HBM when both operands do not fit half the buffer. Other ops run
on the vector unit, streaming through the buffer; so does fused attention's softmax, as a
companion record that overlaps the array's two products.
"""

from __future__ import annotations

import math

from ir import ops
from ir.dtypes import DType

from .roofline import operand_bytes, reread_bytes, slowest, streaming_bytes
from .schedule import Companion, Cost
from .target import Engine, Target
from .work import Gemm, OpWork

shared_stream = False
_SOFTMAX_FAMILY = ops.lookup("Softmax").family

_FOLDS = {
    "os": lambda g, r, c: (math.ceil(g.m / r) * math.ceil(g.n / c), g.k),
    "ws": lambda g, r, c: (math.ceil(g.k / r) * math.ceil(g.n / c), g.m),
    "is": lambda g, r, c: (math.ceil(g.k / r) * math.ceil(g.m / c), g.n),
}
"""dataflow -> (folds, streamed length) of one product on an r x c array."""

_FEEDS = {
    "os": lambda g, r, c: (math.ceil(g.n / c), math.ceil(g.m / r), 1),
    "ws": lambda g, r, c: (math.ceil(g.n / c), 1, math.ceil(g.k / r)),
    "is": lambda g, r, c: (1, math.ceil(g.m / c), math.ceil(g.k / r)),
}
"""dataflow -> how many times A, B and C cross between buffer and array (the stationary one once)."""


def gemm_cycles(g: Gemm, engine: Engine) -> int:
    rows, cols = engine.array
    folds, streamed = _FOLDS[engine.dataflow](g, rows, cols)
    rounds = math.ceil(g.batch * folds / engine.count)
    return rounds * (streamed + rows + cols - 2) - 1


def op_cost(work: OpWork, engine: Engine, fmt: str, target: Target) -> Cost:
    itemsize = DType.from_short(fmt).itemsize
    buffer, hbm = target.memory[0], target.outer
    first_tile, footprint, flops, companion = 0.0, {}, None, None
    if engine.role == "matrix" and work.gemms:
        cycles = sum(gemm_cycles(g, engine) for g in work.gemms)
        companion = _softmax_on_vector(work, target)
        flops = work.flops - companion.cost.flops if companion else None  # None: the array does it all
        compute = max(cycles / engine.clock_hz, (work.flops if flops is None else flops) / engine.peak(fmt))
        sizes = {m.name: sum(_feed_bytes(g, engine, itemsize) for g in work.gemms) for m in target.memory[:-1]}
        sizes[hbm.name] = work.io_bytes + reread_bytes(work, itemsize, buffer.capacity_bytes / 2)
        first_tile = min(_tile_bytes(work.gemms[0], engine, itemsize), sizes[hbm.name])
        footprint = {buffer.name: min(buffer.capacity_bytes, 2 * first_tile * engine.count)}
    else:
        compute = work.flops / (engine.peak(fmt) * engine.efficiency)
        sizes = streaming_bytes(work, target)
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
    sizes = {target.memory[0].name: 2 * scores.batch * scores.m * scores.n * DType.from_short(fmt).itemsize}
    busy, bound = slowest(rest / (vector.peak(fmt) * vector.efficiency), sizes, target)
    return Companion("softmax", vector, fmt, Cost(busy, sizes, bound, flops=rest))


def _feed_bytes(g: Gemm, engine: Engine, itemsize: float) -> float:
    rows, cols = engine.array
    reads = _FEEDS[engine.dataflow](g, rows, cols)
    return sum(size * times for size, times in zip(operand_bytes(g, itemsize), reads))


def _tile_bytes(g: Gemm, engine: Engine, itemsize: float) -> float:
    """One fold's operands: the streamed slices of A and B that the first fold needs."""
    rows, cols = engine.array
    return (min(g.m, rows) * g.k + g.k * min(g.n, cols)) * itemsize
