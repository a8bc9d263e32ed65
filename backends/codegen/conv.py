"""1-D and 2-D convolution as a direct loop nest vectorized along output columns.

One parallel iteration is one output row (n, oc, oh). A scratch row of accumulators starts
at the bias; for every (ic, kh, kw) whose input row exists, the columns whose input column
lies inside the image (a range computed once per kw, so no per-element bounds test) get
``w * x`` added, a unit-stride loop LLVM vectorizes. The row then goes through the
epilogue (Relu, Add ...) to memory. An op rounding its operands (a target's numerics) rounds
each weight where it is read and each input element in the inner loop.
"""

from __future__ import annotations

from llvmlite import ir as ll

from .emit import F32, CodegenError, row_extent
from .rules import anchor


def window(node, spatial, kernel):
    """(strides, dilations, pads_begin) with auto_pad resolved, for 2-D windows."""
    n = len(kernel)
    strides = node.attrs.get("strides", [1] * n)
    dilations = node.attrs.get("dilations", [1] * n)
    pads = node.attrs.get("pads", [0] * (2 * n))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin = []
        for d, k, s, dl in zip(spatial, kernel, strides, dilations):
            total = max(0, (-(-d // s) - 1) * s + (k - 1) * dl + 1 - d)
            begin.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return strides, dilations, begin
    return strides, dilations, [0] * n if auto == "VALID" else pads[:n]


def _range_for(ctx, tap, stride, pad, size, out_size):
    """Output columns ``o`` with ``0 <= o*stride + tap - pad < size``, as [lo, hi) i64 values."""
    b, k = ctx.b, ctx.k
    shift = b.sub(k.i64(pad), tap)  # o*stride >= shift
    lo = b.sdiv(b.add(shift, k.i64(stride - 1)), k.i64(stride))
    lo = b.select(b.icmp_signed("<", shift, k.i64(0)), k.i64(0), lo)
    limit = b.sub(k.i64(size - 1 + pad), tap)  # o*stride <= limit
    hi = b.add(b.sdiv(limit, k.i64(stride)), k.i64(1))
    hi = b.select(b.icmp_signed("<", limit, k.i64(0)), k.i64(0), hi)
    hi = b.select(b.icmp_signed(">", hi, k.i64(out_size)), k.i64(out_size), hi)
    return lo, hi


@anchor("Conv")
def conv(ctx, node):
    k, b = ctx.k, ctx.b
    x, w = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    out = node.outputs[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(out)
    if len(xs) not in (3, 4):
        raise CodegenError(f"{node.name}: only 1-D and 2-D convolution are supported by CPU code generation (input {xs})")
    group = node.attrs.get("group", 1)
    (*sh, sw), (*dh, dw), (*ph, pw) = window(node, xs[2:], ws[2:])
    flat = len(xs) == 3  # 1-D runs as 2-D with a single row
    if flat:
        xs, ws, ys, sh, dh, ph = (*xs[:2], 1, xs[2]), (*ws[:2], 1, ws[2]), (*ys[:2], 1, ys[2]), 1, 1, 0
    else:
        sh, dh, ph = sh[0], dh[0], ph[0]
    at = (lambda i: [i[0], i[1], i[3]]) if flat else (lambda i: i)  # noqa: E731
    cin, kh_n, kw_n = ws[1], ws[2], ws[3]
    oc_per_group = ys[1] // group
    row_acc = k.alloca(F32, ys[3])
    with k.loop(k.begin, k.end, name="row") as row:
        n, oc, oh = k.delinearize(row, ys[:3])
        with k.loop(0, ys[3], name="init") as ow:
            b.store(ctx.read(bias, [oc]) if bias else ll.Constant(F32, 0.0), b.gep(row_acc, [ow]))
        ic0 = b.mul(b.udiv(oc, k.i64(oc_per_group)), k.i64(cin))
        with k.loop(0, cin, name="ic") as ic, k.loop(0, kh_n, name="kh") as kh:
            ih = b.sub(b.add(b.mul(oh, k.i64(sh)), b.mul(kh, k.i64(dh))), k.i64(ph))
            with b.if_then(b.icmp_unsigned("<", ih, k.i64(xs[2]))):
                with k.loop(0, kw_n, name="kw") as kw:
                    weight = ctx.multiplied(node, ctx.read(w, at([oc, ic, kh, kw])))
                    tap = b.mul(kw, k.i64(dw))
                    lo, hi = _range_for(ctx, tap, sw, pw, xs[3], ys[3])
                    with k.loop(lo, hi, name="ow") as ow:
                        iw = b.sub(b.add(b.mul(ow, k.i64(sw)), tap), k.i64(pw))
                        slot = b.gep(row_acc, [ow])
                        xv = ctx.multiplied(node, ctx.read(x, at([n, b.add(ic0, ic), ih, iw])))
                        b.store(b.fadd(b.load(slot), b.fmul(weight, xv)), slot)
        with k.loop(0, ys[3], name="out") as ow:
            ctx.write(out, at([n, oc, oh, ow]), b.load(b.gep(row_acc, [ow])))
    return row_extent(ys, 1)
