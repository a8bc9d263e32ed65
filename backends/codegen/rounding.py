"""Rounding float32 values onto a narrower format's grid: how host code computes the way a
target's engines do, while it keeps computing in float32.

A target's matrix engine rounds a product's operands to its input format (bf16 on a TPU's
MXU, TF32 on NVIDIA tensor cores for float32 work) and accumulates in float32; a vector unit
with 16-bit ALUs rounds each result. Code generation knows nothing of targets: it gets a
:class:`Rounding` per op (``lower(graph, tiling, numerics)``), decided from the target's spec
by ``backends.numerics``, and applies it where the op reads operands or makes results.

A product of two values rounded to any format here is exact in float32 (at most 11 + 11
significant bits), so float32 multiply-adds on rounded operands are the engine's
multiply-then-accumulate-in-float32, up to the order of the sum. Round to nearest, ties to
even; NaN stays a (quiet) NaN; overflow goes to infinity. The same rounding runs on numpy
arrays at compile time (constant weights are rounded once, when packed) and in generated code
(activations, as they are read), bit for bit alike (``tests/test_target_numerics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir as ll

from .emit import F16, I32, CodegenError
from .lowp import round_bf16

DROPPED_BITS = {"bf16": 16, "tf32": 13}
"""Float formats with float32's exponent, by the float32 mantissa bits they drop (bf16 keeps
7, TF32 10)."""
ROUNDINGS = ("bf16", "f16", "tf32")
"""Formats host code rounds to (engine format names, as target specs spell them)."""
QUIET = 0x00400000


@dataclass(frozen=True)
class Rounding:
    """How an op's arithmetic departs from the host's float32: ``operands``, a product's inputs
    are rounded to this format before they are multiplied (the sum stays float32);
    ``results``, each value the op computes is rounded to it. "" keeps float32."""

    operands: str = ""
    results: str = ""

    def __post_init__(self):
        for fmt in (self.operands, self.results):
            if fmt and fmt not in ROUNDINGS:
                raise CodegenError(f"host code cannot round to {fmt!r}; it rounds to {', '.join(ROUNDINGS)}")


NONE = Rounding()


def round_value(k, value: ll.Value, fmt: str) -> ll.Value:
    """``value`` (float32, scalar or vector) rounded to ``fmt``, still float32."""
    b = k.b
    count = value.type.count if isinstance(value.type, ll.VectorType) else None
    shaped = (lambda t: ll.VectorType(t, count)) if count else (lambda t: t)
    if fmt == "f16":
        return b.fpext(b.fptrunc(value, shaped(F16)), value.type)
    drop = DROPPED_BITS[fmt]
    ints = shaped(I32)
    const = lambda v: ll.Constant(ints, v)  # noqa: E731
    keep = const((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    bits = b.bitcast(value, ints)
    lsb = b.and_(b.lshr(bits, const(drop)), const(1))
    rounded = b.and_(b.add(bits, b.add(lsb, const((1 << (drop - 1)) - 1))), keep)
    quiet = b.and_(b.or_(bits, const(QUIET)), keep)
    return b.bitcast(b.select(b.fcmp_unordered("uno", value, value), quiet, rounded), value.type)


def round_array(data: np.ndarray, fmt: str) -> np.ndarray:
    """float32 copy of ``data`` rounded to ``fmt`` as :func:`round_value` rounds."""
    x = np.ascontiguousarray(data, np.float32)
    if fmt == "f16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    if fmt == "bf16":
        return (round_bf16(x).astype(np.uint32) << 16).view(np.float32)
    drop = DROPPED_BITS[fmt]
    bits = x.view(np.uint32)
    keep = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    rounded = (bits + np.uint32((1 << (drop - 1)) - 1) + ((bits >> np.uint32(drop)) & np.uint32(1))) & keep
    quiet = (bits | np.uint32(QUIET)) & keep
    return np.where(np.isnan(x), quiet, rounded).astype(np.uint32).view(np.float32)
