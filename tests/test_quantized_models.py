"""Quantized transformer fixtures: each exported with ``ir.to_onnx`` runs in onnxruntime and
matches xpuc's native run within a tolerance derived from its format; the formats order by
accuracy as they should; BitNet's ternary weights come back as themselves.

Tolerance of xpuc against onnxruntime on the same quantized graph (:func:`tolerance`): both
decode weights to the same float32 values, so a weight-only format agrees to float32
rounding. Where activations are rounded as the model runs, a float32 difference of one ulp
can put an element on the other side of a rounding boundary; that element then differs by one
step of the activation format, and so does what is computed from it. The bound is one
relative step: 2**-mantissa bits for float formats, and for w8a8's uint8 codes over a
per-tensor range, range / 255 relative to the RMS element, taking the range as 8 RMS (+-4
sigma of a normal activation).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import ir
import runtime
from conftest import MODELS, fixture_feeds, ort_session
from frontends import onnx as onnx_frontend
from ir.dtypes import DType
from ir.formats import Format, lookup, relative_step
from ir.passes import optimize, quantize
from runtime.accuracy import compare

SHAPES = {"input_ids": (2, 16)}
FLOAT32_AGREEMENT = 1e-5
"""Relative L2 between two float32 runs of these models (xpuc against onnxruntime: under 5e-7)."""
RANGE_OVER_RMS = 8.0
CASES = [("llama_dynamo", p) for p in ("bf16", "fp16", "fp8-e4m3", "fp8-e5m2", "int8", "int4-g32", "int4-g128",
                                       "w8a8", "ternary")] + \
        [("gpt2_legacy", p) for p in ("fp8-e4m3", "int4-g64", "w8a8")] + \
        [("bert_dynamo", p) for p in ("bf16", "w8a8")] + [("bitnet_legacy", "ternary")]
"""Every format on a Llama (MatMul), the Gemm/FusedMatMul paths on GPT-2, an encoder, BitNet's
own format; ``scripts/check_quantized_fixtures.py`` runs every fixture in every format."""


def tolerance(fmt: Format) -> float:
    """How far xpuc and onnxruntime may be apart on a graph in ``fmt`` (module docstring)."""
    if fmt.activations is DType.FLOAT32:
        return FLOAT32_AGREEMENT
    step = relative_step(fmt.activations)
    return step * RANGE_OVER_RMS if fmt.activations.is_int else step


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
    assert compare(_native(name, precision), reference).rel_l2 <= tolerance(lookup(precision))


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
