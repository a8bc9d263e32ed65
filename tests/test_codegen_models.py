"""Every transformer fixture and light CNN compiles to native code and matches onnxruntime;
a representative few also on the AVX2 (``XPUC_CPU=znver3``) and baseline x86-64 paths."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from conftest import CPU_PATHS, LIGHT_CNNS, MODELS, ort_session, random_feeds
from frontends import onnx as onnx_frontend

FIXTURES = sorted(MODELS.glob("*.onnx"))
SHAPES = {"input_ids": (2, 16)}


def _assert_close(ours, ref):
    for a, r in zip(ours, ref):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_transformer_fixture_matches_onnxruntime(path):
    compiled = runtime.compile(path, input_shapes=SHAPES)
    feeds = random_feeds(onnx_frontend.load(path, input_shapes=SHAPES), int_high=64)
    _assert_close(compiled.run(feeds), ort_session(path).run(None, feeds))
    assert 0 < compiled.peak_bytes <= compiled.intermediate_bytes


OVERRIDE_FIXTURES = {"avx2": ["gpt2_legacy", "llama_dynamo", "bert_dynamo", "mamba_legacy"],
                     "generic": ["gpt2_dynamo", "qwen2_legacy"]}
"""GELU, softmax, norms, rotary, attention, SiLU and Mamba's scan: every kernel family once per path."""


@pytest.mark.parametrize("cpu, name", [(cpu, name) for cpu, names in OVERRIDE_FIXTURES.items() for name in names])
def test_fixture_matches_onnxruntime_on_override_paths(cpu, name, monkeypatch):
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    test_transformer_fixture_matches_onnxruntime(MODELS / f"{name}.onnx")


@pytest.mark.parametrize("path", LIGHT_CNNS, ids=lambda p: p.rsplit("/", 1)[-1])
def test_light_cnn_matches_onnxruntime(path):
    compiled = runtime.compile(path)
    feeds = random_feeds(onnx_frontend.load(path))
    _assert_close(compiled.run(feeds), ort_session(path).run(None, feeds))
