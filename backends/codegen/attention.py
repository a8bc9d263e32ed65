"""ONNX Attention (opsets 23-25): one parallel iteration per (batch, query head, query row).

Each iteration scores the row against every key (past cache first), applies scale,
softcap, the additive or boolean mask, the causal frontier, the sliding window and the
external cache's valid length (``nonpad_kv_seqlen``), optionally exposes the scores in one of
the four ``qk_matmul_output`` modes, takes a numerically safe
softmax (a fully masked row gives zeros, as the reference does), and accumulates the
weighted values in a scratch row. Grouped-query heads share key/value heads.

The arithmetic follows the ONNX reference (and the MatMul/Softmax/MatMul graphs exporters
emit, as onnxruntime runs them) so results agree to the last bits where possible: Q and K
are each scaled by sqrt(scale), dot products and the value sum are sequential fused
multiply-adds, and the probabilities are normalized (times 1/sum) before weighting values.
An op rounding its operands (a target's matrix engine) rounds the scaled Q and K elements,
the probabilities and V as the two products read them; the softmax stays float32.
"""

from __future__ import annotations

import math

from llvmlite import ir as ll

from . import vmath
from .elementwise import fconst
from .emit import CodegenError, compute_type
from .movement import as_index
from .rules import anchor


class _Layout:
    """Index a (batch, head, seq, dim) view of a 3-D (B, S, H*D) or 4-D (B, H, S, D) operand."""

    def __init__(self, ctx, name: str, heads: int | None):
        self.ctx, self.name = ctx, name
        shape = ctx.shape(name)
        self.four = len(shape) == 4
        self.heads = shape[1] if self.four else heads
        self.seq = shape[2] if self.four else shape[1]
        self.dim = shape[3] if self.four else shape[2] // heads

    def index(self, b, h, s, d):
        k = self.ctx.k
        return [b, h, s, d] if self.four else [b, s, self.ctx.b.add(self.ctx.b.mul(h, k.i64(self.dim)), d)]

    def read(self, b, h, s, d):
        return self.ctx.read(self.name, self.index(b, h, s, d))


def _kv(ctx, node, i_new: int, i_past: int, heads):
    """Reader for the key (or value) sequence with the past cache in front."""
    new = _Layout(ctx, node.inputs[i_new], heads)
    past = _Layout(ctx, node.inputs[i_past], heads) if len(node.inputs) > i_past and node.inputs[i_past] else None
    past_len = past.seq if past else 0

    def read(b, h, t, d):
        if past is None:
            return new.read(b, h, t, d)
        bld = ctx.b
        in_past = bld.icmp_signed("<", t, ctx.k.i64(past_len))
        t_past = bld.select(in_past, t, ctx.k.i64(0))
        t_new = bld.select(in_past, ctx.k.i64(0), bld.sub(t, ctx.k.i64(past_len)))
        return bld.select(in_past, past.read(b, h, t_past, d), new.read(b, h, t_new, d))

    return read, new, past_len


@anchor("Attention")
def attention(ctx, node):
    k, b = ctx.k, ctx.b
    a = node.attrs
    q = _Layout(ctx, node.inputs[0], a.get("q_num_heads"))
    read_k, k_new, past_len = _kv(ctx, node, 1, 4, a.get("kv_num_heads"))
    read_v, v_new, _ = _kv(ctx, node, 2, 5, a.get("kv_num_heads"))
    total, dv = past_len + k_new.seq, v_new.dim
    group = q.heads // k_new.heads
    scale = a.get("scale") or 1 / math.sqrt(q.dim)
    softcap = a.get("softcap", 0.0)
    mask = _input(node, 3)
    nonpad = _input(node, 6)
    qk_out, qk_mode = (node.outputs[3] if len(node.outputs) > 3 else ""), a.get("qk_matmul_output_mode", 0)
    if qk_mode not in (0, 1, 2, 3):
        raise CodegenError(f"{node.name}: unknown qk_matmul_output_mode {qk_mode}")
    out = node.outputs[0]
    y = _Layout(ctx, out, q.heads)
    real = compute_type(ctx.dtype(node.inputs[0]))
    scores, acc = k.alloca(real, total), k.alloca(real, dv)
    zero, neg_inf = ll.Constant(real, 0.0), ll.Constant(real, -math.inf)
    root_scale = fconst(zero, math.sqrt(scale))
    with k.loop(k.begin, k.end, name="row") as row:
        bi, h, s = k.delinearize(row, [ctx.shape(node.inputs[0])[0], q.heads, q.seq])
        hk = b.udiv(h, k.i64(group))
        qk_at = lambda t: [bi, h, s, t]  # noqa: E731
        valid = _valid_length(ctx, nonpad, bi, total)
        allowed = _visible(ctx, node, s, q.seq, past_len, valid)
        # keys past an external cache's valid length are masked: not visited (a cache buffer
        # holds whatever its unused positions held), unless the scores are an output
        keys = valid if valid is not None and not qk_out else total
        top = k.alloca(real, 1)
        b.store(neg_inf, top)
        with k.loop(0, total if qk_out else keys, name="t") as t:
            dot = k.alloca(real, 1)
            b.store(zero, dot)
            with k.loop(0, q.dim, name="d") as d:
                qd = ctx.multiplied(node, b.fmul(q.read(bi, h, s, d), root_scale))
                kd = ctx.multiplied(node, b.fmul(read_k(bi, hk, t, d), root_scale))
                b.store(k.intrinsic("llvm.fmuladd", [qd, kd, b.load(dot)]), dot)
            score = b.load(dot)
            if softcap:
                score = b.fmul(vmath.tanh(k, b.fdiv(score, fconst(zero, softcap))), fconst(zero, softcap))
            if qk_out and qk_mode in (0, 1):
                ctx.write(qk_out, qk_at(t), score)
            if mask is not None:
                score = _apply_mask(ctx, mask, score, [bi, h, s, t])
            score = b.select(allowed(t), score, neg_inf)
            if qk_out and qk_mode == 2:
                ctx.write(qk_out, qk_at(t), score)
            b.store(score, b.gep(scores, [t]))
            b.store(k.intrinsic("llvm.maximum", [b.load(top), score]), top)
        masked = b.fcmp_ordered("==", b.load(top), neg_inf)
        safe_top = b.select(masked, zero, b.load(top))
        denom = exp_and_sum(k, scores, keys, safe_top)
        inv = b.fdiv(fconst(zero, 1), b.select(b.fcmp_ordered("==", denom, zero), fconst(zero, 1), denom))
        with k.loop(0, dv, name="z") as d:
            b.store(zero, b.gep(acc, [d]))
        with k.loop(0, keys, name="t") as t:
            p = ctx.multiplied(node, b.fmul(b.load(b.gep(scores, [t])), inv))
            if qk_out and qk_mode == 3:
                ctx.write(qk_out, qk_at(t), p)
            with k.loop(0, dv, name="v") as d:
                slot = b.gep(acc, [d])
                vd = ctx.multiplied(node, read_v(bi, hk, t, d))
                b.store(k.intrinsic("llvm.fmuladd", [p, vd, b.load(slot)]), slot)
        with k.loop(0, dv, name="o") as d:
            ctx.write(out, y.index(bi, h, s, d), b.load(b.gep(acc, [d])))
        _write_present(ctx, node, read_k, read_v, bi, h, s, group, total, k_new.dim, dv)
    return ctx.shape(node.inputs[0])[0] * q.heads * q.seq


