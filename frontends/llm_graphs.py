"""A decoder's graphs at the shapes serving needs: ``batch`` x ``seq`` new tokens after a KV
cache of ``past`` tokens, weightless, optimized (what ``backends.llm.analysis`` schedules).

The model is a bundled preset or config.json (``frontends.hf``) or an ONNX decoder, exported
with its own ``past_key_values.*`` cache inputs (bound at ``past``) or without (then every
fused Attention gains ONNX's ``past_key``/``past_value`` inputs, :func:`with_kv_cache`).
"""

from __future__ import annotations

import functools

from ir.graph import Graph
from ir.passes import optimize
from ir.passes.decode import CACHE_INPUT_PREFIX, DecodeError, token_input
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

from . import hf
from . import onnx as onnx_frontend

GRAPH_DTYPE = {"fp16": "float16", "bf16": "bfloat16"}
"""Precisions a config is built in as its element type (then costed natively, as each vendor
runs 16-bit models); every other precision is the cost model's policy over the model's own graph."""


def policy_of(precision: str) -> str:
    """The precision policy (``backends.precision``) that costs a graph built for ``precision``."""
    return "native" if precision in GRAPH_DTYPE else precision


@functools.lru_cache(maxsize=128)
def graph(model: str, precision: str, batch: int, seq: int, past: int) -> Graph:
    """The model's optimized graph for ``batch`` x ``seq`` new tokens after a KV cache of ``past`` tokens."""
    if hf.recognizes(model):
        g = hf.load(model, input_shapes={"input_ids": f"{batch}x{seq}"}, dtype=GRAPH_DTYPE.get(precision))
        return optimize(with_kv_cache(g, past) if past else g)
    g = onnx_frontend.load(model, input_shapes={"input_ids": (batch, seq)}, weights=False)
    cached = [n for n in g.inputs if n.startswith(CACHE_INPUT_PREFIX)]
    if cached:  # an export with a cache reads its own: bind it at the past length
        shapes = {}
        for name in cached:
            shape = g.type_of(name).shape
            if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])):
                raise DecodeError(f"{model}: cache input {name} is {g.type_of(name)}, not "
                                  "[batch, kv_heads, past, head_dim]")
            shapes[name] = (batch, shape[1], past, shape[3])
        onnx_frontend.bind_input_shapes(g, shapes)
        return optimize(infer_shapes(g))
    token_input(g)
    g = optimize(g)
    return optimize(with_kv_cache(g, past)) if past else g


def with_kv_cache(g: Graph, past: int) -> Graph:
    """Every Attention also reads a past key and value cache of ``past`` tokens (graph inputs in
    the layout ONNX's Attention takes: batch x kv heads x past x head dim).

    Not ``ir.passes.DecodeStep``: that pass also returns the whole present cache (past + new
    K and V as graph outputs, the copy a cache without in-place updates makes), so its step
    costs the writing of the cache each token, which a serving engine's paged cache does not."""
    for node in [n for n in g.nodes if n.op_type == "Attention"]:
        k = g.values[node.inputs[1]].type
        if k.rank == 4:  # [batch, kv heads, seq, head dim]
            batch, heads, _, size = k.shape
        else:            # [batch, seq, kv heads x head dim]
            (batch, _, width), heads = k.shape, node.attrs["kv_num_heads"]
            size = width // heads
        for index, role in ((4, "past_key"), (5, "past_value")):
            name = g.fresh_name(f"{node.name}.{role}")
            g.add_input(name, TensorType(k.dtype, (batch, heads, past, size)))
            g.set_input(node, index, name)
    return infer_shapes(g)
