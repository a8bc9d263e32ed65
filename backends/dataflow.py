"""SRAM-dataflow family (Groq LPU, Cerebras WSE): everything lives in on-chip SRAM.

There is no off-chip memory: weights stay resident and activations flow from op to op in
SRAM, so an op costs the slower of its arithmetic and its SRAM traffic. Chip count and
partitioning (pipeline across chips, tensor-parallel splits within an op) come from the
shared placement step, with SRAM as the capacity; transfers between chips are scheduled
on the interconnect by the driver. The schedule is static: the same graph always gets
the same order and times. A matrix engine with an ``array`` shape pads K and N to it.
"""

from __future__ import annotations

import math

from .roofline import slowest, streaming_bytes
from .schedule import Cost
from .target import Engine, Target
from .work import Gemm, OpWork

shared_stream = False


def op_cost(work: OpWork, engine: Engine, fmt: str, target: Target) -> Cost:
    flops = work.flops
    if engine.role == "matrix" and work.gemms and engine.array:
        flops = max(flops, sum(_padded_flops(g, engine) for g in work.gemms))
    sizes = streaming_bytes(work, target)
    busy, bound = slowest(flops / (engine.peak(fmt) * engine.efficiency), sizes, target)
    return Cost(target.outer.latency_s + busy, sizes, bound)


def _padded_flops(g: Gemm, engine: Engine) -> int:
    rows, cols = engine.array
    return 2 * g.batch * g.m * math.ceil(g.k / rows) * rows * math.ceil(g.n / cols) * cols