def exp_and_sum(k, row, count: int, top):
    """``row[t] = exp(row[t] - top)`` for t < count, in place; returns their sum (softmax's
    numerators and denominator)."""
    b = k.b
    total = k.alloca(top.type, 1)
    b.store(ll.Constant(top.type, 0.0), total)
    with k.loop(0, count, name="e") as t:
        slot = b.gep(row, [t])
        e = vmath.exp(k, b.fsub(b.load(slot), top))
        b.store(e, slot)
        b.store(b.fadd(b.load(total), e), total)
    return b.load(total)


def _input(node, i: int) -> str | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i] else None


def _valid_length(ctx, nonpad: str | None, bi, total: int):
    """An external cache's valid length for batch row ``bi``, clamped to [0, total] (None without one)."""
    if nonpad is None:
        return None
    b, k = ctx.b, ctx.k
    valid = as_index(ctx, ctx.read(nonpad, [bi]))
    valid = b.select(b.icmp_signed("<", valid, k.i64(0)), k.i64(0), valid)
    return b.select(b.icmp_signed(">", valid, k.i64(total)), k.i64(total), valid)


def _visible(ctx, node, s, q_seq: int, past_len: int, valid):
    """``allowed(t)``: whether query row ``s`` may see key ``t`` under the causal frontier, the
    sliding window and the external cache's valid length, all measured from the query's
    absolute position ``s + offset`` (offset: the past length, or ``nonpad_kv_seqlen - q_seq``)."""
    b, k = ctx.b, ctx.k
    a = node.attrs
    offset = k.i64(past_len) if valid is None or past_len else b.sub(valid, k.i64(q_seq))
    position = b.add(s, offset)
    causal, left, right = a.get("is_causal", 0), a.get("left_window_size", -1), a.get("right_window_size", -1)

    def allowed(t):
        ok = ll.Constant(ll.IntType(1), 1)
        diff = b.sub(position, t)
        if causal:
            ok = b.and_(ok, b.icmp_signed(">=", diff, k.i64(0)))
        if left >= 0:
            ok = b.and_(ok, b.icmp_signed("<=", diff, k.i64(left)))
        if right >= 0:
            ok = b.and_(ok, b.icmp_signed(">=", diff, k.i64(-right)))
        if valid is not None:
            ok = b.and_(ok, b.icmp_signed("<", t, valid))
        return ok

    return allowed


def _apply_mask(ctx, mask: str, score, idx):
    """Add a float mask or turn a false boolean entry into -inf; keys past the mask's end are masked."""
    b, k = ctx.b, ctx.k
    shape = ctx.shape(mask)
    width = shape[-1]
    t = idx[-1]
    inside = b.icmp_signed("<", t, k.i64(width))
    clamped = idx[:-1] + [b.select(inside, t, k.i64(0))]
    m = ctx.read_bcast(mask, clamped)
    neg_inf = ll.Constant(score.type, -math.inf)
    value = b.select(m, score, neg_inf) if m.type == ll.IntType(1) else b.fadd(score, m)
    return b.select(inside, value, neg_inf)


def _write_present(ctx, node, read_k, read_v, bi, h, s, group, total, dk, dv):
    """present_key / present_value: the first row of each key/value head copies its cache."""
    b, k = ctx.b, ctx.k
    outs = [(i, name) for i, name in ((1, node.outputs[1] if len(node.outputs) > 1 else ""),
                                       (2, node.outputs[2] if len(node.outputs) > 2 else "")) if name]
    if not outs:
        return
    leader = b.and_(b.icmp_unsigned("==", b.urem(h, k.i64(group)), k.i64(0)), b.icmp_unsigned("==", s, k.i64(0)))
    hk = b.udiv(h, k.i64(group))
    with b.if_then(leader):
        for i, name in outs:
            read, width = (read_k, dk) if i == 1 else (read_v, dv)
            with k.nest([total, width], name="p") as (t, d):
                ctx.write(name, [bi, hk, t, d], read(bi, hk, t, d))
