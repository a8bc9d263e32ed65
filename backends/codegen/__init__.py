"""CPU code generation: lower a graph with static shapes to LLVM IR with llvmlite's builder.

``lower(graph, schedule)`` returns one module with a kernel per fused group of ops; the
rule modules below fill the op tables in :mod:`rules` when imported.
"""

from . import (attention, composite, conv, elementwise, integer, matmul, movement, norm, pool,  # noqa: F401
               quantize_linear, reduce)
from .emit import CodegenError
from .lower import KernelSpec, Lowered, lower, value_inputs
from .schedule import CpuSchedule, host_schedule

__all__ = ["lower", "Lowered", "KernelSpec", "CpuSchedule", "host_schedule", "CodegenError", "value_inputs"]
