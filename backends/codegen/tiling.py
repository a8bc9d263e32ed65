"""How the host code's loops are tiled, ordered and vectorized: the knobs lowering reads.

Lowering never hard-codes a tile size; it asks the tiling. ``host_tiling()`` gives the
defaults for the CPU this process runs on. (A target's own tiles, a systolic array's folds
or a GPU's thread blocks, are its family's ``tiling`` in ``backends.families``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.binding as llvm

from ir.dtypes import DType


@dataclass(frozen=True)
class HostTiling:
    """Loop-nest parameters for one CPU.

    vector_width: float32 lanes per SIMD register (8 for AVX2, 16 for AVX-512).
    mr, nr_vectors: the matmul micro-kernel's register block, ``mr`` rows by
        ``nr_vectors * vector_width`` columns of accumulators.
    mc, nc: rows and columns of one parallel matmul task; every ``mr``-row tile of the
        task reuses each packed ``nr``-column panel of B while it is hot in cache.
        ``mc`` is a multiple of ``mr`` so only the last row block has ragged rows.
    compute: the arithmetic format of float kernels: narrow storage (f16, bf16) widens to it.
    parallel_min_work: below this many FLOPs (or elements) a kernel runs on one thread.
    """

    vector_width: int = 8
    mr: int = 4
    nr_vectors: int = 2
    mc: int = 72
    nc: int = 256
    compute: DType = DType.FLOAT32
    parallel_min_work: int = 1 << 16
    cpu: str = field(default="", compare=False)

    @property
    def nr(self) -> int:
        return self.nr_vectors * self.vector_width


def host_tiling() -> HostTiling:
    """The default tiling for the host CPU, sized by its widest float vector."""
    features = llvm.get_host_cpu_features()
    width = 16 if features.get("avx512f") else 8 if features.get("avx") else 4
    mr = 6 if width == 8 else 4
    return HostTiling(vector_width=width, nr_vectors=2, mr=mr, mc=12 * mr, cpu=llvm.get_host_cpu_name())
