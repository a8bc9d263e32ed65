"""The CNNs shipped inside the onnx package: import, optimize, export, compare with onnxruntime."""

import os

import numpy as np
import onnx
import pytest

import ir
from frontends import onnx as onnx_frontend
from ir.passes import optimize

from conftest import LIGHT_CNNS, assert_shapes_match_ort, ort_session, random_feeds

assert len(LIGHT_CNNS) == 9, "the installed onnx package should ship 9 light CNN models"


@pytest.mark.parametrize("path", LIGHT_CNNS, ids=[os.path.basename(p)[6:-5] for p in LIGHT_CNNS])
def test_cnn_roundtrip_matches_onnxruntime(path):
    graph = onnx_frontend.load(path)
    optimized = optimize(graph)
    assert len(optimized) < len(graph)
    exported = ir.to_onnx(optimized)
    onnx.checker.check_model(exported)
    feeds = random_feeds(graph)
    expected = ort_session(path).run(None, feeds)
    actual = ort_session(exported).run(None, feeds)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", LIGHT_CNNS[:4], ids=[os.path.basename(p)[6:-5] for p in LIGHT_CNNS[:4]])
def test_cnn_shapes_match_onnxruntime(path):
    graph = onnx_frontend.load(path)
    upgraded = onnx.version_converter.convert_version(onnx.load(path), onnx_frontend.CANONICAL_OPSET)
    assert assert_shapes_match_ort(graph, upgraded, random_feeds(graph)) > 20
