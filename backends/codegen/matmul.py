"""MatMul, Gemm and xpuc.FusedMatMul: a register-blocked, vectorized loop nest over packed B.

For float operands the output is computed in ``mr x nr`` tiles: ``mr * nr_vectors`` vector
accumulators live in registers while the K loop, innermost, broadcasts one element of A
per row and FMAs it with ``nr_vectors`` vector loads of B. B is read from *panels*: ``nr``
columns by all of K, contiguous, zero-padded past N, so the K loop streams memory with no
page-sized strides. A constant 2-D B is packed once at compile time; any other B is packed
into a stack scratch, one panel at a time, and reused by every row tile of the task;
a product with fewer rows than a tile reads a runtime B in place instead.

The parallel loop runs over (batch, ``mc``-row block, ``nc``-column block) tasks, so a
single-row product (decode) still splits across threads. Rows past the last full ``mr``
tile take a one-row tile; other dtypes take a scalar dot-product loop. Each result goes
through ``alpha``/``beta``/bias/activation and the fused epilogue before its store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType
from ir.ops.composite import ACTIVATIONS

from .elementwise import FLOAT_UNARY
from .emit import F32, I32, STORAGE, Buffer, compute_type, is_float
from .quantized import Panels, pack, stored_weight
from .rules import anchor

VECTOR_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
MAX_PANEL_BYTES = 1 << 20
"""Largest runtime-packed panel (it lives on the calling thread's stack); past it, scalar code."""
DIRECT_PANELS = 4
"""Width, in panels, of the in-place B reads of a product shorter than one row tile."""


@dataclass
class Operand:
    """A matrix operand inside a batched product: its buffer and strides by role."""

    buf: Buffer
    batch: tuple[int, ...]  # stride per output batch dim (0 where broadcast)
    row: int
    col: int


@dataclass
class Product:
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    packed: Buffer | None = None
    """B packed at compile time as (N / nr, K, nr) panels, when it is a constant matrix."""
    stored: Panels | None = None
    """B's codes, when B is a weight stored in a narrow format: decoded a panel at a time."""


def _matrix(ctx, name: str, buf: Buffer, batch_shape, transpose: bool, vector_role: str) -> Operand:
    """Strides of a (batched) matrix: a 1-D operand is a row (A) or a column (B)."""
    shape, strides = list(buf.shape), list(buf.strides)
    if len(shape) == 1:
        shape, strides = ([1] + shape, [0] + strides) if vector_role == "row" else (shape + [1], strides + [0])
    row, col = (strides[-1], strides[-2]) if transpose else (strides[-2], strides[-1])
    lead = len(batch_shape) - (len(shape) - 2)
    batch = [0] * lead + [s if d != 1 else 0 for d, s in zip(shape[:-2], strides[:-2])]
    return Operand(buf, tuple(batch), row, col)


def _product(ctx, node, trans_a: bool, trans_b: bool) -> Product:
    a_name, b_name = node.inputs[:2]
    a_shape, b_shape = ctx.shape(a_name), ctx.shape(b_name)
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    m, k = (a2[-1], a2[-2]) if trans_a else (a2[-2], a2[-1])
    n = b2[-2] if trans_b else b2[-1]
    a = _matrix(ctx, a_name, ctx.buffer(a_name), batch, trans_a, "row")
    data = ctx.const(b_name)
    vector = len(b_shape) == 2 and _vectorized(ctx, node, n) and k * ctx.tiling.nr * 4 <= MAX_PANEL_BYTES
    weight = stored_weight(ctx, b_name, trans_b)
    stored = pack(ctx, weight, b_name) if weight is not None and vector else None
    if weight is not None and stored is None:  # a layout panels do not take: decoded once, at compile time
        data = weight.dequantized()
    packed = data is not None and len(b_shape) == 2 and _vectorized(ctx, node, n)
    # A packed B is read from its panels only: no kernel argument (-1), so nothing passes or keeps it.
    if packed or stored:
        b_buf = Buffer.contiguous(-1, ctx.dtype(b_name), b_shape)
    else:
        b_buf = ctx.buffer(b_name) if weight is None else ctx.add_constant(data, f"{b_name}_decoded")
    p = Product(batch, m, n, k, a, _matrix(ctx, b_name, b_buf, batch, trans_b, "col"), stored=stored)
    if packed:
        p.packed = _pack(ctx, data.T if trans_b else data, b_name)
    return p


def _vectorized(ctx, node, n: int) -> bool:
    return ctx.dtype(node.inputs[0]) in VECTOR_DTYPES and n >= ctx.tiling.vector_width


def _pack(ctx, data: np.ndarray, name: str) -> Buffer:
    """(K, N) -> (ceil(N / nr), K, nr) panels, zero-padded: what the micro-kernel streams."""
    nr = ctx.tiling.nr
    k, n = data.shape
    full = n // nr
    panels = np.empty((-(-n // nr), k, nr), data.dtype)  # one strided copy: packing big weights is compile time
    panels[:full] = data[:, :full * nr].reshape(k, full, nr).transpose(1, 0, 2)
    if full < len(panels):
        panels[full] = 0
        panels[full, :, :n - full * nr] = data[:, full * nr:]
    return ctx.add_constant(panels, f"{name}_panels")


def emit_product(ctx, node, p: Product, post) -> int:
    """The loop nest; ``post(value, idx)`` finishes a result (bias, activation) before the write."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    dtype = ctx.dtype(node.inputs[0])
    out_rank = len(ctx.shape(node.outputs[0]))
    squeeze = (len(ctx.shape(node.inputs[0])) == 1, len(ctx.shape(node.inputs[1])) == 1)
    b_dtype = ctx.dtype(node.inputs[1])
    fast = _vectorized(ctx, node, p.n) and (p.packed is not None or p.k * s.nr * b_dtype.itemsize <= MAX_PANEL_BYTES)
    nc = max(s.nr, s.nc // s.nr * s.nr) if fast else p.n
    grid = [*p.batch, -(-p.m // s.mc), -(-p.n // nc)]

    def out_index(bidx, i, j):
        idx = list(bidx) + ([] if squeeze[0] else [i]) + ([] if squeeze[1] else [j])
        return idx[len(idx) - out_rank:]

    scratch = None if not fast or p.packed is not None else k.alloca(STORAGE[b_dtype], p.k * s.nr)
    with k.loop(k.begin, k.end, name="task") as task:
        *bidx, mb, nb = k.delinearize(task, grid)
        i0, j0 = b.mul(mb, k.i64(s.mc)), b.mul(nb, k.i64(nc))
        i1, j1 = _end(k, i0, s.mc, p.m), _end(k, j0, nc, p.n)
        a_off = _batch_offset(k, bidx, p.a.batch)
        b_off = _batch_offset(k, bidx, p.b.batch)
        write = lambda i, j, v: ctx.write(ctx.group.root.outputs[0], out_index(bidx, i, j),  # noqa: E731
                                          post(v, out_index(bidx, i, j)))
        if fast:
            _panels(ctx, p, scratch, (i0, i1), (j0, j1), a_off, b_off, dtype, write)
        else:
            with k.loop(i0, i1, name="ei") as i, k.loop(j0, j1, name="ej") as j:
                write(i, j, _dot(ctx, p, a_off, b_off, i, j, dtype))
    return math.prod(grid)


def _panels(ctx, p: Product, scratch, rows, columns, a_off, b_off, dtype, write):
    """Rows x columns of the output, one nr-column panel of B at a time: full mr-row tiles, then single rows.

    With fewer rows than one register tile (decode) a runtime B is read in place,
    ``DIRECT_PANELS`` panels wide: packing it would cost as much as the product."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    (i0, i1), (j0, j1) = rows, columns
    if p.packed is None and p.stored is None and p.b.col == 1 and p.m < s.mr:
        wide = s.nr * DIRECT_PANELS
        wide_end = b.add(j0, b.mul(b.udiv(b.sub(j1, j0), k.i64(wide)), k.i64(wide)))
        with k.loop(j0, wide_end, wide, name="wide") as jp, k.loop(i0, i1, name="row") as i:
            panel = b.gep(k.base(p.b.buf), [b.add(b_off, jp)])
            _tile(ctx, p, (panel, p.b.row, wide), a_off, i, jp, k.i64(wide), 1, dtype, write)
        j0 = wide_end
    rows_full = b.add(i0, b.mul(b.udiv(b.sub(i1, i0), k.i64(s.mr)), k.i64(s.mr)))
    with k.loop(j0, j1, s.nr, name="panel") as jp:
        if p.packed is not None:
            panel = b.gep(k.base(p.packed), [b.mul(jp, k.i64(p.k))])
        elif p.stored is not None:
            panel = p.stored.decode_panel(ctx, scratch, jp)
        else:
            panel = _pack_panel(ctx, p, scratch, b_off, jp)
        cols = b.sub(_end(k, jp, s.nr, p.n), jp)
        for lo, hi, mr in ((i0, rows_full, s.mr), (rows_full, i1, 1)):
            with k.loop(lo, hi, mr, name=f"tile{mr}") as i:
                _tile(ctx, p, (panel, s.nr, s.nr), a_off, i, jp, cols, mr, dtype, write)


def _end(k, start, size: int, limit: int):
    """min(start + size, limit) as an i64 value."""
    end = k.b.add(start, k.i64(size))
    return k.b.select(k.b.icmp_signed("<", end, k.i64(limit)), end, k.i64(limit))


def _pack_panel(ctx, p: Product, scratch, b_off, j0):
    """Copy B[:, j0:j0+nr] (zeros past N) into ``scratch`` as a K x nr panel."""
    k, b, nr = ctx.k, ctx.b, ctx.tiling.nr
    src = k.base(p.b.buf)
    with k.loop(0, p.k, name="pk") as kk, k.loop(0, nr, name="pc") as c:
        j = b.add(j0, c)
        inside = b.icmp_signed("<", j, k.i64(p.n))
        safe = b.select(inside, j, k.i64(p.n - 1))
        value = b.load(b.gep(src, [_elem(k, p.b, b_off, kk, safe)]))
        if p.n % nr:
            value = b.select(inside, value, ll.Constant(value.type, 0))
        b.store(value, b.gep(scratch, [b.add(b.mul(kk, k.i64(nr)), c)]))
    return scratch


def _batch_offset(k, bidx, strides):
    total = k.i64(0)
    for i, st in zip(bidx, strides):
        if st:
            total = k.b.add(total, k.b.mul(i, k.i64(st)))
    return total


def _elem(k, op: Operand, off, i, j):
    b = k.b
    return b.add(off, b.add(b.mul(i, k.i64(op.row)), b.mul(j, k.i64(op.col))))


def _dot(ctx, p: Product, a_off, b_off, i, j, dtype):
    k, b = ctx.k, ctx.b
    t = compute_type(dtype)
    acc_ptr = k.alloca(t, 1)
    b.store(k.const(t, 0), acc_ptr)
    pa, pb = k.base(p.a.buf), k.base(p.b.buf)
    with k.loop(0, p.k, name="dk") as kk:
        x = k.widen(b.load(b.gep(pa, [_elem(k, p.a, a_off, i, kk)])), dtype)
        y = k.widen(b.load(b.gep(pb, [_elem(k, p.b, b_off, kk, j)])), dtype)
        prod = b.fmul(x, y) if is_float(t) else b.mul(x, y)
        b.store(b.fadd(b.load(acc_ptr), prod) if is_float(t) else b.add(b.load(acc_ptr), prod), acc_ptr)
    return b.load(acc_ptr)


def _tile(ctx, p: Product, panel, a_off, i0, j0, cols, mr, dtype, write):
    """One ``mr``-row tile at (i0, j0) from ``panel`` = (pointer, row stride, width): K rows of
    ``width`` columns of B; ``cols`` of them are real."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    pointer, stride, width = panel
    vw, nv = s.vector_width, width // s.vector_width
    vec = ll.VectorType(F32, vw)
    accs = k.alloca(vec, mr * nv)
    for r in range(mr * nv):
        b.store(ll.Constant(vec, None), b.gep(accs, [k.i64(r)]))
    pa = k.base(p.a.buf)
    storage_vec = ll.VectorType(pointer.type.pointee, vw)
    with k.loop(0, p.k, name="kk") as kk:
        row_b = b.mul(kk, k.i64(stride))
        bv = [k.widen(b.load(b.bitcast(b.gep(pointer, [b.add(row_b, k.i64(v * vw))]), storage_vec.as_pointer()),
                             align=2), dtype) for v in range(nv)]
        for r in range(mr):
            a = k.widen(b.load(b.gep(pa, [_elem(k, p.a, a_off, b.add(i0, k.i64(r)), kk)])), dtype)
            splat = b.shuffle_vector(b.insert_element(ll.Constant(vec, ll.Undefined), a, ll.Constant(I32, 0)),
                                     ll.Constant(vec, ll.Undefined), ll.Constant(ll.VectorType(I32, vw), None))
            for v in range(nv):
                slot = b.gep(accs, [k.i64(r * nv + v)])
                b.store(k.intrinsic("llvm.fma", [splat, bv[v], b.load(slot)]), slot)
    results = b.bitcast(accs, F32.as_pointer())
    with k.loop(0, mr, name="wr") as r, k.loop(0, cols, name="wc") as c:
        write(b.add(i0, r), b.add(j0, c), b.load(b.gep(results, [b.add(b.mul(r, k.i64(width)), c)])))


def _no_post(value, idx):
    return value


@anchor("MatMul")
def matmul(ctx, node):
    return emit_product(ctx, node, _product(ctx, node, False, False), _no_post)


@anchor("Gemm")
def gemm(ctx, node):
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None

    def post(value, idx):
        if alpha != 1.0:
            value = ctx.b.fmul(value, ll.Constant(value.type, alpha))
        if bias is not None:
            c = ctx.read_bcast(bias, idx)
            value = ctx.b.fadd(value, ctx.b.fmul(c, ll.Constant(c.type, beta)) if beta != 1.0 else c)
        return value

    return emit_product(ctx, node, _product(ctx, node, bool(node.attrs.get("transA", 0)),
                                            bool(node.attrs.get("transB", 0))), post)


def activation(ctx, name: str, value):
    """Apply a FusedMatMul epilogue activation (see ``ir.ops.composite.ACTIVATIONS``)."""
    x = value
    for op, attrs in ACTIVATIONS[name]:
        value = ctx.b.fmul(value, x) if op == "Mul" else FLOAT_UNARY[op](ctx.k, value, attrs)
    return value


@anchor("FusedMatMul", domain="xpuc")
def fused_matmul(ctx, node):
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None

    def post(value, idx):
        if bias is not None:
            value = ctx.b.fadd(value, ctx.read_bcast(bias, idx))
        return activation(ctx, node.attrs.get("activation", ""), value)

    return emit_product(ctx, node, _product(ctx, node, False, False), post)
