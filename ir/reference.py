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


class MaxPool(OpRun):
    """onnx 1.23's MaxPool gets the output size wrong with end padding and its stride-1 path
    wrong in 2-D, and computes indices wrongly; this follows the ONNX definition: windows
    over the input padded with -inf, the first maximum of each, and (for ``Indices``) its
    flat position in the unpadded input, spatial dims row-major (``storage_order`` 1:
    column-major)."""

    op_domain = ""

    def _run(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None, pads=None,
             storage_order=None, strides=None):
        spatial, n = x.shape[2:], len(kernel_shape)
        strides, dilations = strides or [1] * n, dilations or [1] * n
        spans = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilations)]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = [max(0, (-(-size // s) - 1) * s + span - size) for size, s, span in zip(spatial, strides, spans)]
            begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
            end = [t - b for t, b in zip(total, begin)]
        else:
            pads = pads if pads and auto_pad in (None, "NOTSET") else [0] * 2 * n
            begin, end = pads[:n], pads[n:]
        out = []
        for size, s, span, b, e in zip(spatial, strides, spans, begin, end):
            extent = size + b + e - span
            o = (-(-extent // s) if ceil_mode else extent // s) + 1
            o = o - 1 if ceil_mode and (o - 1) * s >= size + b else o  # a window must start inside
            out.append(-(-size // s) if auto_pad in ("SAME_UPPER", "SAME_LOWER") else o)
        taps = [np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - b  # input position per (out, tap)
                for o, s, k, d, b in zip(out, strides, kernel_shape, dilations, begin)]
        grids = np.meshgrid(*[t.reshape(-1) for t in taps], indexing="ij")  # every (out, tap) combination
        inside = np.logical_and.reduce([(g >= 0) & (g < size) for g, size in zip(grids, spatial)])
        gathered = x[(..., *[np.clip(g, 0, size - 1) for g, size in zip(grids, spatial)])]
        lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        values = np.where(inside, gathered, lowest).reshape(x.shape[:2] + tuple(v for o, k in zip(out, kernel_shape)
                                                                                for v in (o, k)))
        windows = np.moveaxis(values, [3 + 2 * i for i in range(n)], range(-n, 0)).reshape(
            x.shape[:2] + tuple(out) + (-1,))
        best = windows.argmax(-1)
        y = np.take_along_axis(windows, best[..., None], -1)[..., 0]
        if len(self.output) < 2:
            return (y,)
        positions = np.unravel_index(best, tuple(kernel_shape))
        coords = [np.arange(o).reshape((1, 1) + tuple(o if j == i else 1 for j in range(n))) * s + p * d - b
                  for i, (o, s, d, b, p) in enumerate(zip(out, strides, dilations, begin, positions))]
        order = range(n) if storage_order else reversed(range(n))
        flat, step = 0, 1
        for i in order:
            flat, step = flat + coords[i] * step, step * spatial[i]
        plane = (np.arange(x.shape[0])[:, None] * x.shape[1] + np.arange(x.shape[1])[None, :]) * step
        return y, (flat + plane.reshape(plane.shape + (1,) * n)).astype(np.int64)


def _correctly_rounded(op_type: str, fn) -> type[OpRun]:
    """A unary math op computed in float64 and rounded once, so folded constants (rotary
    cos/sin tables, say) are correctly rounded: numpy's float32 kernels are off by an ulp."""

    def _run(self, x):
        return (fn(x.astype(np.float64)).astype(x.dtype),)

    return type(op_type, (OpRun,), {"op_domain": "", "_run": _run})


CORRECTLY_ROUNDED = {"Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Exp": np.exp, "Log": np.log, "Tanh": np.tanh,
                     "Sqrt": np.sqrt, "Reciprocal": np.reciprocal}

OVERRIDES = [GatherElements, GlobalMaxPool, LRN, MaxPool] + [
    _correctly_rounded(op, fn) for op, fn in CORRECTLY_ROUNDED.items()]


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
