"""Synthetic Llama-architecture ONNX graphs of any size, decomposed the way exporters emit them.

Real 70B checkpoints cannot be downloaded or held in memory here, yet the compiler has to
import, optimize and schedule graphs of that shape. ``llama_onnx`` writes such a graph with
``onnx.helper``: RMSNorm as Pow/ReduceMean/Add/Sqrt/Div, rotary embedding with a
Slice/Neg/Concat ``rotate_half``, grouped-query causal attention with a repeat_kv
Unsqueeze/Expand/Reshape, and a Sigmoid*Mul*Mul SwiGLU MLP. Weights are either random
(small configs, so the graph can be run by onnxruntime) or external data that need not exist,
for ``frontends.onnx.load(..., weights=False)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 23


@dataclass(frozen=True)
class LlamaConfig:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int | None = None
    rope_theta: float = 500000.0
    eps: float = 1e-5

    @property
    def dim(self) -> int:
        """Size of one attention head."""
        return self.head_dim or self.hidden // self.heads

    def with_layers(self, layers: int) -> "LlamaConfig":
        return LlamaConfig(layers, self.hidden, self.heads, self.kv_heads, self.intermediate, self.vocab,
                           self.head_dim, self.rope_theta, self.eps)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every per-layer projection, stored as MatMul right-hand sides."""
        q, kv = self.heads * self.dim, self.kv_heads * self.dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    def linear_parameters(self) -> int:
        """Parameters that multiply every token: all projections and the (untied) lm_head."""
        per_layer = sum(i * o for i, o in self.linear_shapes().values())
        return self.layers * per_layer + self.hidden * self.vocab

    def parameters(self) -> int:
        """All weights: linear layers, the embedding table and the RMSNorm scales."""
        return self.linear_parameters() + self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden


LLAMA3_70B = LlamaConfig(layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672, vocab=128256)
"""Meta Llama 3 70B (head dim 128, rope theta 500000)."""

TINY = LlamaConfig(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=256)
"""Small enough to carry random weights and run in onnxruntime."""


def llama_onnx(config: LlamaConfig = LLAMA3_70B, *, batch: int | str = "batch", seq: int | str = "seq",
               external_data: str | None = "weights.bin", seed: int = 0) -> onnx.ModelProto:
    """A causal-LM graph ``input_ids[batch, seq] -> logits[batch, seq, vocab]`` with fp16 weights.

    external_data: file name every weight claims to live in (nothing is written), or None to
        embed seeded random weights (only sensible for small configs).
    """
    return _Builder(config, external_data, seed).model(batch, seq)


