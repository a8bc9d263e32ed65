"""The MatMul kernels at their edges: ragged row blocks, column blocks and panels, B packed
at compile time vs inside the kernel, decode-shaped products (one tile of all rows over
constant panels, a runtime B streamed in place), batched and broadcast B, narrow floats, a
non-default tiling, and the AVX2 and baseline x86-64 code paths. Every case is checked
against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from backends.codegen import HostTiling, host_tiling
from conftest import CPU_PATHS, matmul_model, ort_session

RNG = np.random.default_rng(1)
SMALL = HostTiling(vector_width=host_tiling().vector_width, mr=3, nr_vectors=1, mc=6, nc=24, l1_bytes=1024)
"""Tiny blocks, so the small shapes below cross every edge (a streamed strip of 1024 B / 2 / 4 B = 128 columns)."""


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("tiling", [None, SMALL], ids=["host", "small"])
@pytest.mark.parametrize("constant", [False, True], ids=["b_input", "b_constant"])
@pytest.mark.parametrize("a_shape,b_shape", [((150, 70), (70, 300)), ((1, 64), (64, 40)), ((2, 13, 9), (9, 35)),
                                             ((2, 3, 7, 20), (3, 20, 18)), ((2, 5, 16), (1, 16, 16)),
                                             ((1, 48), (48, 150)), ((2, 2, 30), (2, 30, 100))])
def test_matmul_matches_onnxruntime(a_shape, b_shape, constant, tiling):
    a = RNG.standard_normal(a_shape, np.float32)
    b = RNG.standard_normal(b_shape, np.float32)
    m = matmul_model(a_shape, b_shape, TensorProto.FLOAT, b if constant else None)
    feeds = {"a": a} if constant else {"a": a, "b": b}
    ours = runtime.compile(m, tiling=tiling).run(feeds)[0]
    np.testing.assert_allclose(ours, ort_session(m).run(None, feeds)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("constant", [False, True], ids=["b_input", "b_constant"])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16], ids=["f16", "bf16"])
def test_narrow_float_matmul_widens_to_float32(dtype, constant):
    """onnxruntime has no bfloat16 MatMul on the CPU, so the reference is numpy in float32."""
    storage = helper.tensor_dtype_to_np_dtype(dtype)
    a = RNG.standard_normal((20, 33)).astype(storage)
    b = RNG.standard_normal((33, 41)).astype(storage)
    m = matmul_model(a.shape, b.shape, dtype, b if constant else None)
    feeds = {"a": a} if constant else {"a": a, "b": b}
    ours = runtime.compile(m).run(feeds)[0]
    assert ours.dtype == storage
    expected = a.astype(np.float32) @ b.astype(np.float32)
    np.testing.assert_allclose(ours.astype(np.float32), expected, rtol=2e-2, atol=2e-2)


DECODE = [((1, 70), (70, 40)), ((3, 70), (70, 150)), ((8, 33), (33, 300)), ((2, 5, 16), (2, 16, 48)),
          ((7, 9), (9, 17))]
"""Products with at most ``stream_rows`` rows: ragged panels and strips, odd K, a batched B."""


@pytest.mark.parametrize("tiling", [None, SMALL], ids=["host", "small"])
@pytest.mark.parametrize("constant", [False, True], ids=["b_input", "b_constant"])
@pytest.mark.parametrize("a_shape,b_shape", DECODE)
def test_decode_shaped_products_match_onnxruntime(a_shape, b_shape, constant, tiling):
    test_matmul_matches_onnxruntime(a_shape, b_shape, constant, tiling)


@pytest.mark.parametrize("rows", [1, 6, 40])
def test_gemm_with_transposed_constant_weight(rows):
    """A Linear layer exported as Gemm(transB=1): the weight is packed from its transpose."""
    f = TensorProto.FLOAT
    w = RNG.standard_normal((50, 64), np.float32)
    bias = RNG.standard_normal(50).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)], "g",
                              [helper.make_tensor_value_info("a", f, (rows, 64))], [helper.make_tensor_value_info("y", f, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "c")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    feeds = {"a": RNG.standard_normal((rows, 64), np.float32)}
    np.testing.assert_allclose(runtime.compile(m).run(feeds)[0], ort_session(m).run(None, feeds)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cpu", [c for c in CPU_PATHS if CPU_PATHS[c]])
@pytest.mark.parametrize("constant", [False, True], ids=["b_input", "b_constant"])
@pytest.mark.parametrize("a_shape,b_shape", [((150, 70), (70, 300)), ((1, 48), (48, 150)), ((2, 5, 16), (1, 16, 16))])
def test_override_paths_match_onnxruntime(a_shape, b_shape, constant, cpu, monkeypatch):
    """The same kernels compiled for AVX2 (znver3) and for baseline x86-64 (no FMA)."""
    monkeypatch.setenv("XPUC_CPU", CPU_PATHS[cpu])
    assert host_tiling().vector_width == {"avx2": 8, "generic": 4}[cpu]
    test_matmul_matches_onnxruntime(a_shape, b_shape, constant, None)
