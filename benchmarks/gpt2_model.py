"""A GPT-2-small-shaped causal LM as an ONNX graph with random fp32 weights, built with
onnx.helper (no torch, no downloads), in the op vocabulary a legacy HF export uses:
LayerNormalization, MatMul + Add, Split, Reshape/Transpose heads, a causal Where mask,
Softmax, tanh-GELU spelled out, and a tied LM head.

``gpt2_onnx(layers=12, hidden=768, heads=12, vocab=50257, seq=128)``: input_ids[1, seq]
(int64) -> logits[1, seq, vocab].
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, hidden: int, heads: int, seq: int, seed: int):
        self.hidden, self.heads, self.seq = hidden, heads, seq
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def tensor(self, name: str, value) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.02) -> str:
        return self.tensor(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def layer_norm(self, x: str, name: str) -> str:
        h = self.hidden
        return self.op("LayerNormalization", [x, self.tensor(f"{name}.weight", np.ones(h, np.float32)),
                                              self.tensor(f"{name}.bias", np.zeros(h, np.float32))],
                       name, axis=-1, epsilon=1e-5)

    def linear(self, x: str, name: str, n_in: int, n_out: int) -> str:
        y = self.op("MatMul", [x, self.weight(f"{name}.weight", (n_in, n_out))], f"{name}.matmul")
        return self.op("Add", [y, self.tensor(f"{name}.bias", np.zeros(n_out, np.float32))], name)

    def heads_of(self, x: str, name: str) -> str:
        split = self.op("Reshape", [x, self.head_shape], f"{name}.reshape")
        return self.op("Transpose", [split], name, perm=[0, 2, 1, 3])

    def attention(self, x: str, name: str) -> str:
        h = self.hidden
        qkv = self.linear(x, f"{name}.c_attn", h, 3 * h)
        self.nodes.append(helper.make_node("Split", [qkv, self.split_sizes], [f"{name}.{p}" for p in "qkv"],
                                           name=f"{name}.split", axis=-1))
        q, k, v = (self.heads_of(f"{name}.{p}", f"{name}.{p}_heads") for p in "qkv")
        kt = self.op("Transpose", [k], f"{name}.kt", perm=[0, 1, 3, 2])
        scores = self.op("MatMul", [q, kt], f"{name}.scores")
        scaled = self.op("Div", [scores, self.scale], f"{name}.scaled")
        masked = self.op("Where", [self.causal, scaled, self.neg_inf], f"{name}.masked")
        probs = self.op("Softmax", [masked], f"{name}.softmax", axis=-1)
        ctx = self.op("MatMul", [probs, v], f"{name}.context")
        merged = self.op("Transpose", [ctx], f"{name}.merge", perm=[0, 2, 1, 3])
        flat = self.op("Reshape", [merged, self.hidden_shape], f"{name}.flat")
        return self.linear(flat, f"{name}.c_proj", h, h)

    def mlp(self, x: str, name: str) -> str:
        h = self.hidden
        up = self.linear(x, f"{name}.c_fc", h, 4 * h)
        cube = self.op("Pow", [up, self.three], f"{name}.cube")
        inner = self.op("Add", [up, self.op("Mul", [cube, self.gelu_c], f"{name}.cube_c")], f"{name}.inner")
        t = self.op("Tanh", [self.op("Mul", [inner, self.sqrt_2_pi], f"{name}.scale_in")], f"{name}.tanh")
        gate = self.op("Mul", [self.op("Add", [t, self.one], f"{name}.one_plus"), self.half], f"{name}.gate")
        return self.linear(self.op("Mul", [up, gate], f"{name}.gelu"), f"{name}.c_proj", 4 * h, h)

    def model(self, layers: int, vocab: int, positions: int) -> onnx.ModelProto:
        h, s, d = self.hidden, self.seq, self.hidden // self.heads
        f32 = lambda v: np.array(v, np.float32)  # noqa: E731
        self.head_shape = self.tensor("head_shape", np.array([1, s, self.heads, d], np.int64))
        self.hidden_shape = self.tensor("hidden_shape", np.array([1, s, h], np.int64))
        self.split_sizes = self.tensor("split_sizes", np.array([h, h, h], np.int64))
        self.causal = self.tensor("causal_mask", np.tril(np.ones((s, s), bool)))
        self.scale, self.neg_inf = self.tensor("scale", f32(math.sqrt(d))), self.tensor("neg_inf", f32(-3.4e38))
        self.three, self.gelu_c = self.tensor("three", f32(3.0)), self.tensor("gelu_c", f32(0.044715))
        self.sqrt_2_pi, self.one = self.tensor("sqrt_2_pi", f32(math.sqrt(2 / math.pi))), self.tensor("one", f32(1.0))
        self.half = self.tensor("half", f32(0.5))
        wte = self.weight("wte", (vocab, h))
        tokens = self.op("Gather", [wte, "input_ids"], "embed_tokens")
        pos = self.op("Gather", [self.weight("wpe", (positions, h)),
                                 self.tensor("position_ids", np.arange(s, dtype=np.int64)[None])], "embed_positions")
        x = self.op("Add", [tokens, pos], "embed")
        for i in range(layers):
            x = self.op("Add", [x, self.attention(self.layer_norm(x, f"h{i}.ln_1"), f"h{i}.attn")], f"h{i}.res_attn")
            x = self.op("Add", [x, self.mlp(self.layer_norm(x, f"h{i}.ln_2"), f"h{i}.mlp")], f"h{i}.res_mlp")
        final = self.layer_norm(x, "ln_f")
        head = self.op("Transpose", [wte], "lm_head.weight_t", perm=[1, 0])
        self.op("MatMul", [final, head], "logits")
        graph = helper.make_graph(self.nodes, "gpt2",
                                  [helper.make_tensor_value_info("input_ids", TensorProto.INT64, (1, s))],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, (1, s, vocab))],
                                  self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def gpt2_onnx(layers: int = 12, hidden: int = 768, heads: int = 12, vocab: int = 50257, seq: int = 128,
              positions: int = 1024, seed: int = 0) -> onnx.ModelProto:
    return _Builder(hidden, heads, seq, seed).model(layers, vocab, positions)
