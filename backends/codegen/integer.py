"""MatMulInteger: an int32 product over 8-bit operands with zero points.

Each vector of B's row loaded in the K loop serves ``ROWS`` rows of A, multiplied and added in
int32 lanes (an AVX-512 VNNI dot product would do four at once: left to the int8 kernel work).
Zero points leave the K loop:
sum (a - za)(b - zb) = sum (a - za) b - zb sum (a - za), so B's is applied once per output.
The result is exact (int32, as ONNX defines it); Cast and rescaling ops after it (the
``w8a8`` format's dequantization) ride along as the kernel's epilogue.
"""

from __future__ import annotations

import contextlib

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType

from .emit import I8, I32
from .matmul import _batch_offset, _elem, _product
from .rules import anchor


def _zero_point(ctx, node, index: int, at: list[ll.Value]) -> ll.Value:
    """A zero point as i32: per tensor, or the entry at ``at`` (per row of A / column of B)."""
    name = node.inputs[index] if len(node.inputs) > index and node.inputs[index] else None
    if name is None:
        return ll.Constant(I32, 0)
    dtype = ctx.dtype(name)
    value = ctx.read_bcast(name, at)
    return ctx.b.zext(value, I32) if dtype is DType.UINT8 else ctx.b.sext(value, I32)


ROWS = 4
"""Rows of A that share each vector of B loaded in the K loop."""


@anchor("MatMulInteger")
def matmul_integer(ctx, node):
    """Tasks of (batch, ``mc`` rows, ``nr`` columns): a constant B is packed in K x nr column
    panels that every row block of a task streams; a runtime B is read in place, its
    ragged columns one at a time."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    p = _product(ctx, node, False, False)
    a_type, b_type = (ctx.dtype(v) for v in node.inputs[:2])
    out, out_rank = node.outputs[0], len(ctx.shape(node.outputs[0]))
    rank_a, rank_b = len(ctx.shape(node.inputs[0])), len(ctx.shape(node.inputs[1]))
    width = s.nr  # columns per panel: two vectors of int32 lanes per loaded row of B
    data = ctx.const(node.inputs[1])
    packed = None
    if data is not None and data.ndim == 2 and p.n >= width:
        panels = np.pad(data, ((0, 0), (0, -p.n % width))).reshape(p.k, -1, width).transpose(1, 0, 2)
        packed = ctx.add_constant(np.ascontiguousarray(panels), f"{node.inputs[1]}_panels")
        full = -(-p.n // width)
    else:
        full = p.n // width if p.b.col == 1 else 0
    tail = p.n - full * width if packed is None else 0
    grid = [*p.batch, -(-p.m // s.mc), full + (1 if tail else 0)]

    def widen(value, dtype, t):
        return b.zext(value, t) if dtype is DType.UINT8 else b.sext(value, t)

    def tile(bidx, i, rows, j, lanes, b_vector, a_off):
        """Output rows [i, i + rows) x columns [j, j + lanes); ``b_vector(kk)`` loads B's row kk."""
        t = ll.VectorType(I32, lanes)
        accs, sums = k.alloca(t, rows), k.alloca(I32, rows)
        for r in range(rows):
            b.store(ll.Constant(t, None), b.gep(accs, [k.i64(r)]))
            b.store(ll.Constant(I32, 0), b.gep(sums, [k.i64(r)]))
        row = [b.add(i, k.i64(r)) for r in range(rows)]
        za = [_zero_point(ctx, node, 2, [*bidx, i_r, k.i64(0)] if _rank(ctx, node, 2) == rank_a else [*bidx, i_r])
              for i_r in row]
        with k.loop(0, p.k, name="ik") as kk:
            bv = widen(b_vector(kk), b_type, t)
            for r in range(rows):
                a = b.sub(widen(b.load(b.gep(k.base(p.a.buf), [_elem(k, p.a, a_off, row[r], kk)])), a_type, I32), za[r])
                slot, total = b.gep(accs, [k.i64(r)]), b.gep(sums, [k.i64(r)])
                b.store(b.add(b.load(total), a), total)
                splat = b.shuffle_vector(b.insert_element(ll.Constant(t, ll.Undefined), a, ll.Constant(I32, 0)),
                                         ll.Constant(t, ll.Undefined), ll.Constant(ll.VectorType(I32, lanes), None))
                b.store(b.add(b.load(slot), b.mul(splat, bv)), slot)
        for r in range(rows):
            acc, total = b.load(b.gep(accs, [k.i64(r)])), b.load(b.gep(sums, [k.i64(r)]))
            for lane in range(lanes):
                col = b.add(j, k.i64(lane))
                ragged = packed is not None and p.n % width
                with b.if_then(b.icmp_signed("<", col, k.i64(p.n))) if ragged else contextlib.nullcontext():
                    at = [*bidx, k.i64(0), col] if _rank(ctx, node, 3) == rank_b else [*bidx, col]
                    value = b.sub(b.extract_element(acc, ll.Constant(I32, lane)),
                                  b.mul(_zero_point(ctx, node, 3, at), total))
                    idx = [*bidx] + ([] if rank_a == 1 else [row[r]]) + ([] if rank_b == 1 else [col])
                    ctx.write(out, idx[len(idx) - out_rank:], value)

    def rows(bidx, i0, i1, j, lanes, b_vector, a_off):
        """Full ROWS-row tiles, then single rows."""
        split = b.add(i0, b.mul(b.udiv(b.sub(i1, i0), k.i64(ROWS)), k.i64(ROWS)))
        for lo, hi, count in ((i0, split, ROWS), (split, i1, 1)):
            with k.loop(lo, hi, count, name=f"rows{count}") as i:
                tile(bidx, i, count, j, lanes, b_vector, a_off)

    with k.loop(k.begin, k.end, name="task") as task:
        *bidx, mb, jb = k.delinearize(task, grid)
        i0 = b.mul(mb, k.i64(s.mc))
        i1 = b.select(b.icmp_signed("<", b.add(i0, k.i64(s.mc)), k.i64(p.m)), b.add(i0, k.i64(s.mc)), k.i64(p.m))
        a_off, b_off = _batch_offset(k, bidx, p.a.batch), _batch_offset(k, bidx, p.b.batch)
        j0 = b.mul(jb, k.i64(width))
        vector = ll.VectorType(I8, width).as_pointer()
        if packed is not None:
            panel = b.gep(k.base(packed), [b.mul(jb, k.i64(p.k * width))])
            loader = lambda kk: b.load(  # noqa: E731
                b.bitcast(b.gep(panel, [b.mul(kk, k.i64(width))]), vector), align=1)
        else:
            loader = lambda kk: b.load(b.bitcast(b.gep(k.base(p.b.buf), [_elem(k, p.b, b_off, kk, j0)]),  # noqa: E731
                                                 vector), align=1)
        if not tail:
            rows(bidx, i0, i1, j0, width, loader, a_off)
        else:
            with b.if_else(b.icmp_signed("<", jb, k.i64(full))) as (in_panel, ragged):
                with in_panel:
                    rows(bidx, i0, i1, j0, width, loader, a_off)
                with ragged:
                    with k.loop(full * width, p.n, name="jt") as j:
                        one = ll.VectorType(I8, 1).as_pointer()
                        rows(bidx, i0, i1, j, 1, lambda kk: b.load(b.bitcast(
                            b.gep(k.base(p.b.buf), [_elem(k, p.b, b_off, kk, j)]), one), align=1), a_off)
    return int(np.prod(grid))


def _rank(ctx, node, index: int) -> int:
    return len(ctx.shape(node.inputs[index])) if len(node.inputs) > index and node.inputs[index] else 0
