"""Fuse Hugging Face's rotary position embedding into ONNX ``RotaryEmbedding`` (opset 23).

HF writes ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x[..., h:], x[..., :h])``
and ``cos = cat(freqs, freqs).cos()`` broadcast over heads as ``[B, 1, S, D]``. ONNX's op
takes ``x`` as ``[B, H, S, D]`` and caches of the *half* dim, ``[B, S, D/2]``; onnxruntime
does not broadcast their batch, so the caches are materialised at the graph's batch size.
Partial rotary (Phi: only the first ``r`` of ``D`` channels rotate, the rest are concatenated
back untouched) becomes one op with ``rotary_embedding_dim = r``.

Only constant caches are fused (static shapes fold them; the pass declares that it needs them): the half-cache rewrite is exact
only when both halves of cos/sin are equal, which is checked on the numbers.
"""

from __future__ import annotations

import numpy as np

from ...graph import Graph, Node
from ..manager import STATIC_SHAPES, graph_pass
from .pattern import operands, private, producer_of, replace_with, rewrite


@graph_pass("fuse-rotary-embedding", requires=(STATIC_SHAPES,))
def fuse_rotary_embedding(graph: Graph) -> bool:
    caches: dict[tuple, str] = {}  # q and k of a layer (and all layers) share one half cache
    return rewrite(graph, [lambda g, node: _fuse(g, node, caches)])


def _fuse(graph: Graph, add: Node, caches: dict[tuple, str]) -> bool:
    if add.op_type != "Add" or add.domain:
        return False
    for a, b in operands(add):
        match = _match(graph, a, b)
        if match is None:
            continue
        x, cos, sin, nodes = match
        root, rotated = add, x
        whole = _partial_whole(graph, add, x)
        if whole is not None:  # Phi: rotate the first r channels of the whole head, pass the rest
            root, rotated, extra = whole
            nodes += extra
        shape = graph.type_of(rotated).shape
        rot_dim = graph.type_of(x).shape[-1]
        if not private(graph, nodes, root):
            return False
        key = (cos, sin, shape[0], rot_dim)
        if key not in caches:
            halves = [_half_cache(graph, c, shape, rot_dim) for c in (cos, sin)]
            if any(h is None for h in halves):
                return False
            caches[key] = tuple(graph.add_constant(h, "rotary_cache") for h in halves)
        attrs = {"interleaved": 0}
        if rot_dim != shape[-1]:
            attrs["rotary_embedding_dim"] = rot_dim
        replace_with(graph, [root, *nodes], "RotaryEmbedding", [rotated, *caches[key]], attrs, root=root)
        return True
    return False


def _match(graph: Graph, plain: str, rotated: str) -> tuple[str, str, str, list[Node]] | None:
    """(x, cos, sin, ops) for ``plain = x * cos`` and ``rotated = rotate_half(x) * sin``."""
    mul_x, mul_r = producer_of(graph, plain, "Mul"), producer_of(graph, rotated, "Mul")
    if mul_x is None or mul_r is None:
        return None
    for half, sin in operands(mul_r):
        x, half_ops = _rotate_half(graph, half)
        if x is None or not _static_rank4(graph, x):
            continue
        for x2, cos in operands(mul_x):
            if x2 == x and graph.type_of(mul_x.outputs[0]).shape == graph.type_of(x).shape == \
                    graph.type_of(mul_r.outputs[0]).shape:
                return x, cos, sin, [mul_x, mul_r, *half_ops]
    return None


def _rotate_half(graph: Graph, value: str) -> tuple[str | None, list[Node]]:
    """x and the ops of ``value = Concat(Neg(x[..., h:]), x[..., :h])`` with 2h = x's last dim."""
    concat = producer_of(graph, value, "Concat")
    if concat is None or len(concat.inputs) != 2 or not _last_axis(graph, value, concat.attr("axis")):
        return None, []
    neg = producer_of(graph, concat.inputs[0], "Neg")
    high = neg and producer_of(graph, neg.inputs[0], "Slice")
    low = producer_of(graph, concat.inputs[1], "Slice")
    if high is None or low is None or high.inputs[0] != low.inputs[0]:
        return None, []
    x = low.inputs[0]
    dim = graph.type_of(x).shape[-1] if graph.type_of(x).shape else None
    if not isinstance(dim, int) or dim % 2 or _slice_range(graph, low, dim) != (0, dim // 2) \
            or _slice_range(graph, high, dim) != (dim // 2, dim):
        return None, []
    return x, [concat, neg, high, low]


def _partial_whole(graph: Graph, add: Node, x: str) -> tuple[Node, str, list[Node]] | None:
    """For ``Concat(rotary(q[..., :r]), q[..., r:])``: (the Concat, q, the ops around the rotary)."""
    readers = graph.consumers(add.outputs[0])
    cut = producer_of(graph, x, "Slice", single_use=False)
    if len(readers) != 1 or cut is None:
        return None
    concat = readers[0][0]
    q = cut.inputs[0]
    dim = graph.type_of(q).shape[-1] if graph.type_of(q).shape else None
    r = graph.type_of(x).shape[-1]
    if concat.op_type != "Concat" or concat.domain or concat.inputs[0] != add.outputs[0] or len(concat.inputs) != 2 \
            or not isinstance(dim, int) or not _last_axis(graph, concat.outputs[0], concat.attr("axis")) \
            or _slice_range(graph, cut, dim) != (0, r):
        return None
    rest = producer_of(graph, concat.inputs[1], "Slice")
    if rest is None or rest.inputs[0] != q or _slice_range(graph, rest, dim) != (r, dim):
        return None
    return concat, q, [add, cut, rest]


def _half_cache(graph: Graph, cache: str, x_shape: tuple, rot_dim: int) -> np.ndarray | None:
    """The ``[B, S, rot_dim/2]`` cache ONNX wants from HF's ``[B|1, 1, S, rot_dim]`` one, if equivalent."""
    data = graph.const_data(cache)
    batch, _, seq, _ = x_shape
    if data is None or data.ndim > 4:
        return None
    data = data.reshape((1,) * (4 - data.ndim) + data.shape)
    if data.shape[1] != 1 or data.shape[0] not in (1, batch) or data.shape[2:] != (seq, rot_dim):
        return None
    half = rot_dim // 2
    if not np.array_equal(data[..., :half], data[..., half:]):
        return None
    return np.ascontiguousarray(np.broadcast_to(data[:, 0, :, :half], (batch, seq, half)))


def _slice_range(graph: Graph, node: Node, dim: int) -> tuple[int, int] | None:
    """(start, stop) of a step-1 Slice along the last axis only, clamped to ``dim``, else None."""
    args = [graph.const_data(v) if v else None for v in node.inputs[1:5]] + [None] * 4
    starts, ends, axes, steps = args[:4]
    rank = len(graph.type_of(node.inputs[0]).shape)
    if starts is None or ends is None or starts.size != 1 or axes is None or axes.size != 1 \
            or int(axes.reshape(-1)[0]) % rank != rank - 1 or steps is not None and int(steps.reshape(-1)[0]) != 1:
        return None
    return tuple(int(slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])).indices(dim)[i]) for i in (0, 1))


def _last_axis(graph: Graph, value: str, axis: int | None) -> bool:
    shape = graph.type_of(value).shape
    return shape is not None and axis is not None and axis % len(shape) == len(shape) - 1


def _static_rank4(graph: Graph, value: str) -> bool:
    t = graph.type_of(value)
    return t.is_static and len(t.shape) == 4
