"""Shared test helpers: model locations, random feeds, and onnxruntime as the oracle."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = FIXTURES / "models"
CPU_PATHS = {"host": "", "avx2": "znver3", "generic": "x86-64"}
"""Code paths tests run on, as ``XPUC_CPU`` values: the host's own (AVX-512 on the machine this
was written on), AVX2 + FMA (Zen 3), and baseline x86-64 (SSE2, no FMA)."""
LIGHT_CNNS = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))


def manifest() -> dict:
    path = MODELS / "MANIFEST.json"
    return json.loads(path.read_text()) if path.exists() else {}


def ort_session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def matmul_model(a_shape, b_shape, dtype=TensorProto.FLOAT, weight=None):
    """y = a @ b, with b a graph input or (given ``weight``) an initializer."""
    inputs = [helper.make_tensor_value_info("a", dtype, a_shape)]
    if weight is None:
        inputs.append(helper.make_tensor_value_info("b", dtype, b_shape))
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm", inputs,
                              [helper.make_tensor_value_info("y", dtype, None)],
                              [] if weight is None else [numpy_helper.from_array(weight, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def random_feeds(graph, seed: int = 0, int_high: int = 16) -> dict[str, np.ndarray]:
    """Deterministic feeds for a graph whose input shapes are bound."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.values[name].type
        shape = tuple(t.shape)
        if t.dtype.is_float:
            feeds[name] = rng.standard_normal(shape).astype(t.dtype.numpy)
        elif t.dtype.numpy == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, int_high, shape).astype(t.dtype.numpy)
    return feeds


FIXTURE_MODELS = sorted(MODELS.glob("*.onnx"))


def fixture_feeds(path: Path, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random inputs for a fixture model with its ``batch``/``seq`` symbols bound.

    Names, dtypes and the token range come from MANIFEST.json; a model it does not describe
    gets int64 token ids in [0, 32), its first symbolic dim read as batch and the others as seq.
    """
    entry = next((f for f in manifest().get("fixtures", []) if f.get("file") == path.name), None)
    if entry is not None:
        inputs = [(i["name"], np.dtype(i["dtype"]), i["shape"]) for i in entry["inputs"]]
        high = entry.get("vocab_size") or 32
    else:
        graph = onnx.load(path, load_external_data=False).graph
        weights = {t.name for t in graph.initializer}
        inputs = [(i.name, np.dtype(np.int64), [d.dim_value if d.HasField("dim_value") else d.dim_param
                                                 for d in i.type.tensor_type.shape.dim])
                  for i in graph.input if i.name not in weights]
        high = 32
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, dtype, dims in inputs:
        shape = [d if isinstance(d, int) else {"batch": batch, "seq": seq}.get(d, batch if k == 0 else seq)
                 for k, d in enumerate(dims)]
        feeds[name] = rng.integers(0, high, shape).astype(dtype)
    return feeds


@pytest.fixture(scope="session")
def fixtures_manifest() -> dict:
    return manifest()


def ort_intermediate_shapes(model: onnx.ModelProto, feeds: dict) -> dict[str, tuple]:
    """Shapes onnxruntime actually produces for every node output of ``model``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    declared = {o.name for o in m.graph.output}
    names = [o for n in m.graph.node for o in n.output if o and o not in declared]
    del m.graph.value_info[:]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    results = ort_session(m).run(None, feeds)
    outs = [o.name for o in m.graph.output]
    return {n: tuple(r.shape) for n, r in zip(outs, results)}


def assert_shapes_match_ort(graph, model: onnx.ModelProto, feeds: dict) -> int:
    """Every intermediate our shape inference typed statically matches onnxruntime; returns count."""
    actual = ort_intermediate_shapes(model, feeds)
    checked = 0
    for name, shape in actual.items():
        if name in graph.values:
            ours = graph.values[name].type.shape
            assert ours == shape, f"{name}: inferred {ours}, onnxruntime produced {shape}"
            checked += 1
    return checked
