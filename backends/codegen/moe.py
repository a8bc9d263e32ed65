"""xpuc.MixtureOfExperts: one parallel iteration per token, computing only its top-k experts.

Per token: router logits and a softmax over the experts (max-subtracted, as ONNX Softmax),
a top-k by repeated selection (strictly greater wins, so the lower expert index is kept on
ties, as TopK), optional renormalization, then for each chosen expert the fused gate/up
product (hidden loop outside, a contiguous row of ``2I`` accumulators inside), the gated
activation, the down product (a row of H), and that row times the expert's weight added
into the token's result. An op rounding its operands (a target's numerics) rounds both
operands of the router, gate/up and down products as they are read.
"""

from __future__ import annotations

import math

from llvmlite import ir as ll

from .attention import exp_and_sum
from .emit import I8, compute_type
from .matmul import activation
from .rules import anchor


def _zero(k, b, buf, count, value):
    with k.loop(0, count, name="z") as i:
        b.store(value, b.gep(buf, [i]))


@anchor("MixtureOfExperts", domain="xpuc")
def mixture_of_experts(ctx, node):
    k, b = ctx.k, ctx.b
    x_name, router, gate_up, down = node.inputs[:4]
    out = node.outputs[0]
    shape = ctx.shape(x_name)
    lead, hidden = list(shape[:-1]), shape[-1]
    experts, inter = ctx.shape(router)[1], ctx.shape(down)[1]
    top_k = node.attrs.get("top_k", 2)
    act = node.attrs.get("activation", "SiLU")
    real = compute_type(ctx.dtype(x_name))
    zero = ll.Constant(real, 0.0)
    probs, chosen = k.alloca(real, experts), k.alloca(I8, experts)
    top_i, top_w = k.alloca(ll.IntType(64), top_k), k.alloca(real, top_k)
    proj, cell = k.alloca(real, 2 * inter), k.alloca(real, 1)
    row, acc = k.alloca(real, hidden), k.alloca(real, hidden)
    with k.loop(k.begin, k.end, name="token") as token:
        lead_idx = k.delinearize(token, lead)
        x = lambda h: ctx.multiplied(node, ctx.read(x_name, lead_idx + [h]))  # noqa: E731
        weight = lambda name, idx: ctx.multiplied(node, ctx.read(name, idx))  # noqa: E731
        # router logits, then softmax over the experts
        _zero(k, b, probs, experts, zero)
        with k.loop(0, hidden, name="rh") as h:
            xh = x(h)
            with k.loop(0, experts, name="re") as e:
                slot = b.gep(probs, [e])
                b.store(k.intrinsic("llvm.fma", [xh, weight(router, [h, e]), b.load(slot)]), slot)
        b.store(ll.Constant(real, -math.inf), cell)
        with k.loop(0, experts, name="mx") as e:
            b.store(k.intrinsic("llvm.maximum", [b.load(cell), b.load(b.gep(probs, [e]))]), cell)
        total = exp_and_sum(k, probs, experts, b.load(cell))
        with k.loop(0, experts, name="nm") as e:
            slot = b.gep(probs, [e])
            b.store(b.fdiv(b.load(slot), total), slot)
        _select_top(k, b, probs, chosen, top_i, top_w, experts, top_k, real)
        if node.attrs.get("normalize", 1):
            b.store(zero, cell)
            with k.loop(0, top_k, name="ts") as j:
                b.store(b.fadd(b.load(cell), b.load(b.gep(top_w, [j]))), cell)
            norm = b.load(cell)
            with k.loop(0, top_k, name="tn") as j:
                slot = b.gep(top_w, [j])
                b.store(b.fdiv(b.load(slot), norm), slot)
        # the chosen experts
        _zero(k, b, acc, hidden, zero)
        with k.loop(0, top_k, name="expert") as j:
            e = b.load(b.gep(top_i, [j]))
            w = b.load(b.gep(top_w, [j]))
            _zero(k, b, proj, 2 * inter, zero)
            with k.loop(0, hidden, name="gh") as h:
                xh = x(h)
                with k.loop(0, 2 * inter, name="gi") as i:
                    slot = b.gep(proj, [i])
                    b.store(k.intrinsic("llvm.fma", [xh, weight(gate_up, [e, h, i]), b.load(slot)]), slot)
            with k.loop(0, inter, name="act") as i:
                gate_slot = b.gep(proj, [i])
                up = b.load(b.gep(proj, [b.add(i, k.i64(inter))]))
                b.store(b.fmul(activation(ctx, act, b.load(gate_slot)), up), gate_slot)
            _zero(k, b, row, hidden, zero)
            with k.loop(0, inter, name="di") as i:
                hi = ctx.multiplied(node, b.load(b.gep(proj, [i])))
                with k.loop(0, hidden, name="dh") as h:
                    slot = b.gep(row, [h])
                    b.store(k.intrinsic("llvm.fma", [hi, weight(down, [e, i, h]), b.load(slot)]), slot)
            with k.loop(0, hidden, name="wh") as h:
                slot = b.gep(acc, [h])
                b.store(k.intrinsic("llvm.fma", [w, b.load(b.gep(row, [h])), b.load(slot)]), slot)
        with k.loop(0, hidden, name="o") as h:
            ctx.write(out, lead_idx + [h], b.load(b.gep(acc, [h])))
    return math.prod(lead)


def _select_top(k, b, probs, chosen, top_i, top_w, experts, top_k, real):
    """``top_k`` rounds of: the largest unchosen probability (first index on ties)."""
    _zero(k, b, chosen, experts, ll.Constant(I8, 0))
    best, best_i = k.alloca(real, 1), k.alloca(ll.IntType(64), 1)
    with k.loop(0, top_k, name="pick") as j:
        b.store(ll.Constant(real, -math.inf), best)
        b.store(k.i64(0), best_i)
        with k.loop(0, experts, name="scan") as e:
            p = b.load(b.gep(probs, [e]))
            free = b.icmp_unsigned("==", b.load(b.gep(chosen, [e])), ll.Constant(I8, 0))
            better = b.and_(free, b.fcmp_ordered(">", p, b.load(best)))
            b.store(b.select(better, p, b.load(best)), best)
            b.store(b.select(better, e, b.load(best_i)), best_i)
        picked = b.load(best_i)
        b.store(ll.Constant(I8, 1), b.gep(chosen, [picked]))
        b.store(picked, b.gep(top_i, [j]))
        b.store(b.load(best), b.gep(top_w, [j]))
