"""Every transformer fixture: import -> optimize -> export, and onnxruntime agrees with the original.

With bound input shapes the shape subgraphs fold away, so the optimized graph must be
strictly smaller. Loaded with symbolic dims, the optimized export must still run at a size
it was not specialised for, and keep the symbolic output shape the model declares.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ir
from conftest import FIXTURE_MODELS, fixture_feeds, manifest, ort_session
from frontends import onnx as onnx_frontend
from ir.passes import optimize

SIZES = [(1, 8), (2, 16)]
"""(batch, seq) the inputs are bound to; fixtures with a static seq keep theirs."""


def _tolerance(path) -> dict:
    entry = next((f for f in manifest().get("fixtures", []) if f.get("file") == path.name), {})
    tol = entry.get("tolerance", {})
    return {"rtol": tol.get("rtol", 1e-4), "atol": tol.get("atol", 1e-5)}


def _assert_same_outputs(path, exported: onnx.ModelProto, feeds: dict) -> None:
    expected = ort_session(path).run(None, feeds)
    actual = ort_session(exported).run(None, feeds)
    assert len(actual) == len(expected)
    for e, a in zip(expected, actual):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, **_tolerance(path))


@pytest.mark.parametrize("size", SIZES, ids=[f"{b}x{s}" for b, s in SIZES])
@pytest.mark.parametrize("path", FIXTURE_MODELS, ids=[p.stem for p in FIXTURE_MODELS])
def test_bound_roundtrip_matches_onnxruntime(path, size):
    feeds = fixture_feeds(path, *size)
    graph = onnx_frontend.load(path, input_shapes={name: value.shape for name, value in feeds.items()})
    optimized = optimize(graph)
    assert len(optimized) < len(graph)
    assert optimized.outputs == graph.outputs
    exported = ir.to_onnx(optimized)
    onnx.checker.check_model(exported, full_check=True)
    _assert_same_outputs(path, exported, feeds)


@pytest.mark.parametrize("path", FIXTURE_MODELS, ids=[p.stem for p in FIXTURE_MODELS])
def test_symbolic_roundtrip_runs_at_any_size(path):
    graph = onnx_frontend.load(path)
    symbols = {d for name in graph.inputs for d in graph.values[name].type.shape if isinstance(d, str)}
    assert symbols, "the fixture should have symbolic input dims"
    optimized = optimize(graph)
    assert len(optimized) < len(graph)
    for info in onnx.load(path).graph.output:
        ours = optimized.values[info.name].type.shape
        declared = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in info.type.tensor_type.shape.dim]
        assert all(isinstance(d, int) or d in symbols for d in ours), f"{info.name}: {ours}"
        assert all(o == d for o, d in zip(ours, declared) if isinstance(d, int) or d in symbols), f"{info.name}: {ours}"
        assert len(ours) == len(declared)
    exported = ir.to_onnx(optimized)
    onnx.checker.check_model(exported)
    _assert_same_outputs(path, exported, fixture_feeds(path, batch=3, seq=11, seed=1))
