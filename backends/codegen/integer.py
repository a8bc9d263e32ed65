"""MatMulInteger: an int32 product over 8-bit operands with zero points.

An int32 loop over output rows, vectorized along columns. Zero points leave the K loop:
sum (a - za)(b - zb) = sum (a - za) b - zb sum (a - za), so B's is applied once per output.
The result is exact (int32, as ONNX defines it); Cast and rescaling ops after it (the
``w8a8`` format's dequantization) ride along as the kernel's epilogue.
"""

from __future__ import annotations

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


@anchor("MatMulInteger", epilogue=True)
def matmul_integer(ctx, node):
    k, b, s = ctx.k, ctx.b, ctx.schedule
    p = _product(ctx, node, False, False)
    a_type, b_type = (ctx.dtype(v) for v in node.inputs[:2])
    out, out_rank = node.outputs[0], len(ctx.shape(node.outputs[0]))
    rank_a, rank_b = len(ctx.shape(node.inputs[0])), len(ctx.shape(node.inputs[1]))
    vw = s.vector_width
    grid = [*p.batch, p.m]

    def widen(value, dtype, t):
        return b.zext(value, t) if dtype is DType.UINT8 else b.sext(value, t)

    def columns(bidx, i, a_off, b_off, za, j, lanes):
        """Output columns [j, j + lanes) of row i."""
        t = ll.VectorType(I32, lanes)
        acc, asum = k.alloca(t, 1), k.alloca(I32, 1)
        b.store(ll.Constant(t, None), acc)
        b.store(ll.Constant(I32, 0), asum)
        with k.loop(0, p.k, name="ik") as kk:
            a = b.sub(widen(b.load(b.gep(k.base(p.a.buf), [_elem(k, p.a, a_off, i, kk)])), a_type, I32), za)
            b.store(b.add(b.load(asum), a), asum)
            row = b.gep(k.base(p.b.buf), [_elem(k, p.b, b_off, kk, j)])
            bv = widen(b.load(b.bitcast(row, ll.VectorType(I8, lanes).as_pointer()), align=1), b_type, t)
            splat = b.shuffle_vector(b.insert_element(ll.Constant(t, ll.Undefined), a, ll.Constant(I32, 0)),
                                     ll.Constant(t, ll.Undefined), ll.Constant(ll.VectorType(I32, lanes), None))
            b.store(b.add(b.load(acc), b.mul(splat, bv)), acc)
        total, asum = b.load(acc), b.load(asum)
        for lane in range(lanes):
            col = b.add(j, k.i64(lane))
            zb = _zero_point(ctx, node, 3, [*bidx, k.i64(0), col] if _rank(ctx, node, 3) == rank_b else [*bidx, col])
            value = b.sub(b.extract_element(total, ll.Constant(I32, lane)), b.mul(zb, asum))
            idx = ([*bidx] + ([] if rank_a == 1 else [i]) + ([] if rank_b == 1 else [col]))[-out_rank:] \
                if out_rank else []
            ctx.write(out, idx, value)

    vector_end = p.n // vw * vw if p.b.col == 1 else 0
    with k.loop(k.begin, k.end, name="task") as task:
        *bidx, i = k.delinearize(task, grid)
        a_off, b_off = _batch_offset(k, bidx, p.a.batch), _batch_offset(k, bidx, p.b.batch)
        za = _zero_point(ctx, node, 2, [*bidx, i, k.i64(0)] if _rank(ctx, node, 2) == rank_a else [*bidx, i])
        with k.loop(0, vector_end, vw, name="jv") as j:
            columns(bidx, i, a_off, b_off, za, j, vw)
        with k.loop(vector_end, p.n, name="js") as j:
            columns(bidx, i, a_off, b_off, za, j, 1)
    return int(np.prod(grid))


def _rank(ctx, node, index: int) -> int:
    return len(ctx.shape(node.inputs[index])) if len(node.inputs) > index and node.inputs[index] else 0
