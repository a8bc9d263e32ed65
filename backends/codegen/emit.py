"""Builder helpers shared by every lowering rule: types, loops, loads and stores.

A kernel is one LLVM function ``void name(i8** args, i64 begin, i64 end)``: ``args`` holds
one pointer per buffer it touches, and ``[begin, end)`` is the slice of its parallel outer
loop this call runs, so the executor can split a kernel across threads.

Values inside a kernel live in a *compute type*: narrow floats (f16, bf16) widen to the
host tiling's compute format on load and round back on store; bool computes as ``i1``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

from llvmlite import ir as ll

from ir.dtypes import DType
from ir.errors import XpucError

from .minifloat import MINIFLOATS

I1, I8, I16, I32, I64 = (ll.IntType(n) for n in (1, 8, 16, 32, 64))
F16, F32, F64 = ll.HalfType(), ll.FloatType(), ll.DoubleType()
VOID_PTR = I8.as_pointer()
KERNEL_TYPE = ll.FunctionType(ll.VoidType(), [VOID_PTR.as_pointer(), I64, I64])

STORAGE: dict[DType, ll.Type] = {
    DType.FLOAT32: F32, DType.FLOAT64: F64, DType.FLOAT16: F16, DType.BFLOAT16: I16,
    DType.INT8: I8, DType.INT16: I16, DType.INT32: I32, DType.INT64: I64,
    DType.UINT8: I8, DType.UINT16: I16, DType.UINT32: I32, DType.UINT64: I64, DType.BOOL: I8,
    **{dtype: I8 for dtype in MINIFLOATS}, DType.INT4: I8, DType.UINT4: I8, DType.INT2: I8, DType.UINT2: I8,
}
"""How each dtype is laid out in memory (bf16 and float8 / float4 as their raw bits, sub-byte
integers one per byte, as numpy and ml_dtypes keep them)."""

SUB_BYTE_INTS = {DType.INT4: ll.IntType(4), DType.UINT4: ll.IntType(4), DType.INT2: ll.IntType(2),
                 DType.UINT2: ll.IntType(2)}
"""Computed in their own width, so arithmetic and casts wrap as they do in ml_dtypes."""


UNSIGNED = {DType.UINT2, DType.UINT4, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64}


class CodegenError(XpucError):
    """A graph cannot be lowered: an op, dtype or attribute combination codegen lacks."""


def compute_type(dtype: DType) -> ll.Type:
    """The type a value of ``dtype`` is computed in."""
    if dtype is DType.BOOL:
        return I1
    if dtype in (DType.FLOAT16, DType.BFLOAT16, DType.FLOAT32) or dtype in MINIFLOATS:
        return F32
    if dtype in SUB_BYTE_INTS:
        return SUB_BYTE_INTS[dtype]
    if dtype not in STORAGE:
        raise CodegenError(f"element type {dtype} is not supported by CPU code generation")
    return STORAGE[dtype]


def is_float(t: ll.Type) -> bool:
    return isinstance(t, (ll.FloatType, ll.DoubleType, ll.HalfType))


@dataclass(frozen=True)
class Buffer:
    """A tensor in memory as a kernel sees it: which argument, its dtype, shape and strides."""

    arg: int
    dtype: DType
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @staticmethod
    def contiguous(arg: int, dtype: DType, shape: Sequence[int]) -> "Buffer":
        strides, step = [], 1
        for d in reversed(shape):
            strides.append(step)
            step *= d
        return Buffer(arg, dtype, tuple(shape), tuple(reversed(strides)))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Kernel:
    """One function under construction, with loop, index and memory helpers."""

    def __init__(self, module: ll.Module, name: str):
        self.module = module
        self.fn = ll.Function(module, KERNEL_TYPE, name)
        self.fn.args[0].add_attribute("noalias")
        self.args, self.begin, self.end = self.fn.args
        self.entry = self.fn.append_basic_block("entry")
        body = self.fn.append_basic_block("body")
        self.b = ll.IRBuilder(body)
        self._ptrs: dict[tuple[int, str], ll.Value] = {}
        self._entry_builder = ll.IRBuilder(self.entry)

    def finish(self) -> ll.Function:
        self.b.ret_void()
        self._entry_builder.branch(self.fn.blocks[1])
        return self.fn

    # ------------------------------------------------------------- constants
    @staticmethod
    def i64(v: int) -> ll.Constant:
        return ll.Constant(I64, int(v))

    def const(self, t: ll.Type, v) -> ll.Constant:
        if is_float(t):
            return ll.Constant(t, float(v))
        if t == I1:
            return ll.Constant(I1, int(bool(v)))
        return ll.Constant(t, int(v))

    # ---------------------------------------------------------------- memory
    def base(self, buf: Buffer, t: ll.Type | None = None) -> ll.Value:
        """Typed base pointer of an argument, loaded once in the entry block."""
        t = t or STORAGE[buf.dtype]
        key = (buf.arg, str(t))
        if key not in self._ptrs:
            e = self._entry_builder
            raw = e.load(e.gep(self.args, [self.i64(buf.arg)], inbounds=True))
            self._ptrs[key] = e.bitcast(raw, t.as_pointer())
        return self._ptrs[key]

    def offset(self, buf: Buffer, idx: Sequence[ll.Value]) -> ll.Value:
        """Linear element offset of ``idx`` (aligned to the buffer's trailing dims; size-1 dims broadcast)."""
        idx = list(idx)[len(idx) - len(buf.shape):] if buf.shape else []
        total = self.i64(0)
        for i, size, stride in zip(idx, buf.shape, buf.strides):
            if size != 1 and stride != 0:
                total = self.b.add(total, self.b.mul(i, self.i64(stride)) if stride != 1 else i)
        return total

    def addr(self, buf: Buffer, idx: Sequence[ll.Value], t: ll.Type | None = None) -> ll.Value:
        return self.b.gep(self.base(buf, t), [self.offset(buf, idx)], inbounds=True)

    def load(self, buf: Buffer, idx: Sequence[ll.Value]) -> ll.Value:
        return self.widen(self.b.load(self.addr(buf, idx)), buf.dtype)

    def store(self, buf: Buffer, idx: Sequence[ll.Value], value: ll.Value) -> None:
        self.b.store(self.narrow(value, buf.dtype), self.addr(buf, idx))

    def widen(self, raw: ll.Value, dtype: DType) -> ll.Value:
        """Storage -> compute type (works on scalars and vectors)."""
        b = self.b
        vec = raw.type.count if isinstance(raw.type, ll.VectorType) else None
        shaped = (lambda t: ll.VectorType(t, vec)) if vec else (lambda t: t)
        if dtype is DType.FLOAT16:
            return b.fpext(raw, shaped(F32))
        if dtype is DType.BFLOAT16:
            bits = b.shl(b.zext(raw, shaped(I32)), ll.Constant(shaped(I32), 16))
            return b.bitcast(bits, shaped(F32))
        if dtype is DType.BOOL:
            return b.icmp_unsigned("!=", raw, ll.Constant(shaped(I8), 0))
        if dtype in MINIFLOATS:
            if vec:
                raise CodegenError(f"vectorized {dtype} loads are not supported by CPU code generation")
            return MINIFLOATS[dtype].decode(self, raw)
        if dtype in SUB_BYTE_INTS:
            return b.trunc(raw, shaped(SUB_BYTE_INTS[dtype]))
        return raw

    def narrow(self, value: ll.Value, dtype: DType) -> ll.Value:
        """Compute -> storage type: round f32 to f16 / bf16 / float8 (nearest even, NaN kept), bool
        and sub-byte integers to a byte (the latter zero-extended: ml_dtypes keeps the code's bits only)."""
        b = self.b
        if dtype is DType.FLOAT16:
            return b.fptrunc(value, F16)
        if dtype is DType.BFLOAT16:
            bits = b.bitcast(value, I32)
            lsb = b.and_(b.lshr(bits, self.const(I32, 16)), self.const(I32, 1))
            rounded = b.lshr(b.add(bits, b.add(lsb, self.const(I32, 0x7FFF))), self.const(I32, 16))
            quiet = b.or_(b.lshr(bits, self.const(I32, 16)), self.const(I32, 0x40))
            isnan = b.fcmp_unordered("uno", value, value)
            return b.trunc(b.select(isnan, quiet, rounded), I16)
        if dtype is DType.BOOL or dtype in SUB_BYTE_INTS:
            return b.zext(value, I8)
        if dtype in MINIFLOATS:
            return MINIFLOATS[dtype].encode(self, value)
        return value

    # ----------------------------------------------------------------- loops
    @contextlib.contextmanager
    def loop(self, start, stop, step: int = 1, name: str = "i") -> Iterator[ll.Value]:
        """``for (i = start; i < stop; i += step)``; start/stop are ints or i64 values."""
        b = self.b
        start = self.i64(start) if isinstance(start, int) else start
        stop = self.i64(stop) if isinstance(stop, int) else stop
        pre = b.block
        head = b.append_basic_block(f"{name}.head")
        body = b.append_basic_block(f"{name}.body")
        exit_ = b.append_basic_block(f"{name}.exit")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), body, exit_)
        b.position_at_end(body)
        yield i
        nxt = b.add(i, self.i64(step), flags=["nsw"])
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(exit_)

    @contextlib.contextmanager
    def nest(self, shape: Sequence[int], name: str = "d") -> Iterator[list[ll.Value]]:
        """Loops over every index of ``shape`` (row-major, last dim innermost)."""
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(self.loop(0, n, name=f"{name}{k}")) for k, n in enumerate(shape)]

    @contextlib.contextmanager
    def parallel_rows(self, shape: Sequence[int], inner: int = 1) -> Iterator[list[ll.Value]]:
        """The standard parallel loop: ``[begin, end)`` over the product of all dims but the last
        ``inner`` ones, delinearized into indices; the trailing dims loop inside. Extent:
        :func:`row_extent`."""
        outer, rest = list(shape[:len(shape) - inner]), list(shape[len(shape) - inner:])
        with self.loop(self.begin, self.end, name="row") as row:
            idx = self.delinearize(row, outer)
            with self.nest(rest, name="c") as inner_idx:
                yield idx + inner_idx

    def delinearize(self, flat: ll.Value, shape: Sequence[int]) -> list[ll.Value]:
        idx = []
        for k, n in enumerate(shape):
            below = math.prod(shape[k + 1:])
            q = self.b.udiv(flat, self.i64(below)) if below != 1 else flat
            idx.append(self.b.urem(q, self.i64(n)) if k else q)
        return idx

    # ------------------------------------------------------------- intrinsics
    def intrinsic(self, name: str, args: Sequence[ll.Value]) -> ll.Value:
        """An LLVM intrinsic whose result has its operands' type (``llvm.fma.v8f32`` ...)."""
        t = args[0].type
        suffix = f"v{t.count}{_suffix(t.element)}" if isinstance(t, ll.VectorType) else _suffix(t)
        symbol = f"{name}.{suffix}"
        fn = self.module.globals.get(symbol) or ll.Function(self.module, ll.FunctionType(t, [t] * len(args)), symbol)
        return self.b.call(fn, list(args))

    def libm(self, name: str, args: Sequence[ll.Value]) -> ll.Value:
        """A C math-library call (``tanhf``, ``erff``): compute type f32 gets the ``f`` suffix."""
        t = args[0].type
        symbol = name + ("f" if t == F32 else "")
        fn = self.module.globals.get(symbol) or ll.Function(self.module, ll.FunctionType(t, [t] * len(args)), symbol)
        return self.b.call(fn, list(args))

    def alloca(self, t: ll.Type, count: int) -> ll.Value:
        """Scratch memory for one call (allocated once, in the entry block)."""
        return self._entry_builder.alloca(t, size=self.i64(count))


def _suffix(t: ll.Type) -> str:
    return {F16: "f16", F32: "f32", F64: "f64"}.get(t) or f"i{t.width}"


def row_extent(shape: Sequence[int], inner: int = 1) -> int:
    """Number of parallel iterations of :meth:`Kernel.parallel_rows`."""
    return math.prod(shape[:len(shape) - inner]) if len(shape) > inner else 1
