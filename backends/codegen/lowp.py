"""Low-precision dot products: bf16 x bf16 -> fp32 and u8 x s8 -> int32, the host kernels the
portability work calls when a target computes in those formats.

A *group* of operand elements shares one 32-bit lane: 2 bf16 (``vdpbf16ps``, AVX512_BF16)
or 4 int8 (``vpdpbusd``, AVX512-VNNI / AVX-VNNI), called as LLVM intrinsics where the CPU
has them (``HostTiling.bf16_dot`` / ``int8_dot``):

- bf16: per lane ``acc = ftz(ftz(acc + a1 * b1) + a0 * b0)`` in fp32 (the odd element
  first, as measured on the instruction), bf16 inputs that are denormal read as zero and
  denormal sums flush to zero. A bf16 product is exact in fp32, so only the two adds round.
  A float MatMul / Gemm / FusedMatMul whose op rounds its operands to bf16 (code compiled
  for a target whose matrix engine multiplies bf16: ``backends.codegen.rounding``) takes it.
  A CPU without the instruction runs such products as float32 multiply-adds of operands
  rounded to bf16 (:mod:`matmul`): the same bf16 x bf16 -> fp32 arithmetic up to the order
  of the sum and denormals, at float32 speed, where emulating the instruction bit for bit
  in plain IR took about 5x (GPT-2 small on the AVX2 path).
- int8: ``acc + sum(u8(a_i) * s8(b_i))``, wrapping in int32 (no saturation), emulated
  exactly in plain IR where the CPU lacks vpdpbusd. ONNX MatMulInteger with uint8 A and a
  constant int8 B takes it (:mod:`integer`).

``tests/test_lowp.py`` checks both bit for bit against a numpy emulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType

from .emit import F32, I8, I32


@dataclass(frozen=True)
class DotFormat:
    name: str
    group: int
    """Operand elements per 32-bit lane."""
    operand: DType
    """What each operand element is stored as in a packed panel."""
    accumulator: ll.Type


BF16 = DotFormat("bf16", 2, DType.BFLOAT16, F32)
INT8 = DotFormat("int8", 4, DType.INT8, I32)

_INTRINSICS = {
    "bf16": ("llvm.x86.avx512bf16.dpbf16ps", {4: 128, 8: 256, 16: 512}),
    "int8": ("llvm.x86.avx512.vpdpbusd", {4: 128, 8: 256, 16: 512}),
}


def native(fmt: DotFormat, tiling) -> bool:
    """Whether the CPU's instruction computes ``fmt`` (else it is emulated)."""
    return tiling.bf16_dot if fmt is BF16 else tiling.int8_dot


def pack_group(k, fmt: DotFormat, elements: list[ll.Value]) -> ll.Value:
    """One 32-bit lane from ``fmt.group`` operand elements, element 0 in the low bits: bf16 bits
    (already rounded) or bytes."""
    b = k.b
    word = ll.Constant(I32, 0)
    bits = 32 // fmt.group
    for u, e in enumerate(elements):
        word = b.or_(word, b.shl(b.zext(e, I32), ll.Constant(I32, u * bits)))
    return word


def dot(k, fmt: DotFormat, acc: ll.Value, a: ll.Value, b_words: ll.Value, native_instruction: bool) -> ll.Value:
    """``acc`` (a vector of fp32 or int32 lanes) plus the group dot product of ``a`` and
    ``b_words`` (vectors of 32-bit lanes, each a packed group)."""
    lanes = acc.type.count
    if native_instruction:
        name, widths = _INTRINSICS[fmt.name]
        # Declared with i32 lanes (llvmlite has no bfloat type): LLVM upgrades the bf16 one on parse.
        symbol = f"{name}.{widths[lanes]}"
        fn = k.module.globals.get(symbol) or ll.Function(
            k.module, ll.FunctionType(acc.type, [acc.type, a.type, b_words.type]), symbol)
        return k.b.call(fn, [acc, a, b_words])
    assert fmt is INT8, "a CPU without vdpbf16ps takes no bf16 dot (matmul rounds operands instead)"
    return _emulate_int8(k, acc, a, b_words)


def _emulate_int8(k, acc, a, b_words):
    b = k.b
    lanes = acc.type.count
    bytes_ = ll.VectorType(I8, 4 * lanes)
    wide = ll.VectorType(I32, 4 * lanes)
    products = b.mul(b.zext(b.bitcast(a, bytes_), wide), b.sext(b.bitcast(b_words, bytes_), wide))
    for u in range(4):
        picks = ll.Constant(ll.VectorType(I32, lanes), [4 * i + u for i in range(lanes)])
        acc = b.add(acc, b.shuffle_vector(products, ll.Constant(wide, ll.Undefined), picks))
    return acc


# ------------------------------------------------------------------ packing (compile time)
def round_bf16(data: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), nearest even, NaN kept quiet: what ``Kernel.narrow`` emits."""
    bits = np.ascontiguousarray(data, np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    quiet = (bits >> 16) | 0x40
    return np.where(np.isnan(data), quiet, rounded).astype(np.uint16)


def pack_panels(data: np.ndarray, nr: int, fmt: DotFormat) -> np.ndarray:
    """(K, N) operand -> (ceil(N / nr), ceil(K / group), nr, group) panels of its storage
    elements (bf16 bits or int8), zero-padded: each group of K sits in one 32-bit lane."""
    k, n = data.shape
    g = fmt.group
    values = round_bf16(data) if fmt is BF16 else np.ascontiguousarray(data, np.int8)
    padded = np.zeros((-(-k // g) * g, -(-n // nr) * nr), values.dtype)
    padded[:k, :n] = values
    return padded.reshape(-1, g, padded.shape[1] // nr, nr).transpose(2, 0, 3, 1).copy()
