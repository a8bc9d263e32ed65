"""xpuc.SelectiveScan: one parallel iteration per (batch row, channel), its state in registers' reach.

The ``N`` state values of one channel live in a scratch row; the sequence loop is sequential
(the recurrence), the state loop inside it is independent per state. The readout sums
``h * C`` in state order, as a matrix-vector product would; the final state is written once.
"""

from __future__ import annotations

from llvmlite import ir as ll

from .emit import compute_type
from .rules import anchor


@anchor("SelectiveScan", domain="xpuc")
def selective_scan(ctx, node):
    k, b = ctx.k, ctx.b
    u, delta, a, bs, c, d = node.inputs[:6]
    initial = node.inputs[6] if len(node.inputs) > 6 and node.inputs[6] else None
    y, final = node.outputs[:2]
    batch, length, inner = ctx.shape(u)
    state = ctx.shape(a)[1]
    real = compute_type(ctx.dtype(u))
    zero = ll.Constant(real, 0.0)
    h, acc = k.alloca(real, state), k.alloca(real, 1)
    with k.loop(k.begin, k.end, name="row") as row:
        bi, i = k.delinearize(row, [batch, inner])
        with k.loop(0, state, name="h0") as n:
            b.store(ctx.read(initial, [bi, i, n]) if initial else zero, b.gep(h, [n]))
        with k.loop(0, length, name="t") as t:
            dt, x = ctx.read(delta, [bi, t, i]), ctx.read(u, [bi, t, i])
            b.store(zero, acc)
            with k.loop(0, state, name="n") as n:
                slot = b.gep(h, [n])
                decay = k.intrinsic("llvm.exp", [b.fmul(dt, ctx.read(a, [i, n]))])
                inject = b.fmul(b.fmul(dt, ctx.read(bs, [bi, t, n])), x)
                value = b.fadd(b.fmul(decay, b.load(slot)), inject)
                b.store(value, slot)
                b.store(b.fadd(b.load(acc), b.fmul(value, ctx.read(c, [bi, t, n]))), acc)
            ctx.write(y, [bi, t, i], b.fadd(b.load(acc), b.fmul(x, ctx.read(d, [i]))))
        if final:
            with k.loop(0, state, name="hf") as n:
                ctx.write(final, [bi, i, n], b.load(b.gep(h, [n])))
    return batch * inner
