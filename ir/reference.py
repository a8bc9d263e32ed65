"""Compile-time evaluation of ONNX ops with onnx's reference implementation.

Constant folding and shape inference run real ops on known inputs here, rather than in a
hand-written interpreter. onnxruntime would be faster but is only a test oracle, not a
runtime dependency. ``OVERRIDES`` replaces reference kernels that are broken for inputs
real models contain; each says why.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .export import attribute_proto
from .graph import Node


class GatherElements(OpRun):
    """onnx 1.23's GatherElements uses ``np.choose``, which takes at most 64 choices, and its
    fallback reshapes wrongly: BERT's token-type lookup over 128 positions breaks it.
    Off the gathered axis, the output has the indices' extent (never broadcast)."""

    op_domain = ""

    def _run(self, data, indices, axis=None):
        axis = 0 if axis is None else axis
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        # indices may be shorter than data off the axis; take_along_axis would broadcast them
        data = data[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(indices.shape))]
        return (np.take_along_axis(data, indices, axis=axis),)


class GlobalMaxPool(OpRun):
    """onnx 1.23's GlobalMaxPool reduces axes (r-2, r-1) counted from r-2, so any input that is
    not 4-D (N, C, W) or (N, C, D, H, W) loses the wrong axes."""

    op_domain = ""

    def _run(self, x):
        return (x.max(axis=tuple(range(2, x.ndim)), keepdims=True),)


class LRN(OpRun):
    """onnx 1.23's LRN loops over the batch dim where it means the channels, so it fills only
    the first N channels' sums (the rest stay 0), and it refuses anything but 4-D input."""

    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        squares = np.square(x.astype(np.float64))
        before, after = (size - 1) // 2, -(-(size - 1) // 2)
        total = np.stack([squares[:, max(0, c - before):c + after + 1].sum(1) for c in range(x.shape[1])], 1)
        return ((x / (bias + alpha / size * total) ** beta).astype(x.dtype),)


def _correctly_rounded(op_type: str, fn) -> type[OpRun]:
    """A unary math op computed in float64 and rounded once, so folded constants (rotary
    cos/sin tables, say) are correctly rounded: numpy's float32 kernels are off by an ulp."""

    def _run(self, x):
        return (fn(x.astype(np.float64)).astype(x.dtype),)

    return type(op_type, (OpRun,), {"op_domain": "", "_run": _run})


CORRECTLY_ROUNDED = {"Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Exp": np.exp, "Log": np.log, "Tanh": np.tanh,
                     "Sqrt": np.sqrt, "Reciprocal": np.reciprocal}

OVERRIDES = [GatherElements, GlobalMaxPool, LRN] + [_correctly_rounded(op, fn) for op, fn in CORRECTLY_ROUNDED.items()]


def run_nodes(nodes: list[Node], feeds: dict[str, np.ndarray], wanted: list[str], opset: int) -> dict[str, np.ndarray]:
    """Values ``wanted`` computed by ``nodes`` (in order) from ``feeds``."""
    protos = []
    for node in nodes:
        proto = helper.make_node(node.op_type, node.inputs, node.outputs, domain=node.domain)
        proto.attribute.extend(attribute_proto(node, k, v, opset) for k, v in node.attrs.items())
        protos.append(proto)
    graph = helper.make_graph(
        protos, "evaluate",
        [helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for name, a in feeds.items()],
        [helper.make_value_info(name, onnx.TypeProto()) for name in wanted])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    results = ReferenceEvaluator(model, new_ops=OVERRIDES).run(wanted, feeds)
    return {name: np.asarray(r) for name, r in zip(wanted, results)}
