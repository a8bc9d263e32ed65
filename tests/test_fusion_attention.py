"""Attention and RotaryEmbedding fusion: on the exported HF fixtures and on hand-built graphs.

Every fused graph is exported and run by onnxruntime against the unfused original.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

import ir
from conftest import MODELS, manifest, ort_session, random_feeds
from frontends.onnx import load
from ir.passes import optimize

LAYER_FAMILIES = {  # family -> (rotary, causal)
    "llama": (True, True), "mistral": (True, True), "qwen2": (True, True), "gemma": (True, True),
    "phi": (True, True), "olmo": (True, True), "bitnet": (True, True), "gpt2": (False, True), "bert": (False, False),
}
FIXTURES = [f"{family}_{exporter}" for family in LAYER_FAMILIES for exporter in ("dynamo", "legacy")]
RTOL, ATOL = 1e-4, 1e-5


def ops(graph: ir.Graph, op_type: str) -> list[ir.Node]:
    return [n for n in graph.nodes if n.op_type == op_type]


def assert_matches_original(original, graph: ir.Graph, feeds: dict) -> None:
    expected = ort_session(original).run(None, feeds)
    actual = ort_session(ir.to_onnx(graph)).run(None, feeds)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("seq", [16, 5])
def test_fixture_fuses_one_attention_per_layer(name, seq):
    entry = next(f for f in manifest()["fixtures"] if f["name"] == name)
    rotary, causal = LAYER_FAMILIES[entry["family"]]
    config = entry["config"]
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    banded = causal and window is not None and seq > window  # Mistral: a band, not a triangle
    layers = entry["num_layers"]
    path = MODELS / f"{name}.onnx"
    graph = optimize(load(path, input_shapes={"input_ids": (2, seq)}))

    counts = Counter(n.op_type for n in graph.nodes)
    assert counts["Attention"] == layers
    assert counts["RotaryEmbedding"] == (2 * layers if rotary else 0)
    assert counts["Softmax"] == 0
    for attn in ops(graph, "Attention"):
        assert attn.attr("is_causal", 0) == int(causal and not banded)
        assert (len(attn.inputs) == 4 and graph.is_const(attn.inputs[3])) == banded
    assert_matches_original(path, graph, random_feeds(graph, seed=seq, int_high=entry["vocab_size"]))


# ----------------------------------------------------------------- hand-built graphs
B, HQ, HKV, S, D = 2, 4, 2, 8, 16
SCALE = D ** -0.5


def attention_model(scores: str, inputs: str = "", softmax_axis: int = -1, outputs: str = "",
                    mask: np.ndarray | None = None, tiled: bool = False) -> onnx.ModelProto:
    """HF eager GQA attention: repeat_kv on K and V, then ``scores`` computes ``s`` from ``qk``.

    tiled: repeat the K/V heads as a whole (head h reads kv head h % HKV), which is not GQA.
    """
    axis, rep = (1, [B, HQ // HKV, HKV, S, D]) if tiled else (2, [B, HKV, HQ // HKV, S, D])
    text = f"""
    <ir_version: 10, opset_import: ["" : 23]>
    attn (float[{B},{HQ},{S},{D}] q, float[{B},{HKV},{S},{D}] k, float[{B},{HKV},{S},{D}] v{inputs})
        => (float[{B},{HQ},{S},{D}] y{outputs})
    <int64[1] two = {{{axis}}}, int64[5] rep = {{{str(rep)[1:-1]}}}, int64[4] heads = {{{B},{HQ},{S},{D}}},
     float scale = {{{SCALE}}}, float zero = {{0.0}}>
    {{
        ku = Unsqueeze(k, two)
        ke = Expand(ku, rep)
        kr = Reshape(ke, heads)
        kt = Transpose<perm = [0, 1, 3, 2]>(kr)
        vu = Unsqueeze(v, two)
        ve = Expand(vu, rep)
        vr = Reshape(ve, heads)
        qk = MatMul(q, kt)
        {scores}
        p = Softmax<axis = {softmax_axis}>(s)
        nan = IsNaN(p)
        pz = Where(nan, zero, p)
        y = MatMul(pz, vr)
    }}
    """
    model = onnx.parser.parse_model(text)
    if mask is not None:
        model.graph.initializer.append(numpy_helper.from_array(mask.astype(np.float32), "mask"))
    return model


def fuse(model: onnx.ModelProto) -> tuple[ir.Graph, dict]:
    graph = load(model)
    return optimize(graph), random_feeds(graph)


def causal_mask(fill: float) -> np.ndarray:
    return np.triu(np.full((1, 1, S, S), fill, dtype=np.float32), 1)


@pytest.mark.parametrize("fill", [-np.inf, np.finfo(np.float32).min, -10000.0])
def test_gqa_with_causal_mask_fuses_to_is_causal(fill):
    model = attention_model("ss = Mul(qk, scale)\n s = Add(ss, mask)", mask=causal_mask(fill))
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert attn.attrs["is_causal"] == 1
    assert attn.attrs["kv_num_heads"] == HKV and attn.attrs["q_num_heads"] == HQ
    assert attn.inputs[1:] == ["k", "v"]  # repeat_kv absorbed: K and V keep their own heads
    assert np.isclose(attn.attrs["scale"], SCALE)
    assert_matches_original(model, graph, feeds)


def test_tiled_heads_are_not_taken_for_grouped_heads():
    model = attention_model("ss = Mul(qk, scale)\n s = Add(ss, mask)", mask=causal_mask(-np.inf), tiled=True)
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert attn.attrs["kv_num_heads"] == HQ
    assert_matches_original(model, graph, feeds)


def test_sqrt_scale_on_q_and_k_and_runtime_mask_is_kept():
    model = attention_model("qs = Mul(q, root)\n ks = Mul(kt, root)\n qks = MatMul(qs, ks)\n s = Add(qks, pad)",
                            inputs=f", float[{B},1,1,{S}] pad")
    model.graph.initializer.append(numpy_helper.from_array(np.array(SCALE ** 0.5, np.float32), "root"))
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert attn.attr("is_causal", 0) == 0 and np.isclose(attn.attrs["scale"], SCALE)
    assert len(attn.inputs) == 4 and attn.inputs[3]  # the padding mask, broadcast over queries
    feeds["pad"] = np.where(feeds["pad"] > 0.5, -np.inf, 0).astype(np.float32)
    feeds["pad"][..., 0] = 0  # keep one key per row; fully masked rows are covered below
    assert_matches_original(model, graph, feeds)


def test_arbitrary_constant_mask_is_kept_and_fully_masked_rows_stay_zero():
    mask = np.random.default_rng(1).choice([0.0, -np.inf], size=(B, 1, S, S)).astype(np.float32)
    mask[0, 0, 3] = -np.inf  # a fully masked row: the exporter's Where(IsNaN) makes it zero
    model = attention_model("d = Div(qk, root_d)\n s = Add(mask, d)", mask=mask)
    model.graph.initializer.append(numpy_helper.from_array(np.array(D ** 0.5, np.float32), "root_d"))
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert attn.attr("is_causal", 0) == 0 and graph.is_const(attn.inputs[3])
    np.testing.assert_array_equal(graph.const_data(attn.inputs[3]), mask)
    assert_matches_original(model, graph, feeds)


def test_all_zero_mask_is_dropped():
    model = attention_model("ss = Mul(qk, scale)\n s = Add(ss, mask)", mask=np.zeros((1, 1, S, S)))
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert len(attn.inputs) == 3 and attn.attr("is_causal", 0) == 0
    assert_matches_original(model, graph, feeds)


@pytest.mark.parametrize("case", ["softmax over a non-last axis", "scores read twice"])
def test_near_misses_do_not_fuse(case):
    scores = "ss = Mul(qk, scale)\n s = Add(ss, mask)"
    if case == "softmax over a non-last axis":
        model = attention_model(scores, softmax_axis=2, mask=causal_mask(-np.inf))
    else:
        model = attention_model(scores, outputs=f", float[{B},{HQ},{S},{S}] ss", mask=causal_mask(-np.inf))
    graph, feeds = fuse(model)
    assert not ops(graph, "Attention") and len(ops(graph, "Softmax")) == 1
    assert_matches_original(model, graph, feeds)


def test_bshd_layout_key_transposed_in_one_step():
    """Legacy exports build K^T as Transpose(k, [0, 2, 3, 1]) straight from [B, S, H, D]."""
    text = f"""
    <ir_version: 10, opset_import: ["" : 23]>
    bshd (float[{B},{S},{HQ},{D}] q, float[{B},{S},{HQ},{D}] k, float[{B},{S},{HQ},{D}] v) => (float[{B},{HQ},{S},{D}] y)
    <float root = {{{SCALE ** 0.5}}}>
    {{
        qt = Transpose<perm = [0, 2, 1, 3]>(q)
        kt = Transpose<perm = [0, 2, 3, 1]>(k)
        vt = Transpose<perm = [0, 2, 1, 3]>(v)
        qs = Mul(qt, root)
        ks = Mul(kt, root)
        s = MatMul(qs, ks)
        p = Softmax<axis = -1>(s)
        y = MatMul(p, vt)
    }}
    """
    model = onnx.parser.parse_model(text)
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert np.isclose(attn.attrs["scale"], SCALE) and attn.attrs["kv_num_heads"] == HQ
    assert_matches_original(model, graph, feeds)


def test_fp16_with_fp32_softmax_keeps_softmax_precision():
    text = f"""
    <ir_version: 10, opset_import: ["" : 23]>
    half (float16[{B},{HQ},{S},{D}] q, float16[{B},{HQ},{S},{D}] k, float16[{B},{HQ},{S},{D}] v)
        => (float16[{B},{HQ},{S},{D}] y)
    <float scale32 = {{{SCALE}}}>
    {{
        kt = Transpose<perm = [0, 1, 3, 2]>(k)
        qk = MatMul(q, kt)
        scale = Cast<to = 10>(scale32)
        s = Mul(qk, scale)
        s32 = Cast<to = 1>(s)
        p32 = Softmax<axis = -1>(s32)
        p = Cast<to = 10>(p32)
        y = MatMul(p, v)
    }}
    """
    model = onnx.parser.parse_model(text)
    graph, feeds = fuse(model)
    (attn,) = ops(graph, "Attention")
    assert attn.attrs["softmax_precision"] == onnx.TensorProto.FLOAT and not ops(graph, "Cast")
    expected = ort_session(model).run(None, feeds)[0]
    actual = ort_session(ir.to_onnx(graph)).run(None, feeds)[0]
    np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32), atol=2e-3)  # fp16 ulps


# ------------------------------------------------------------------------- rotary
def rotary_model(cos: np.ndarray, sin: np.ndarray) -> onnx.ModelProto:
    half = D // 2
    text = f"""
    <ir_version: 10, opset_import: ["" : 23]>
    rope (float[{B},{HQ},{S},{D}] x) => (float[{B},{HQ},{S},{D}] y)
    <int64[1] zero = {{0}}, int64[1] mid = {{{half}}}, int64[1] end = {{{2 ** 62}}}, int64[1] last = {{-1}}>
    {{
        xc = Mul(x, cos)
        lo = Slice(x, zero, mid, last)
        hi = Slice(x, mid, end, last)
        nhi = Neg(hi)
        rot = Concat<axis = -1>(nhi, lo)
        rs = Mul(rot, sin)
        y = Add(xc, rs)
    }}
    """
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend([numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin")])
    return model


def rope_caches(freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    emb = np.concatenate([freqs, freqs], axis=-1)[:, None]  # HF: cat(freqs, freqs), unsqueezed over heads
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def test_rotate_half_fuses_with_half_caches():
    freqs = np.outer(np.arange(S), 10000.0 ** -(np.arange(D // 2) / (D // 2)))[None]
    model = rotary_model(*rope_caches(freqs))
    graph, feeds = fuse(model)
    (rope,) = ops(graph, "RotaryEmbedding")
    assert graph.type_of(rope.inputs[1]).shape == (B, S, D // 2)
    assert_matches_original(model, graph, feeds)


def test_rotary_with_unequal_cache_halves_does_not_fuse():
    cos, sin = rope_caches(np.random.default_rng(2).standard_normal((1, S, D // 2)))
    cos[..., 0] += 1.0  # no longer cat(freqs, freqs): ONNX's half cache cannot express it
    model = rotary_model(cos, sin)
    graph, feeds = fuse(model)
    assert not ops(graph, "RotaryEmbedding")
    assert_matches_original(model, graph, feeds)


def test_a_layout_too_big_to_trace_stays_unfused(monkeypatch):
    """The K/V layout proof traces index maps as big as K; past TRACE_LIMIT elements (or when the
    machine cannot hold them) attention stays unfused instead of the pass allocating without bound."""
    from ir.passes.fuse import attention as fusion

    model = attention_model("ss = Mul(qk, scale)\n s = Add(ss, mask)", mask=causal_mask(-np.inf))
    monkeypatch.setattr(fusion, "TRACE_LIMIT", B * HQ * S * D - 1)
    graph, feeds = fuse(model)
    assert not ops(graph, "Attention")
    assert_matches_original(model, graph, feeds)

    def out_of_memory(*args):
        raise MemoryError

    monkeypatch.undo()
    monkeypatch.setattr(fusion, "_trace", out_of_memory)
    graph, _ = fuse(model)
    assert not ops(graph, "Attention")
