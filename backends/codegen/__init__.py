"""CPU code generation: lower a graph with static shapes to LLVM IR with llvmlite's builder.

``lower(graph, tiling)`` returns one module with a kernel per fused group of ops; the
rule modules below fill the op tables in :mod:`rules` when imported.
"""

from . import (attention, composite, conv, elementwise, integer, matmul, moe, movement, norm, pool,  # noqa: F401
               quantize_linear, reduce, scan)
from .emit import CodegenError
from .lower import KernelSpec, Lowered, lower, value_inputs
from .rounding import ROUNDINGS, Rounding
from .tiling import HostTiling, host_tiling

__all__ = ["lower", "Lowered", "KernelSpec", "HostTiling", "host_tiling", "CodegenError", "value_inputs", "Rounding",
           "ROUNDINGS"]
