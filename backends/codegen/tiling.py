"""How the host code's loops are tiled, ordered and vectorized: the knobs lowering reads.

Lowering never hard-codes a tile size; it asks the tiling. ``host_tiling()`` derives it for
the CPU code is generated for (:func:`cpu.target`: the host, or ``XPUC_CPU``) from its vector
width, register file and cache sizes. (A target's own tiles, a systolic array's folds or a
GPU's thread blocks, are its family's ``tiling`` in ``backends.families``.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ir.dtypes import DType

from . import cpu as cpus

NR_VECTORS = (1, 2, 4)
"""Register block widths, in vectors: powers of two, so panels tile the widths layers have
(768 = 12 x 64); a 3-vector block leaves a ragged panel on most of them."""
MAX_MR = 8
REFERENCE_K = 1024
"""The depth ``mc`` is sized for: an ``mc x REFERENCE_K`` fp32 block of A fills half of L2."""
MAX_MC_TILES = 24


@dataclass(frozen=True)
class HostTiling:
    """Loop-nest parameters for one CPU.

    vector_width: float32 lanes per SIMD register (16 for AVX-512, 8 for AVX2, 4 for SSE / NEON).
    mr, nr_vectors: the matmul micro-kernel's register block, ``mr`` rows by
        ``nr_vectors * vector_width`` columns of accumulators.
    mc, nc: rows and columns of one parallel matmul task; every ``mr``-row tile of the
        task reuses each packed ``nr``-column panel of B while it is hot in cache.
        ``mc`` is a multiple of ``mr`` so only the last row block has ragged rows.
    compute: the arithmetic format of float kernels: narrow storage (f16, bf16) widens to it.
    parallel_min_work: below this many FLOPs (or elements) a kernel runs on one thread.
    stream_rows: a product with at most this many rows (decode) is bound by reading B: one
        register tile holds all its rows, or a runtime B is streamed row by row (:mod:`matmul`).
    registers: vector registers, which bound a register tile.
    cores: how many cores run the parallel loops: kernels cut their work into enough tasks.
    l1_bytes: one core's L1 data cache: a streaming product's accumulators fill half of it.
    l2_bytes: one core's L2: a stored weight's panel decoded for a task's tiles fills half of it.
    bf16_dot, int8_dot: the CPU's bf16 pair (vdpbf16ps) and int8 quad (vpdpbusd) dot-product
        instructions may be used; without them :mod:`lowp` emulates them exactly.
    """

    vector_width: int = 8
    mr: int = 4
    nr_vectors: int = 2
    mc: int = 72
    nc: int = 256
    compute: DType = DType.FLOAT32
    parallel_min_work: int = 1 << 16
    cpu: str = field(default="", compare=False)
    stream_rows: int = 8
    registers: int = 16
    cores: int = 1
    l1_bytes: int = 32 << 10
    l2_bytes: int = 512 << 10
    bf16_dot: bool = False
    int8_dot: bool = False

    @property
    def nr(self) -> int:
        return self.nr_vectors * self.vector_width


def register_block(registers: int) -> tuple[int, int]:
    """(mr, nr_vectors) doing the most FMAs per load (mr broadcasts of A + nr_vectors loads of B
    feed mr * nr_vectors FMAs) whose accumulators, B vectors and one broadcast fit the register file."""
    blocks = [(mr, nv) for mr in range(1, MAX_MR + 1) for nv in NR_VECTORS if mr * nv + nv + 1 <= registers]
    return max(blocks, key=lambda b: (b[0] * b[1] / (b[0] + b[1]), b[0] * b[1]))


def host_tiling(cpu: cpus.Cpu | None = None) -> HostTiling:
    """The tiling for ``cpu`` (default: the CPU code is generated for)."""
    cpu = cpu or cpus.target()
    mr, nv = register_block(cpu.vector_registers)
    l2 = cpu.caches[1]
    tiles = max(1, min(MAX_MC_TILES, l2 // 2 // (mr * REFERENCE_K * 4)))
    return HostTiling(vector_width=cpu.float_lanes, mr=mr, nr_vectors=nv, mc=tiles * mr, cpu=cpu.name,
                      registers=cpu.vector_registers, cores=os.cpu_count() or 1, l1_bytes=cpu.caches[0],
                      l2_bytes=l2,
                      bf16_dot=cpu.bf16_dot, int8_dot=cpu.int8_dot)