class _Builder:
    def __init__(self, config: LlamaConfig, external_data: str | None, seed: int):
        self.c = config
        self.external_data = external_data
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.offset = 0

    # ------------------------------------------------------------------ helpers
    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """Append a node with one output named after the node; returns the output."""
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def const(self, name: str, value) -> str:
        """A small constant as a Constant node, as exporters emit for scalars and shape pieces."""
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(np.asarray(value), name)))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.02, ones: bool = False) -> str:
        if self.external_data is None:
            data = np.ones(shape) if ones else self.rng.standard_normal(shape) * scale
            self.initializers.append(numpy_helper.from_array(data.astype(np.float16), name))
            return name
        t = TensorProto(name=name, data_type=TensorProto.FLOAT16, dims=shape, data_location=TensorProto.EXTERNAL)
        nbytes = math.prod(shape) * 2
        for key, value in (("location", self.external_data), ("offset", self.offset), ("length", nbytes)):
            t.external_data.add(key=key, value=str(value))
        self.offset += nbytes
        self.initializers.append(t)
        return name

    # -------------------------------------------------------------- components
    def rms_norm(self, x: str, name: str) -> str:
        """x / sqrt(mean(x^2) + eps) * w, computed in fp32 as HF does."""
        xf = self.op("Cast", [x], f"{name}.cast_in", to=TensorProto.FLOAT)
        sq = self.op("Pow", [xf, self.two], f"{name}.pow")
        mean = self.op("ReduceMean", [sq, self.last_axis], f"{name}.mean", keepdims=1)
        var = self.op("Add", [mean, self.eps], f"{name}.add_eps")
        rms = self.op("Sqrt", [var], f"{name}.sqrt")
        normed = self.op("Div", [xf, rms], f"{name}.div")
        back = self.op("Cast", [normed], f"{name}.cast_out", to=TensorProto.FLOAT16)
        return self.op("Mul", [self.weight(f"{name}.weight", (self.c.hidden,), ones=True), back], f"{name}.mul")

    def linear(self, x: str, name: str, shape: tuple[int, int]) -> str:
        return self.op("MatMul", [x, self.weight(f"{name}.weight", shape)], name)

    def split_heads(self, x: str, heads: int, name: str) -> str:
        """[b, s, heads*d] -> [b, heads, s, d]."""
        shape = self.const(f"{name}.shape", np.array([0, 0, heads, self.c.dim], np.int64))
        r = self.op("Reshape", [x, shape], f"{name}.reshape")
        return self.op("Transpose", [r], f"{name}.transpose", perm=[0, 2, 1, 3])

    def rotary(self, x: str, name: str) -> str:
        """x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x[..., d/2:], x[..., :d/2])."""
        half = self.c.dim // 2
        lo = self.op("Slice", [x, self.zero1, self.const(f"{name}.half", np.array([half], np.int64)),
                               self.last_axis], f"{name}.x1")
        hi = self.op("Slice", [x, f"{name}.half", self.const(f"{name}.end", np.array([2**62], np.int64)),
                               self.last_axis], f"{name}.x2")
        rotated = self.op("Concat", [self.op("Neg", [hi], f"{name}.neg"), lo], f"{name}.rotate_half", axis=-1)
        return self.op("Add", [self.op("Mul", [x, self.cos], f"{name}.mul_cos"),
                               self.op("Mul", [rotated, self.sin], f"{name}.mul_sin")], f"{name}.embed")

    def repeat_kv(self, x: str, name: str) -> str:
        """[b, kv, s, d] -> [b, heads, s, d] by Unsqueeze/Expand/Reshape, shapes computed at run time."""
        c = self.c
        shape = self.op("Shape", [x], f"{name}.shape")
        b = self.op("Slice", [shape, self.zero1, self.one1], f"{name}.b")
        s = self.op("Slice", [shape, self.const(f"{name}.two", np.array([2], np.int64)),
                              self.const(f"{name}.three", np.array([3], np.int64))], f"{name}.s")
        kv = self.const(f"{name}.kv", np.array([c.kv_heads], np.int64))
        rep = self.const(f"{name}.rep", np.array([c.heads // c.kv_heads], np.int64))
        heads = self.const(f"{name}.heads", np.array([c.heads], np.int64))
        d = self.const(f"{name}.d", np.array([c.dim], np.int64))
        expanded = self.op("Expand", [self.op("Unsqueeze", [x, self.const(f"{name}.axis", np.array([2], np.int64))],
                                              f"{name}.unsqueeze"),
                                      self.op("Concat", [b, kv, rep, s, d], f"{name}.expand_shape", axis=0)],
                           f"{name}.expand")
        return self.op("Reshape", [expanded, self.op("Concat", [b, heads, s, d], f"{name}.reshape_shape", axis=0)],
                       f"{name}.reshape")

    def attention(self, x: str, name: str) -> str:
        c, shapes = self.c, self.c.linear_shapes()
        q = self.rotary(self.split_heads(self.linear(x, f"{name}.q_proj", shapes["q_proj"]), c.heads, f"{name}.q"),
                        f"{name}.q_rot")
        k = self.rotary(self.split_heads(self.linear(x, f"{name}.k_proj", shapes["k_proj"]), c.kv_heads,
                                         f"{name}.k"), f"{name}.k_rot")
        v = self.split_heads(self.linear(x, f"{name}.v_proj", shapes["v_proj"]), c.kv_heads, f"{name}.v")
        k, v = self.repeat_kv(k, f"{name}.k_rep"), self.repeat_kv(v, f"{name}.v_rep")
        kt = self.op("Transpose", [k], f"{name}.k_t", perm=[0, 1, 3, 2])
        scores = self.op("Mul", [self.op("MatMul", [q, kt], f"{name}.qk"), self.scale], f"{name}.scaled")
        probs = self.op("Softmax", [self.op("Add", [scores, self.mask], f"{name}.masked")], f"{name}.softmax",
                        axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v], f"{name}.pv")], f"{name}.ctx_t", perm=[0, 2, 1, 3])
        merged = self.op("Reshape", [ctx, self.const(f"{name}.merge", np.array([0, 0, c.heads * c.dim], np.int64))],
                         f"{name}.merge_heads")
        return self.linear(merged, f"{name}.o_proj", shapes["o_proj"])

    def mlp(self, x: str, name: str) -> str:
        shapes = self.c.linear_shapes()
        gate = self.linear(x, f"{name}.gate_proj", shapes["gate_proj"])
        silu = self.op("Mul", [gate, self.op("Sigmoid", [gate], f"{name}.sigmoid")], f"{name}.silu")
        act = self.op("Mul", [silu, self.linear(x, f"{name}.up_proj", shapes["up_proj"])], f"{name}.act")
        return self.linear(act, f"{name}.down_proj", shapes["down_proj"])

    def positions(self, ids: str) -> None:
        """cos/sin tables [seq, d] and the additive causal mask [seq, seq], computed from seq."""
        c = self.c
        seq = self.op("Gather", [self.op("Shape", [ids], "seq_shape"), self.const("seq_axis", np.array(1, np.int64))],
                      "seq_len", axis=0)
        pos = self.op("Cast", [self.op("Range", [self.const("pos_start", np.array(0, np.int64)), seq,
                                                 self.const("pos_step", np.array(1, np.int64))], "positions")],
                      "positions_f", to=TensorProto.FLOAT)
        inv_freq = 1.0 / c.rope_theta ** (np.arange(0, c.dim, 2, dtype=np.float32) / c.dim)
        freqs = self.op("Mul", [self.op("Unsqueeze", [pos, self.one1], "positions_col"),
                                self.const("inv_freq", inv_freq.astype(np.float32))], "freqs")
        emb = self.op("Concat", [freqs, freqs], "rope_emb", axis=-1)
        self.cos = self.op("Cast", [self.op("Cos", [emb], "rope_cos_f")], "rope_cos", to=TensorProto.FLOAT16)
        self.sin = self.op("Cast", [self.op("Sin", [emb], "rope_sin_f")], "rope_sin", to=TensorProto.FLOAT16)
        square = self.op("Concat", [self.op("Unsqueeze", [seq, self.zero1], "seq_1d")] * 2, "mask_shape", axis=0)
        ones = self.op("ConstantOfShape", [square], "mask_ones", value=numpy_helper.from_array(
            np.array([1], np.float16), "one"))
        lower = self.op("Trilu", [ones], "mask_lower", upper=0)
        self.mask = self.op("Where", [self.op("Equal", [lower, self.const("zero_h", np.array(0, np.float16))],
                                              "mask_hidden"),
                                      self.const("neg_inf", np.array(-np.inf, np.float16)),
                                      self.const("zero_mask", np.array(0, np.float16))], "causal_mask")

    def model(self, batch: int | str, seq: int | str) -> onnx.ModelProto:
        c = self.c
        self.two = self.const("two", np.array(2.0, np.float32))
        self.eps = self.const("eps", np.array(c.eps, np.float32))
        self.last_axis = self.const("last_axis", np.array([-1], np.int64))
        self.zero1 = self.const("zero1", np.array([0], np.int64))
        self.one1 = self.const("one1", np.array([1], np.int64))
        self.scale = self.const("attn_scale", np.array(1 / math.sqrt(c.dim), np.float16))
        self.positions("input_ids")
        h = self.op("Gather", [self.weight("embed_tokens.weight", (c.vocab, c.hidden)), "input_ids"], "embed")
        for i in range(c.layers):
            p = f"layers.{i}"
            h = self.op("Add", [h, self.attention(self.rms_norm(h, f"{p}.input_layernorm"), f"{p}.self_attn")],
                        f"{p}.attn_residual")
            h = self.op("Add", [h, self.mlp(self.rms_norm(h, f"{p}.post_attention_layernorm"), f"{p}.mlp")],
                        f"{p}.mlp_residual")
        logits = self.linear(self.rms_norm(h, "norm"), "lm_head", (c.hidden, c.vocab))
        graph = helper.make_graph(
            self.nodes, "llama", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq])],
            [helper.make_tensor_value_info(logits, TensorProto.FLOAT16, [batch, seq, c.vocab])],
            initializer=self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="xpuc.synthetic", ir_version=10)
