"""Quantized transformer fixtures: each exported with ``ir.to_onnx`` runs in onnxruntime and
matches xpuc's native run within a tolerance derived from its format; the formats order by
accuracy as they should; BitNet's ternary weights come back as themselves.

The tolerance of xpuc against onnxruntime on the same quantized graph is derived from its
format by ``ir.formats.agreement`` (one step of the activation format where activations are
rounded as the model runs, float32 rounding for weight-only formats).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import ir
import runtime
from conftest import MODELS, fixture_feeds, ort_session
from frontends import onnx as onnx_frontend
from ir.formats import FLOAT32_AGREEMENT, agreement, lookup
from ir.passes import optimize, quantize
from runtime.accuracy import compare

SHAPES = {"input_ids": (2, 16)}
CASES = [("llama_dynamo", p) for p in ("bf16", "fp16", "fp8-e4m3", "fp8-e5m2", "int8", "int4-g32", "int4-g128",
                                       "w8a8", "ternary")] + \
        [("gpt2_legacy", p) for p in ("fp8-e4m3", "int4-g64", "w8a8")] + \
        [("bert_dynamo", p) for p in ("bf16", "w8a8")] + [("bitnet_legacy", "ternary")]
"""Every format on a Llama (MatMul), the Gemm/FusedMatMul paths on GPT-2, an encoder, BitNet's
own format; ``scripts/check_quantized_fixtures.py`` runs every fixture in every format."""


@functools.cache
def _graph(name: str):
    path = MODELS / f"{name}.onnx"
    return optimize(onnx_frontend.load(path, input_shapes=SHAPES)), fixture_feeds(path, *SHAPES["input_ids"])


@functools.cache
def _native(name: str, precision: str | None) -> np.ndarray:
    graph, feeds = _graph(name)
    graph = quantize(graph.copy(), precision) if precision else graph
    return runtime.compile(graph, optimize=False).run(feeds)[0]


@pytest.mark.parametrize("name, precision", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_quantized_fixture_runs_in_onnxruntime_and_matches_native(name, precision):
    graph, feeds = _graph(name)
    reference = ort_session(ir.to_onnx(quantize(graph.copy(), precision))).run(None, feeds)[0]
    assert compare(_native(name, precision), reference).rel_l2 <= agreement(lookup(precision))


@pytest.mark.parametrize("name", ["llama_dynamo", "gpt2_legacy"])
def test_formats_order_by_accuracy(name):
    """Relative L2 of the logits against the float32 run: fp8 loses more than bf16, int4 more
    than int8, and bf16 loses a bf16-sized amount."""
    error = {p: compare(_native(name, p), _native(name, None)).rel_l2 for p in ("bf16", "fp8", "int8", "int4")}
    assert error["fp8"] > error["bf16"] and error["int4"] > error["int8"]
    assert 1e-4 <= error["bf16"] <= 5e-2


def test_bitnet_ternary_weights_are_three_values_and_come_back_exactly():
    graph, _ = _graph("bitnet_legacy")
    q = quantize(graph.copy(), "ternary")
    decoders = [n for n in q.nodes if n.op_type == "DequantizeLinear"]
    assert len(decoders) == 14  # q, k, v, o, gate, up, down in both layers; the LM head keeps float32
    for dq in decoders:
        codes, scale = q.const_data(dq.inputs[0]), q.const_data(dq.inputs[1])
        assert set(np.unique(codes.astype(np.int8))) == {-1, 0, 1} and scale.shape == ()
        original = graph.const_data(next(n for n in graph.nodes if n.name == q.consumers(dq.outputs[0])[0][0].name)
                                    .inputs[1])
        np.testing.assert_array_equal(codes.astype(np.float32) * scale, original)
    accuracy = compare(_native("bitnet_legacy", "ternary"), _native("bitnet_legacy", None), logits=True)
    assert accuracy.rel_l2 <= FLOAT32_AGREEMENT and accuracy.top1 == 1.0
