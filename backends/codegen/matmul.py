"""MatMul, Gemm and xpuc.FusedMatMul: register-blocked, vectorized loop nests.

Products with more rows than ``tiling.stream_rows`` are computed in ``mr x nr`` tiles:
``mr * nr_vectors`` vector accumulators live in registers while the K loop, innermost,
broadcasts one element of A per row and FMAs it with ``nr_vectors`` vector loads of B. B is
read from *panels*: ``nr`` columns by all of K, contiguous, zero-padded past N, so the K loop
streams memory with no page-sized strides. A constant 2-D B is packed once at compile time
(the executor then holds only the panels); any other B is packed one panel at a time into a
stack scratch inside the task, which covers every row, so each panel is packed once. Tasks
are (batch, ``mc``-row block, ``nc``-column block); rows past the last full ``mr`` tile take a
one-row tile. A weight stored in a narrow format (:mod:`quantized`) stays packed as codes in
panels of the product's own ``nr`` (narrowed until a decoded panel fits half of L2) and is
decoded one panel at a time into that scratch, or row by row into a decode tile's registers.

Decode-shaped products (at most ``stream_rows`` rows) are bound by reading B once, not by
FMAs. With a constant B, one tile holds all the rows (its panels narrowed so the
accumulators still fit the registers), so each panel is one contiguous run read once: the
hardware prefetchers' best case. A runtime B cannot be packed for less than the product
costs: it is *streamed* in place, ``STREAM_UNROLL`` rows at a time, one column strip per
core so each row run is as long as it can be, the strip's output rows accumulating in an
L1-sized scratch.

A product whose op rounds its operands (:mod:`rounding`: code compiled for a target's
numerics) to bf16 takes the bf16 pair dot of :mod:`lowp` (vdpbf16ps where the CPU has it,
fp32 accumulation), and MatMulInteger with uint8 A and a constant int8 B (:mod:`integer`) its
u8 x s8 quad dot: the panels then hold each group of K in one 32-bit lane. Rounded to f16 or
TF32, it keeps the float32 multiply-adds on rounded operands. Either way a constant B is
rounded once, when it is packed (a stored weight is then decoded at compile time), a runtime
B as its panel is packed (vector rows) or streamed, and a tiled task's rows of A once, into a
block on its stack that its tiles then broadcast from.

Other dtypes take a scalar dot-product loop. Each result goes through ``alpha``/``beta``/bias/
activation and the fused epilogue before its store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir as ll

from ir.dtypes import DType
from ir.ops.composite import ACTIVATIONS

from . import lowp
from .elementwise import FLOAT_UNARY
from .emit import F32, I32, STORAGE, Buffer, CodegenError, compute_type, is_float
from .quantized import Panels, pack, stored_weight
from .rounding import round_array, round_value
from .rules import anchor

VECTOR_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)
MAX_PANEL_BYTES = 1 << 20
"""Largest runtime-packed panel (it lives on the calling thread's stack); past it, scalar code."""
STREAM_UNROLL = 8
"""Rows of B read side by side by a streaming product: each accumulator is loaded and stored
once per this many FMAs, and the reads keep this many runs in flight."""
TASKS_PER_CORE = 8
"""Parallel tasks a tiled product is cut into per core, where it has that many panels: the
executor hands them out in turn, so threads finish together even on a shared machine."""
MAX_A_BLOCK_BYTES = 1 << 20
"""Largest block of rounded A rows a task packs on its stack; a deep product takes fewer rows per task."""


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
    kind: str
    """"tiles" (register tiles over panels of B), "stream" (decode: B read row by row) or "scalar"."""
    mr: int
    """Rows of a full register tile."""
    nr_vectors: int
    packed: Buffer | None = None
    """B packed at compile time as (N / nr, K, nr) panels, when it is a constant matrix."""
    dot: lowp.DotFormat | None = None
    """A low-precision dot product (panels then hold a group of K per 32-bit lane), or fp32 FMAs."""
    stored: Panels | None = None
    """B's codes, when B is a weight stored in a narrow format: decoded a panel at a time."""
    rounding: str = ""
    """The format float32 multiply-adds round both operands to first (f16, TF32, bf16 without the bf16
    dot instruction); B's panels then hold float32, and a tiled task packs its rows of A rounded."""

    @property
    def group(self) -> int:
        return self.dot.group if self.dot else 1

    @property
    def decodes_inline(self) -> bool:
        """A stored weight feeding one tile of all the rows (decode) is decoded inside that tile's K
        loop, straight into registers: each decoded value is used once, so a K x nr panel written
        to scratch and read back would only add a round trip through L2."""
        return self.stored is not None and self.m <= self.mr

    @property
    def packs_a(self) -> bool:
        """Each task rounds its rows of A once, into a block on its stack (while ``mr`` rows fit one)."""
        return bool(self.rounding) and self.kind == "tiles" and self.mr * self.k * 4 <= MAX_A_BLOCK_BYTES


def _matrix(ctx, name: str, buf: Buffer, batch_shape, transpose: bool, vector_role: str) -> Operand:
    """Strides of a (batched) matrix: a 1-D operand is a row (A) or a column (B)."""
    shape, strides = list(buf.shape), list(buf.strides)
    if len(shape) == 1:
        shape, strides = ([1] + shape, [0] + strides) if vector_role == "row" else (shape + [1], strides + [0])
    row, col = (strides[-1], strides[-2]) if transpose else (strides[-2], strides[-1])
    lead = len(batch_shape) - (len(shape) - 2)
    batch = [0] * lead + [s if d != 1 else 0 for d, s in zip(shape[:-2], strides[:-2])]
    return Operand(buf, tuple(batch), row, col)


def _product(ctx, node, trans_a: bool, trans_b: bool, dot: lowp.DotFormat | None = None) -> Product:
    """How to compute ``node``'s product; ``dot`` forces a low-precision dot (tiles only)."""
    s = ctx.tiling
    rounding = ctx.rounding(node).operands
    a_name, b_name = node.inputs[:2]
    a_shape, b_shape = ctx.shape(a_name), ctx.shape(b_name)
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    m, k = (a2[-1], a2[-2]) if trans_a else (a2[-2], a2[-1])
    n = b2[-2] if trans_b else b2[-1]
    a = _matrix(ctx, a_name, ctx.buffer(a_name), batch, trans_a, "row")
    vectorized = ctx.dtype(a_name) in VECTOR_DTYPES and n >= s.vector_width
    if dot is None and rounding == "bf16" and ctx.dtype(a_name) in VECTOR_DTYPES and lowp.native(lowp.BF16, s):
        dot, rounding = lowp.BF16, ""
    nv = min(s.nr_vectors, 1 << max(0, (-(-n // s.vector_width) - 1).bit_length()))  # no wider than N needs
    mr = s.mr
    data = ctx.const(b_name)
    weight = stored_weight(ctx, b_name, trans_b)
    constant = (vectorized or dot) and len(b_shape) == 2 and (data is not None or weight is not None)
    if constant and m <= s.stream_rows:  # one tile of all m rows: halve the panel until its accumulators fit
        mr = m
        while nv > 1 and mr * nv + nv + 1 > s.registers:
            nv //= 2
    nr = nv * s.vector_width
    # A packed B is read from its panels only: no kernel argument (-1), so nothing passes or keeps it.
    panels_only = _matrix(ctx, b_name, Buffer.contiguous(-1, ctx.dtype(b_name), b_shape), batch, trans_b, "col")
    if weight is not None:
        narrow = constant and not dot and not rounding
        if narrow and m > mr:  # each tile of a task reads the decoded panel: keep it in half of L2
            while nv > 1 and k * nr * 4 > s.l2_bytes // 2:
                nv //= 2
                nr = nv * s.vector_width
        narrow = narrow and (m <= mr or k * nr * 4 <= MAX_PANEL_BYTES)  # decoded in registers, or on the stack
        stored = pack(ctx, weight, b_name, nr) if narrow else None
        if stored is not None:
            return Product(batch, m, n, k, a, panels_only, "tiles", mr, nv, stored=stored)
        data = weight.dequantized()  # a layout panels do not take: decoded once, at compile time
    if constant:
        rows = data.T if trans_b else data
        packed = ctx.add_constant(lowp.pack_panels(rows, nr, dot), f"{b_name}_{dot.name}") if dot \
            else _pack(ctx, round_array(rows, rounding) if rounding else rows, b_name, nr)
        return Product(batch, m, n, k, a, panels_only, "tiles", mr, nv, packed, dot, rounding=rounding)
    b_buf = ctx.buffer(b_name) if weight is None else ctx.add_constant(data, f"{b_name}_decoded")
    b = _matrix(ctx, b_name, b_buf, batch, trans_b, "col")
    if dot:
        if -(-k // dot.group) * dot.group * nv * s.vector_width * dot.operand.itemsize > MAX_PANEL_BYTES:
            raise CodegenError(f"{node.name}: K = {k} is too deep for the {dot.name} dot kernel's runtime panels")
        return Product(batch, m, n, k, a, b, "tiles", mr, nv, dot=dot)
    if vectorized and m <= s.stream_rows and b.col == 1:
        kind = "stream"
    elif vectorized and k * nv * s.vector_width * (4 if rounding else ctx.dtype(b_name).itemsize) <= MAX_PANEL_BYTES:
        kind = "tiles"
    else:
        kind = "scalar"
    return Product(batch, m, n, k, a, b, kind, mr, nv, rounding=rounding)


def _pack(ctx, data: np.ndarray, name: str, nr: int) -> Buffer:
    """(K, N) -> (ceil(N / nr), K, nr) panels, zero-padded: what the micro-kernel streams."""
    k, n = data.shape
    full = n // nr
    panels = np.empty((-(-n // nr), k, nr), data.dtype)  # one strided copy: packing big weights is compile time
    panels[:full] = data[:, :full * nr].reshape(k, full, nr).transpose(1, 0, 2)
    if full < len(panels):
        panels[full] = 0
        panels[full, :, :n - full * nr] = data[:, full * nr:]
    return ctx.add_constant(panels, f"{name}_panels")


def _round_up(x: int, step: int) -> int:
    return -(-x // step) * step


def _columns_per_task(s, n: int, batch, per_core: int) -> int:
    """Columns each task takes so there are ``per_core`` tasks per core, where N allows."""
    tasks = per_core * s.cores
    return max(1, -(-n // max(1, -(-tasks // max(1, math.prod(batch))))))


def _blocks(s, p: Product) -> tuple[int, int]:
    """(rows, columns) of one parallel task. Tiles: ``mc`` rows (all of them when B is packed
    inside the task, so each panel is packed once) by ``nc`` columns, narrowed to give each
    core ``TASKS_PER_CORE`` tasks in all; streaming: all rows by one strip per core, narrowed
    until its accumulators fit half of L1."""
    if p.kind == "stream":
        l1 = s.l1_bytes // 2 // (4 * p.m) // s.vector_width * s.vector_width
        return p.m, max(s.vector_width, min(l1, _round_up(_columns_per_task(s, p.n, p.batch, 1), s.vector_width)))
    if p.kind == "scalar":
        return s.mc, p.n
    nr = p.nr_vectors * s.vector_width
    most = max(p.mr, MAX_A_BLOCK_BYTES // (4 * p.k) // p.mr * p.mr) if p.packs_a else p.m
    mc = min(p.m, most)
    if p.packed is not None:  # row blocks of equal height, so no task is a sliver
        mc = _round_up(-(-p.m // -(-p.m // min(s.mc, most))), p.mr)
    per_core = -(-TASKS_PER_CORE // -(-p.m // mc))  # what the row blocks leave to the columns
    return mc, max(nr, min(s.nc // nr * nr, _round_up(_columns_per_task(s, p.n, p.batch, per_core), nr)))


def emit_product(ctx, node, p: Product, post) -> int:
    """The loop nest; ``post(value, idx)`` finishes a result (bias, activation) before the write."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    dtype = ctx.dtype(node.inputs[0])
    out_rank = len(ctx.shape(node.outputs[0]))
    squeeze = (len(ctx.shape(node.inputs[0])) == 1, len(ctx.shape(node.inputs[1])) == 1)
    mc, nc = _blocks(s, p)
    grid = [*p.batch, -(-p.m // mc), -(-p.n // nc)]

    def out_index(bidx, i, j):
        idx = list(bidx) + ([] if squeeze[0] else [i]) + ([] if squeeze[1] else [j])
        return idx[len(idx) - out_rank:]

    nr = p.nr_vectors * s.vector_width
    b_storage = F32 if p.stored or p.rounding else STORAGE[p.dot.operand if p.dot else ctx.dtype(node.inputs[1])]
    scratch = k.alloca(b_storage, _depth(p) * nr) if p.kind == "tiles" and p.packed is None \
        and not p.decodes_inline else None
    a_block = k.alloca(F32, mc * p.k) if p.packs_a else None
    with k.loop(k.begin, k.end, name="task") as task:
        *bidx, mb, nb = k.delinearize(task, grid)
        i0, j0 = b.mul(mb, k.i64(mc)), b.mul(nb, k.i64(nc))
        i1, j1 = _end(k, i0, mc, p.m), _end(k, j0, nc, p.n)
        a_off = _batch_offset(k, bidx, p.a.batch)
        b_off = _batch_offset(k, bidx, p.b.batch)
        write = lambda i, j, v: ctx.write(ctx.group.root.outputs[0], out_index(bidx, i, j),  # noqa: E731
                                          post(v, out_index(bidx, i, j)))
        if p.kind == "tiles":
            tail = (p.m - (grid[-2] - 1) * mc) % p.mr  # rows past the last full tile, in the last row block
            if a_block is not None:
                _pack_rows(ctx, p, a_block, (i0, i1), a_off, dtype)
            a = (a_block, i0) if a_block is not None else a_off
            _panels(ctx, p, scratch, (i0, i1), (j0, j1), tail, a, b_off, dtype, write)
        elif p.kind == "stream":
            _stream(ctx, p, nc, (j0, j1), a_off, b_off, dtype, write)
        else:
            with k.loop(i0, i1, name="ei") as i, k.loop(j0, j1, name="ej") as j:
                write(i, j, _dot(ctx, p, a_off, b_off, i, j, dtype))
    return math.prod(grid)


def _panels(ctx, p: Product, scratch, rows, columns, tail: int, a, b_off, dtype, write):
    """Rows x columns of the output, one nr-column panel of B at a time: full mr-row tiles, then
    one ``tail``-row tile (only the last row block has one: ``mc`` is a multiple of ``mr``);
    ``a``: A's batch offset, or (block, first row) of the task's packed rows."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    (i0, i1), (j0, j1) = rows, columns
    nr = p.nr_vectors * s.vector_width
    rows_full = b.add(i0, b.mul(b.udiv(b.sub(i1, i0), k.i64(p.mr)), k.i64(p.mr)))
    with k.loop(j0, j1, nr, name="panel") as jp:
        if p.packed is not None:
            panel = b.gep(k.base(p.packed), [b.mul(jp, k.i64(_depth(p)))])
        elif p.decodes_inline:
            panel = None  # the tile decodes each row of B itself
        elif p.stored is not None:
            panel = p.stored.decode_panel(ctx, scratch, jp)
        else:
            panel = _pack_panel(ctx, p, scratch, b_off, jp, nr)
        cols = b.sub(_end(k, jp, nr, p.n), jp)
        for lo, hi, mr in ((i0, rows_full, p.mr), (rows_full, i1, tail)):
            if not mr:
                continue
            with k.loop(lo, hi, mr, name=f"tile{mr}") as i:
                _tile(ctx, p, (panel, nr * p.group, nr), a, i, jp, cols, mr, dtype, write)


def _depth(p: Product) -> int:
    """K rounded up to whole groups: the rows of a panel."""
    return -(-p.k // p.group) * p.group


def _end(k, start, size: int, limit: int):
    """min(start + size, limit) as an i64 value."""
    end = k.b.add(start, k.i64(size))
    return k.b.select(k.b.icmp_signed("<", end, k.i64(limit)), end, k.i64(limit))


def _pack_rows(ctx, p: Product, block, rows, a_off, dtype) -> None:
    """A's rows [i0, i1) rounded to the product's format into ``block``, K floats apart: each
    element is rounded once per task rather than once per panel it meets (vector rows where
    A's rows are contiguous)."""
    k, b, vw = ctx.k, ctx.b, ctx.tiling.vector_width
    (i0, i1), src = rows, k.base(p.a.buf)
    whole = p.k // vw * vw if p.a.col == 1 else 0
    vector = ll.VectorType(src.type.pointee, vw).as_pointer()
    with k.loop(i0, i1, name="ar") as i:
        row = b.mul(b.sub(i, i0), k.i64(p.k))
        if whole:
            with k.loop(0, whole, vw, name="av") as kk:
                value = k.widen(b.load(b.bitcast(b.gep(src, [_elem(k, p.a, a_off, i, kk)]), vector), align=1), dtype)
                b.store(_rounded(k, p, value), b.bitcast(b.gep(block, [b.add(row, kk)]), value.type.as_pointer()),
                        align=4)
        with k.loop(whole, p.k, name="as") as kk:
            value = k.widen(b.load(b.gep(src, [_elem(k, p.a, a_off, i, kk)])), dtype)
            b.store(_rounded(k, p, value), b.gep(block, [b.add(row, kk)]))


def _pack_panel(ctx, p: Product, scratch, b_off, j0, nr: int):
    """Copy B[:, j0:j0+nr] (zeros past N) into ``scratch`` as a K x nr panel: vector rows when
    B's rows are contiguous and the panel is whole, element by element otherwise (rounded to
    the dot format's operand and interleaved by groups of K, for a low-precision dot; rounded
    float32 for a rounding product, in vector rows only from a float32 B)."""
    k, b = ctx.k, ctx.b
    src = k.base(p.b.buf)
    g, dtype = p.group, p.b.buf.dtype
    by_rows = p.b.col == 1 and not p.dot and (not p.rounding or dtype is DType.FLOAT32)
    whole = b.icmp_signed("<=", b.add(j0, k.i64(nr)), k.i64(p.n)) if by_rows else ll.Constant(ll.IntType(1), 0)
    with b.if_else(whole) as (rows, elements):
        with rows:
            row_type = ll.VectorType(src.type.pointee, nr).as_pointer()
            with k.loop(0, p.k, name="pr") as kk:
                row = b.load(b.bitcast(b.gep(src, [_elem(k, p.b, b_off, kk, j0)]), row_type), align=1)
                row = round_value(k, row, p.rounding) if p.rounding else row
                b.store(row, b.bitcast(b.gep(scratch, [b.mul(kk, k.i64(nr))]), row_type), align=1)
        with elements:
            with k.loop(0, _depth(p), name="pk") as kk, k.loop(0, nr, name="pc") as c:
                j = b.add(j0, c)
                inside = b.and_(b.icmp_signed("<", j, k.i64(p.n)), b.icmp_signed("<", kk, k.i64(p.k)))
                at = _elem(k, p.b, b_off, b.select(inside, kk, k.i64(0)), b.select(inside, j, k.i64(0)))
                value = b.load(b.gep(src, [at]))
                if p.dot:
                    value = k.narrow(k.widen(value, dtype), p.dot.operand)
                elif p.rounding:
                    value = round_value(k, k.widen(value, dtype), p.rounding)
                value = b.select(inside, value, ll.Constant(value.type, 0))
                slot = b.add(b.mul(b.add(b.mul(b.udiv(kk, k.i64(g)), k.i64(nr)), c), k.i64(g)), b.urem(kk, k.i64(g)))
                b.store(value, b.gep(scratch, [slot]))
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
        x = _rounded(k, p, k.widen(b.load(b.gep(pa, [_elem(k, p.a, a_off, i, kk)])), dtype))
        y = _rounded(k, p, k.widen(b.load(b.gep(pb, [_elem(k, p.b, b_off, kk, j)])), p.b.buf.dtype))
        prod = b.fmul(x, y) if is_float(t) else b.mul(x, y)
        b.store(b.fadd(b.load(acc_ptr), prod) if is_float(t) else b.add(b.load(acc_ptr), prod), acc_ptr)
    return b.load(acc_ptr)


def _rounded(k, p: Product, value):
    """An operand value (float32, scalar or vector) as the product multiplies it."""
    return round_value(k, value, p.rounding) if p.rounding else value


def _splat(b, value, vec):
    return b.shuffle_vector(b.insert_element(ll.Constant(vec, ll.Undefined), value, ll.Constant(I32, 0)),
                            ll.Constant(vec, ll.Undefined), ll.Constant(ll.VectorType(I32, vec.count), None))


def _a_element(ctx, p: Product, a, i, kk, dtype):
    """A[i, kk] in compute type (from the task's packed rows, rounded, when ``a`` is (block,
    first row)), or for a low-precision dot its operand bits (bf16 rounded, or the raw byte),
    zero past K (the padding of the last group)."""
    k, b = ctx.k, ctx.b
    if isinstance(a, tuple):
        block, first = a
        return b.load(b.gep(block, [b.add(b.mul(b.sub(i, first), k.i64(p.k)), kk)]))
    a_off = a
    if not p.dot:
        return _rounded(k, p, k.widen(b.load(b.gep(k.base(p.a.buf), [_elem(k, p.a, a_off, i, kk)])), dtype))
    inside = b.icmp_signed("<", kk, k.i64(p.k))
    raw = b.load(b.gep(k.base(p.a.buf), [_elem(k, p.a, a_off, i, b.select(inside, kk, k.i64(0)))]))
    value = k.narrow(k.widen(raw, dtype), p.dot.operand) if p.dot is lowp.BF16 else raw
    return b.select(inside, value, ll.Constant(value.type, 0))


def _tile(ctx, p: Product, panel, a, i0, j0, cols, mr, dtype, write):
    """One ``mr``-row tile at (i0, j0) from ``panel`` = (pointer, row stride, width): K rows
    (groups of K rows, for a low-precision dot) of ``width`` columns of B, or rows of a stored
    weight decoded here (pointer None); ``cols`` of them are real. ``a`` as :func:`_a_element` takes it."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    pointer, stride, width = panel
    vw, nv, g = s.vector_width, width // s.vector_width, p.group
    vec = ll.VectorType(p.dot.accumulator if p.dot else F32, vw)
    words = ll.VectorType(I32, vw)
    accs = k.alloca(vec, mr * nv)
    for r in range(mr * nv):
        b.store(ll.Constant(vec, None), b.gep(accs, [k.i64(r)]))

    def step(kk, bv):
        """Row (group) ``kk`` of B, as ``nv`` vectors, into every accumulator."""
        for r in range(mr):
            if p.dot:
                group = [_a_element(ctx, p, a, b.add(i0, k.i64(r)), b.add(b.mul(kk, k.i64(g)), k.i64(u)), dtype)
                         for u in range(g)]
                splat = _splat(b, lowp.pack_group(k, p.dot, group), words)
            else:
                splat = _splat(b, _a_element(ctx, p, a, b.add(i0, k.i64(r)), kk, dtype), vec)
            for v in range(nv):
                slot = b.gep(accs, [k.i64(r * nv + v)])
                acc = b.load(slot)
                acc = lowp.dot(k, p.dot, acc, splat, bv[v], lowp.native(p.dot, s)) if p.dot else \
                    k.intrinsic("llvm.fmuladd", [splat, bv[v], acc])
                b.store(acc, slot)

    if pointer is None:
        p.stored.each_row(ctx, j0, step)
    else:
        storage_vec = words if p.dot else ll.VectorType(pointer.type.pointee, vw)
        with k.loop(0, _depth(p) // g, name="kk") as kk:
            row_b = b.mul(kk, k.i64(stride))
            bv = [b.load(b.bitcast(b.gep(pointer, [b.add(row_b, k.i64(v * vw * g))]), storage_vec.as_pointer()),
                         align=2) for v in range(nv)]
            step(kk, bv if p.dot or p.stored or p.rounding else [k.widen(v, dtype) for v in bv])  # words, or float32
    results = b.bitcast(accs, vec.element.as_pointer())
    with k.loop(0, mr, name="wr") as r, k.loop(0, cols, name="wc") as c:
        write(b.add(i0, r), b.add(j0, c), b.load(b.gep(results, [b.add(b.mul(r, k.i64(width)), c)])))


def _stream(ctx, p: Product, width: int, columns, a_off, b_off, dtype, write):
    """All ``p.m`` rows of the output at columns [j0, j1) (at most ``width`` of them) from B
    read in place a row at a time: ``STREAM_UNROLL`` rows of B per step update the rows'
    accumulators in an L1 scratch; columns past the last whole vector take a scalar dot."""
    k, b, s = ctx.k, ctx.b, ctx.tiling
    (j0, j1), vw = columns, s.vector_width
    vec = ll.VectorType(F32, vw)
    per_row = width // vw
    accs = k.alloca(vec, p.m * per_row)
    vectors = b.udiv(b.sub(j1, j0), k.i64(vw))
    with k.loop(0, p.m * per_row, name="zero") as z:
        b.store(ll.Constant(vec, None), b.gep(accs, [z]))
    pa, pb = k.base(p.a.buf), k.base(p.b.buf)
    storage_vec = ll.VectorType(pb.type.pointee, vw).as_pointer()
    whole = p.k // STREAM_UNROLL * STREAM_UNROLL
    for lo, hi, unroll in ((0, whole, STREAM_UNROLL), (whole, p.k, 1)):
        if lo == hi:
            continue
        with k.loop(lo, hi, unroll, name=f"sk{unroll}") as kk:
            ks = [b.add(kk, k.i64(u)) for u in range(unroll)]
            splats = [[_splat(b, _rounded(k, p, k.widen(b.load(b.gep(pa, [_elem(k, p.a, a_off, k.i64(r), x)])),
                                                          dtype)), vec) for x in ks] for r in range(p.m)]
            with k.loop(0, vectors, name="sv") as v:
                j = b.add(j0, b.mul(v, k.i64(vw)))
                rows = [_rounded(k, p, k.widen(b.load(b.bitcast(b.gep(pb, [_elem(k, p.b, b_off, x, j)]), storage_vec),
                                                         align=1), dtype)) for x in ks]
                for r in range(p.m):
                    slot = b.gep(accs, [b.add(k.i64(r * per_row), v)])
                    acc = b.load(slot)
                    for u in range(unroll):
                        acc = k.intrinsic("llvm.fmuladd", [splats[r][u], rows[u], acc])
                    b.store(acc, slot)
    results = b.bitcast(accs, F32.as_pointer())
    done = b.mul(vectors, k.i64(vw))
    with k.loop(0, p.m, name="wr") as r:
        with k.loop(0, done, name="wc") as c:
            write(r, b.add(j0, c), b.load(b.gep(results, [b.add(b.mul(r, k.i64(width)), c)])))
        with k.loop(b.add(j0, done), j1, name="wt") as j:
            write(r, j, _dot(ctx, p, a_off, b_off, r, j, dtype))


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
