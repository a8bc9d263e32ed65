"""runtime.backend implements onnx.backend.base.Backend: a smoke run over onnx node test cases."""

from __future__ import annotations

import numpy as np
import pytest

import runtime.backend as backend
from conformance_cases import node_cases

CASES = {"test_add_bcast", "test_relu", "test_matmul_3d", "test_gemm_default_no_bias", "test_softmax_axis_0",
         "test_transpose_all_permutations_0", "test_concat_2d_axis_0", "test_where_example", "test_gather_0",
         "test_layer_normalization_2d_axis0", "test_rms_normalization_2d_axis0", "test_tril",
         "test_split_equal_parts_1d_opset18", "test_maxpool_2d_default", "test_conv_with_strides_padding",
         "test_averagepool_2d_pads", "test_attention_4d", "test_rotary_embedding"}
SELECTED = [c for c in node_cases() if c.name in CASES]


def test_every_selected_case_exists():
    assert {c.name for c in SELECTED} == CASES


@pytest.mark.parametrize("case", SELECTED, ids=lambda c: c.name)
def test_node_case(case, tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path))
    inputs, expected = case.data_sets[0]
    outputs = backend.run_model(case.model, inputs)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_device_support():
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_run_node():
    from onnx import helper
    node = helper.make_node("Add", ["a", "b"], ["c"])
    a, b = np.ones((2, 3), np.float32), np.arange(3, dtype=np.float32)
    c, = backend.run_node(node, [a, b])
    np.testing.assert_array_equal(c, a + b)
