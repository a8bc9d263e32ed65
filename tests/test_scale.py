"""Llama-3-70B-shaped graphs (frontends.synthetic) import weightless and go through the pipeline.

The full 80-layer timing lives in benchmarks/import_scale.py; here a 2-layer slice of the same
shapes checks the counts against the analytic formulas, and a tiny config with random
weights checks that the synthetic graph is a real model onnxruntime agrees with.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ir
from conftest import ort_session
from frontends import onnx as onnx_frontend
from frontends.synthetic import LLAMA3_70B, TINY, llama_onnx
from ir.passes import optimize
from ir.summary import summarize

BATCH, SEQ = 2, 16


@pytest.fixture(scope="module")
def slice_70b():
    config = LLAMA3_70B.with_layers(2)
    graph = onnx_frontend.load(llama_onnx(config), weights=False, input_shapes={"input_ids": (BATCH, SEQ)})
    return config, graph, optimize(graph)


def test_analytic_parameter_count_of_70b():
    assert LLAMA3_70B.parameters() == 70_553_706_496  # Meta's model card: 70.6B


def test_weightless_import_keeps_every_weight_shape(slice_70b):
    config, graph, optimized = slice_70b
    for g in (graph, optimized):
        weights = [v for v in g.initializers() if v.weightless]
        assert sum(v.type.numel for v in weights) == config.parameters()
        assert all(v.type.dtype.numpy == np.float16 for v in weights)


def test_summary_counts_parameters_and_linear_flops(slice_70b):
    config, _, optimized = slice_70b
    summary = summarize(optimized)
    assert summary.weightless and not summary.ops_with_unknown_work
    compiler_constants = sum(v.type.numel for v in optimized.initializers() if not v.weightless)
    assert summary.parameters == config.parameters() + compiler_constants
    assert summary.flops_by_family["matmul"] == 2 * config.linear_parameters() * BATCH * SEQ
    logits = optimized.values[optimized.outputs[0]].type
    assert logits.shape == (BATCH, SEQ, config.vocab)


def test_optimizing_removes_ops_and_keeps_the_graph_valid(slice_70b):
    _, graph, optimized = slice_70b
    assert len(optimized) < len(graph)
    ir.verify(optimized)


def test_tiny_synthetic_llama_matches_onnxruntime():
    model = llama_onnx(TINY, external_data=None)
    onnx.checker.check_model(model, full_check=True)
    feeds = {"input_ids": np.random.default_rng(0).integers(0, TINY.vocab, (BATCH, SEQ)).astype(np.int64)}
    expected = ort_session(model).run(None, feeds)[0]
    assert expected.shape == (BATCH, SEQ, TINY.vocab) and np.isfinite(expected).all()
    graph = optimize(onnx_frontend.load(model, input_shapes={"input_ids": (BATCH, SEQ)}))
    actual = ort_session(ir.to_onnx(graph)).run(None, feeds)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=2e-3)  # a few fp16 ulps


def test_weights_are_external_and_absent(tmp_path):
    """The 70B graph claims external data that does not exist: loading weights is refused clearly."""
    path = tmp_path / "llama.onnx"
    onnx.save(llama_onnx(LLAMA3_70B.with_layers(1)), path)
    with pytest.raises(ir.errors.XpucError, match="weights.bin.*missing"):
        onnx_frontend.load(path)
    assert len(onnx_frontend.load(path, weights=False)) > 0
