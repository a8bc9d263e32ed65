"""The onnx node test cases xpuc is checked against, and how one is judged.

Generating the cases runs onnx's reference ops over every case onnx ships (15-30 s), so the
cases of the ops xpuc targets are kept in the xpuc cache, once per onnx version and op
selection, and every test module reads them from there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

import runtime.backend as backend
from backends.codegen.emit import STORAGE
from runtime.cache import cache_dir

OPS = frozenset("""
    Abs Add And Attention AveragePool BatchNormalization Cast Clip Concat Constant ConstantOfShape Conv Cos
    CumSum DequantizeLinear Div Dropout DynamicQuantizeLinear Equal Erf Exp Expand Flatten Gather GatherElements
    Gelu Gemm GlobalAveragePool Greater Identity IsNaN LayerNormalization LeakyRelu Less LRN MatMul MatMulInteger
    Max MaxPool Mean Min Mul Neg Not Or Pow QuantizeLinear Range Reciprocal ReduceMax ReduceMean ReduceSum Relu
    Reshape RMSNormalization RotaryEmbedding Shape Sigmoid Sin Slice Softmax Softplus Split Sqrt Squeeze Sub Sum
    Tanh Transpose Trilu Unsqueeze Where""".split())
EXTRA_OPS = frozenset({"GatherND", "ScatterND", "Size", "TensorScatter"})
"""Ops real models leave behind (mask code of transformer exports, shape queries, KV cache updates), tested too."""
SUPPORTED_TYPES = frozenset(dtype.onnx for dtype in STORAGE)


@functools.cache
def node_cases() -> list:
    """Every case whose ops are all in OPS | EXTRA_OPS, by name."""
    ops = OPS | EXTRA_OPS
    selection = hashlib.sha256(" ".join(sorted(ops)).encode()).hexdigest()[:12]
    path = cache_dir() / f"onnx-{onnx.__version__}-node-cases-{selection}.pkl"
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        pass
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = collect_testcases()
    cases = sorted((c for c in cases if all(n.op_type in ops for n in c.model.graph.node)),
                   key=lambda c: c.name)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(cases))
        tmp.replace(path)
    return cases


@functools.cache
def _by_name() -> dict:
    return {c.name: c for c in node_cases()}


def case(name: str):
    return _by_name()[name]


def selected_cases() -> list:
    """Cases whose every op is in OPS."""
    return [c for c in node_cases() if all(n.op_type in OPS for n in c.model.graph.node)]


def extra_cases() -> list:
    """Cases of EXTRA_OPS whose other ops are in OPS."""
    return [c for c in node_cases() if any(n.op_type in EXTRA_OPS for n in c.model.graph.node)]


def unsupported_type(model: onnx.ModelProto) -> str | None:
    """The first element type (or non-tensor type) in the model that code generation lacks."""
    g = model.graph
    types = [v.type for v in (*g.input, *g.output, *g.value_info)]
    for t in types:
        if not t.HasField("tensor_type"):
            return f"{t.WhichOneof('value')} values"
    codes = [t.tensor_type.elem_type for t in types]
    codes += [t.data_type for t in g.initializer]
    for node in g.node:
        for attr in node.attribute:
            if attr.name == "to" and node.op_type == "Cast":
                codes.append(attr.i)
            elif attr.type == onnx.AttributeProto.TENSOR:
                codes.append(attr.t.data_type)
    missing = next((c for c in codes if c and c not in SUPPORTED_TYPES), None)
    return None if missing is None else onnx.TensorProto.DataType.Name(missing)


def random_dropout(c) -> bool:
    """A Dropout that training mode makes drop with a nonzero ratio: the expected outputs hold
    a mask drawn from numpy's generator, and ONNX leaves the generator to the implementation."""
    g = c.model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    fed = [i.name for i in g.input if i.name not in constants]
    for inputs, _ in c.data_sets:
        values = {**constants, **dict(zip(fed, map(_array, inputs)))}
        for node in g.node:
            ratio, training = (values.get(name) for name in [*node.input[1:3], "", ""][:2])
            if node.op_type == "Dropout" and training is not None and training.any() \
                    and (ratio is None or float(ratio) > 0):
                return True
    return False


def unsupported_reason(c) -> str | None:
    """Why a case cannot be judged, read from the case before it runs (so no failure hides here)."""
    reason = unsupported_type(c.model)
    if reason is not None:
        return f"use {reason}"
    return "random training-mode Dropout" if random_dropout(c) else None


def _array(value) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def run_case(c, **options) -> None:
    """Raise AssertionError (or any error) unless every data set matches within the case's tolerances."""
    for inputs, expected in c.data_sets:
        outputs = backend.run_model(c.model, inputs, **options)
        assert len(outputs) == len(expected), f"{len(outputs)} outputs, expected {len(expected)}"
        for got, want in zip(outputs, map(_array, expected)):
            assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
            assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
            if want.dtype.kind == "V":  # ml_dtypes types (bfloat16, float8, int4 ...): compare as float32
                got, want = got.astype(np.float32), want.astype(np.float32)
            np.testing.assert_allclose(got, want, rtol=c.rtol, atol=c.atol)


def judge(c) -> tuple[str, str | None]:
    """("passed" | "failed" | "unsupported", why) for one case."""
    reason = unsupported_reason(c)
    if reason is not None:
        return "unsupported", reason
    try:
        run_case(c)
    except Exception as exc:  # noqa: BLE001  a failing case is counted and reported, not fatal
        text = str(exc).strip().splitlines()
        return "failed", f"{type(exc).__name__}: {' '.join(text[:4])[:200]}"
    return "passed", None
