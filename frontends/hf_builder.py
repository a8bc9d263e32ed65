"""Decoder graphs from a :class:`ModelConfig`, written straight in the ops hardware sees.

No exporter decomposition to fuse back: attention is one ONNX ``Attention`` (grouped-query,
causal, 3-D ``[batch, seq, heads*dim]`` operands, optional additive mask for sliding
windows, ``softcap``, ``scale``), with its ``past_key``/``past_value`` inputs free for a
decode-step pass; norms are ``RMSNormalization`` / ``LayerNormalization``; rotary is
``RotaryEmbedding`` on cos/sin computed from the positions; the gated MLP is ``xpuc.SwiGLU``
where the gate is SiLU; routed experts are one ``xpuc.MixtureOfExperts``; Mamba's recurrence
is one ``xpuc.SelectiveScan``. So a 126-layer graph imports in well under a second.

Every op follows transformers' modeling code for the family (names of parameters and ops are
transformers' module paths), so given the same weights the logits are transformers' logits
(``scripts/check_hf_builders.py`` measures it).

Positions are ``Range(0, seq)`` of the input's sequence length, broadcast over the batch
(``position_ids``), the one place a decode step would add the past length.
"""

from __future__ import annotations

import math

import numpy as np

import ir
from ir.dtypes import DType
from ir.ops.composite import DOMAIN
from ir.types import TensorType

from .hf_config import ModelConfig
from .hf_weights import Weights

GELU_ATTRS = {"Gelu": {}, "GeluTanh": {"approximate": "tanh"}}
MOE_ACTIVATIONS = {"SiLU": "SiLU", "Gelu": "Gelu", "GeluTanh": "GeluTanh", "Relu": "Relu"}
"""Graph activations -> ``xpuc.MixtureOfExperts`` activation attribute."""


class Builder:
    def __init__(self, cfg: ModelConfig, weights: Weights, graph: ir.Graph):
        self.cfg, self.w, self.g = cfg, weights, graph
        self.dtype = weights.dtype
        self.names = cfg.family.names
        self._consts: dict[tuple, str] = {}

    # ------------------------------------------------------------- plumbing
    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, domain: str = "",
           out: str | None = None, **attrs):
        """Add an op; returns its output (or outputs). ``out`` names a single output."""
        node = self.g.add_node(op_type, inputs, [out] if out else outputs, attrs, domain=domain, name=name)
        return node.outputs[0] if outputs == 1 else node.outputs

    def const(self, value, hint: str, dtype: DType | None = None) -> str:
        """A small constant (one per distinct value); floats take the graph's dtype unless told otherwise."""
        array = np.asarray(value)
        if dtype is None and array.dtype.kind == "f":
            dtype = self.dtype
        array = array.astype(dtype.numpy) if dtype else array
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.g.add_constant(array, hint)
        return self._consts[key]

    def name(self, role: str, layer: int | None = None) -> str:
        path = self.names[role]
        return path if layer is None else f"{self.names['layer'].format(i=layer)}.{path}"

    # ----------------------------------------------------------- components
    def linear(self, x: str, role: str, layer: int | None, d_in: int, d_out: int, out: str | None = None) -> str:
        """x @ W (+ b), W stored [in, out] for MatMul; BitNet layers take ternary weights."""
        c = self.cfg
        biased = role in c.biases
        path = self.name(role, layer)
        hf_shape = (d_in, d_out) if c.family.linear_in_out else (d_out, d_in)
        if c.family.ternary and role != "lm_head":
            y = self.ternary_matmul(x, path, hf_shape)
        else:
            layout = "as_is" if c.family.linear_in_out else "transpose"
            y = self.op("MatMul", [x, self.w.tensor(f"{path}.weight", hf_shape, "linear", layout)], path,
                        out=None if biased else out)
        if biased:
            y = self.op("Add", [y, self.w.tensor(f"{path}.bias", (d_out,), "bias")], f"{path}.bias_add", out=out)
        return y

    def ternary_matmul(self, x: str, path: str, hf_shape: tuple[int, int]) -> str:
        """BitNet b1.58 (transformers' AutoBitLinear, online): weights ternary by absmean,
        ``Wq = clamp(round(W * s), -1, 1)`` with ``s = 1 / mean|W|``, stored int4 (ONNX opset
        23's narrowest integer) with ``weight_scale`` = s (derived, so not counted as a
        parameter); ``y = (x_q @ Wq) / s``. The caller
        passes ``x`` already quantized (:meth:`quantize_activations`)."""
        dense = self.w.dense(f"{path}.weight", hf_shape, "linear")
        if dense is None:
            wq = self.w.declare(f"{path}.weight", TensorType(DType.INT4, hf_shape[::-1]))
            scale = self.w.declare(f"{path}.weight_scale", TensorType(DType.FLOAT32, ()), parameter=False)
        else:
            s = np.float32(1.0) / np.maximum(np.abs(dense).mean(dtype=np.float32), np.float32(1e-5))
            ternary = np.clip(np.round(dense * s), -1, 1).T
            wq = self.w.constant(f"{path}.weight", ternary.astype(DType.INT4.numpy))
            scale = self.w.constant(f"{path}.weight_scale", np.asarray(s, np.float32), parameter=False)
        w = self.op("Cast", [wq], f"{path}.dequantize", to=self.dtype.onnx)
        y = self.op("MatMul", [x, w], path)
        return self.op("Div", [y, self.op("CastLike", [scale, y], f"{path}.scale")], f"{path}.rescale")

    def quantize_activations(self, x: str, name: str) -> str:
        """BitNet's per-token int8 absmax fake quantization (transformers' ActQuant):
        ``s = 127 / max(|x|, 1e-5)`` over the last axis; ``clamp(round(x * s), -128, 127) / s``."""
        top = self.op("ReduceMax", [self.op("Abs", [x], f"{name}.abs"), self.const(np.array([-1]), "last_axis")],
                      f"{name}.absmax", keepdims=1)
        scale = self.op("Div", [self.const(127.0, "q_max"),
                                self.op("Max", [top, self.const(1e-5, "q_floor")], f"{name}.clamp")], f"{name}.scale")
        rounded = self.op("Round", [self.op("Mul", [x, scale], f"{name}.scaled")], f"{name}.round")
        clipped = self.op("Clip", [rounded, self.const(-128.0, "q_lo"), self.const(127.0, "q_hi")], f"{name}.clip")
        return self.op("Div", [clipped, scale], f"{name}.dequantize")

    def norm(self, x: str, role: str, layer: int | None, dim: int) -> str:
        c, path = self.cfg, self.name(role, layer)
        kind = c.family.norm
        if kind == "layer":
            return self.op("LayerNormalization", [x, self.w.tensor(f"{path}.weight", (dim,), "norm"),
                                                  self.w.tensor(f"{path}.bias", (dim,), "bias")],
                           path, epsilon=c.eps, axis=-1)
        scale = self.w.tensor(f"{path}.weight", (dim,), "offset_norm" if kind == "rms_offset" else "norm")
        if kind == "rms_offset":  # Gemma: x_normed * (1 + w), the sum in float32 as transformers does
            scale = self.op("Add", [scale, self.const(1.0, "one")], f"{path}.offset")
        return self.op("RMSNormalization", [x, scale], path, epsilon=c.eps, axis=-1)

    def activation(self, x: str, name: str) -> str:
        act = self.cfg.activation
        if act == "SiLU":
            return self.op("SiLU", [x], f"{name}.act", domain=DOMAIN)
        if act in GELU_ATTRS:
            return self.op("Gelu", [x], f"{name}.act", **GELU_ATTRS[act])
        relu = self.op("Relu", [x], f"{name}.act")
        return relu if act == "Relu" else self.op("Mul", [relu, relu], f"{name}.square")

    def gated(self, gate: str, up: str, name: str) -> str:
        """act(gate) * up; one ``xpuc.SwiGLU`` when the activation is SiLU."""
        if self.cfg.activation == "SiLU":
            return self.op("SwiGLU", [gate, up], f"{name}.swiglu", domain=DOMAIN)
        return self.op("Mul", [self.activation(gate, name), up], f"{name}.gated")

    # ------------------------------------------------------------ positions
    def positions(self, ids: str) -> None:
        """position_ids [batch, seq] = 0..seq-1, rotary cos/sin and sliding-window masks from them."""
        c = self.cfg
        shape = self.op("Shape", [ids], "input_shape")
        self.seq = self.op("Gather", [shape, self.const(np.array(1), "seq_axis")], "seq_len", axis=0)
        start, step = self.const(np.array(0), "pos_start"), self.const(np.array(1), "pos_step")
        self.pos = self.op("Range", [start, self.seq, step], "positions")
        row = self.op("Unsqueeze", [self.pos, self.const(np.array([0]), "axis0")], "positions_row")
        self.position_ids = self.op("Expand", [row, shape], "position_ids")
        if c.rope is not None:
            posf = self.op("Cast", [self.position_ids], "position_ids_f", to=DType.FLOAT32.onnx)
            col = self.op("Unsqueeze", [posf, self.const(np.array([-1]), "axis_last")], "position_col")
            freqs = self.op("Mul", [col, self.const(c.rope.inv_freq, "inv_freq", DType.FLOAT32)], "rope_freqs")
            self.cos, self.sin = (self._to_dtype(self.op(f, [freqs], f"rope_{f.lower()}_f"), f"rope_{f.lower()}")
                                  for f in ("Cos", "Sin"))
        self.masks = {w: self.window_mask(w) for w in sorted({w for w in c.windows if w is not None})}

    def _to_dtype(self, x: str, name: str) -> str:
        return x if self.dtype is DType.FLOAT32 else self.op("Cast", [x], name, to=self.dtype.onnx)

    def window_mask(self, window: int) -> str:
        """Additive [seq, seq] mask hiding keys ``window`` or more positions back (transformers'
        ``kv_idx > q_idx - sliding_window``); the causal part is the Attention op's ``is_causal``."""
        rows = self.op("Unsqueeze", [self.pos, self.const(np.array([1]), "axis1")], f"window{window}.rows")
        cols = self.op("Unsqueeze", [self.pos, self.const(np.array([0]), "axis0")], f"window{window}.cols")
        back = self.op("Sub", [rows, cols], f"window{window}.distance")
        visible = self.op("Less", [back, self.const(np.array(window), f"window{window}")], f"window{window}.visible")
        return self.op("Where", [visible, self.const(0.0, "zero"), self.const(-np.inf, "minus_inf")],
                       f"window{window}.mask")

    # -------------------------------------------------------------- blocks
    def attention(self, x: str, i: int) -> str:
        c = self.cfg
        q_dim, kv_dim = c.heads * c.head_dim, c.kv_heads * c.head_dim
        if c.family.fused_qkv:
            qkv = self.linear(x, "qkv", i, c.hidden, q_dim + 2 * kv_dim)
            q, k, v = self.op("Split", [qkv, self.const(np.array([q_dim, kv_dim, kv_dim]), "qkv_split")],
                              f"{self.name('qkv', i)}.split", outputs=3, axis=-1)
        else:
            q, k, v = (self.linear(x, role, i, c.hidden, d) for role, d in (("q", q_dim), ("k", kv_dim), ("v", kv_dim)))
        prefix = self.name("o", i).rsplit(".", 1)[0]
        if c.rope is not None:
            q, k = (self.rotary(t, heads, f"{prefix}.rotary_{n}") for t, heads, n in ((q, c.heads, "q"),
                                                                                       (k, c.kv_heads, "k")))
        attrs = {"q_num_heads": c.heads, "kv_num_heads": c.kv_heads, "is_causal": 1}
        if c.attn_scale is not None:
            attrs["scale"] = c.attn_scale
        if c.attn_softcap:
            attrs["softcap"] = c.attn_softcap
        window = c.windows[i] if c.windows else None
        inputs = [q, k, v] + ([self.masks[window]] if window is not None else [])
        y = self.op("Attention", inputs, f"{prefix}.attention", **attrs)
        if c.family.ternary:
            y = self.quantize_activations(self.norm(y, "attn_sub_norm", i, q_dim), f"{prefix}.o_input")
        return self.linear(y, "o", i, q_dim, c.hidden)

    def rotary(self, x: str, heads: int, name: str) -> str:
        c = self.cfg
        attrs = {"num_heads": heads, "interleaved": int(c.rope.interleaved)}
        if c.rope.dim != c.head_dim:
            attrs["rotary_embedding_dim"] = c.rope.dim
        return self.op("RotaryEmbedding", [x, self.cos, self.sin], name, **attrs)

    def mlp(self, x: str, i: int) -> str:
        c = self.cfg
        kind = c.family.mlp
        if kind == "moe":
            path = self.name("router", i).rsplit(".", 1)[0]
            router = self.w.tensor(f"{self.name('router', i)}.weight", (c.experts, c.hidden), "linear", "transpose")
            gate_up = self.w.tensor(self.name("experts_gate_up", i), (c.experts, 2 * c.intermediate, c.hidden),
                                    "linear", "swap_last")
            down = self.w.tensor(self.name("experts_down", i), (c.experts, c.hidden, c.intermediate), "linear",
                                 "swap_last")
            return self.op("MixtureOfExperts", [x, router, gate_up, down], f"{path}.experts", domain=DOMAIN,
                           top_k=c.top_k, normalize=1, activation=MOE_ACTIVATIONS[c.activation])
        if kind == "mlp":
            h = self.activation(self.linear(x, "fc_in", i, c.hidden, c.intermediate), self.name("fc_in", i))
            return self.linear(h, "fc_out", i, c.intermediate, c.hidden)
        if kind == "fused_glu":
            both = self.linear(x, "gate_up", i, c.hidden, 2 * c.intermediate)
            gate, up = self.op("Split", [both, self.const(np.array([c.intermediate] * 2), "gate_up_split")],
                               f"{self.name('gate_up', i)}.split", outputs=2, axis=-1)
        else:
            gate, up = (self.linear(x, role, i, c.hidden, c.intermediate) for role in ("gate", "up"))
        h = self.gated(gate, up, self.name("gate", i))
        if c.family.ternary:
            h = self.quantize_activations(self.norm(h, "mlp_sub_norm", i, c.intermediate),
                                          f"{self.name('down', i)}.input")
        return self.linear(h, "down", i, c.intermediate, c.hidden)

    def branch(self, h: str, i: int, norm: str, block, first_linear: str, out_norm: str) -> tuple[str, str]:
        """(normed input, block output) of one residual branch: norm, BitNet's activation
        quantization, the block, Gemma-2's norm on the output."""
        f = self.cfg.family
        x = self.norm(h, norm, i, self.cfg.hidden)
        if f.ternary:
            x = self.quantize_activations(x, f"{self.name(first_linear, i)}.input")
        y = block(x, i)
        return x, self.norm(y, out_norm, i, self.cfg.hidden) if f.sandwich else y

    def transformer_layer(self, h: str, i: int) -> str:
        layer = self.names["layer"].format(i=i)
        x, a = self.branch(h, i, "attn_norm", self.attention, "q", "attn_out_norm")
        if self.cfg.family.parallel:  # GPT-J: one normed input feeds both; residual + attention + MLP
            return self.op("Add", [self.op("Add", [a, self.mlp(x, i)], f"{layer}.branches"), h], f"{layer}.residual")
        h = self.op("Add", [h, a], f"{layer}.attn_residual")
        _, m = self.branch(h, i, "mlp_norm", self.mlp, "gate", "mlp_out_norm")
        return self.op("Add", [h, m], f"{layer}.mlp_residual")

    def mamba_layer(self, h: str, i: int) -> str:
        """transformers' MambaBlock: residual + MambaMixer(RMSNorm(h)), token-major throughout."""
        c, m = self.cfg, self.cfg.mamba
        x = self.norm(h, "attn_norm", i, c.hidden)
        proj = self.linear(x, "in_proj", i, c.hidden, 2 * m.inner)
        xs, gate = self.op("Split", [proj, self.const(np.array([m.inner] * 2), "in_proj_split")],
                           f"{self.name('in_proj', i)}.split", outputs=2, axis=-1)
        conv = self.name("conv", i)
        channels_first = self.op("Transpose", [xs], f"{conv}.to_channels", perm=[0, 2, 1])
        conv_inputs = [channels_first, self.w.tensor(f"{conv}.weight", (m.inner, 1, m.conv), "conv")]
        if "conv" in c.biases:
            conv_inputs.append(self.w.tensor(f"{conv}.bias", (m.inner,), "bias"))
        conv_out = self.op("Conv", conv_inputs, conv, group=m.inner, kernel_shape=[m.conv], pads=[m.conv - 1, 0])
        u = self.activation(self.op("Transpose", [conv_out], f"{conv}.to_tokens", perm=[0, 2, 1]), conv)
        ssm = self.linear(u, "x_proj", i, m.inner, m.dt_rank + 2 * m.state)
        dt, bs, cs = self.op("Split", [ssm, self.const(np.array([m.dt_rank, m.state, m.state]), "x_proj_split")],
                             f"{self.name('x_proj', i)}.split", outputs=3, axis=-1)
        delta = self.op("Softplus", [self.linear(dt, "dt_proj", i, m.dt_rank, m.inner)],
                        f"{self.name('dt_proj', i)}.softplus")
        a_log = self.w.tensor(self.name("A_log", i), (m.inner, m.state), "A_log")
        a = self.op("Neg", [self.op("Exp", [a_log], f"{self.name('A_log', i)}.exp")], f"{self.name('A_log', i)}.A")
        d = self.w.tensor(self.name("D", i), (m.inner,), "D")
        mixer = self.name("in_proj", i).rsplit(".", 1)[0]
        y, _ = self.op("SelectiveScan", [u, delta, a, bs, cs, d], f"{mixer}.selective_scan", outputs=2, domain=DOMAIN)
        out = self.linear(self.gated(gate, y, f"{mixer}.gate"), "out_proj", i, m.inner, c.hidden)
        return self.op("Add", [h, out], f"{self.names['layer'].format(i=i)}.residual")

    def lm_head(self, h: str) -> str:
        c = self.cfg
        out = None if c.final_softcap else "logits"
        if not c.tie_embeddings:
            logits = self.linear(h, "lm_head", None, c.hidden, c.vocab, out=out)
        else:  # the embedding table itself, [vocab, hidden], read transposed (no second copy)
            rows = self.op("Reshape", [h, self.const(np.array([-1, c.hidden]), "rows_shape")], "lm_head.rows")
            product = self.op("Gemm", [rows, self.embed], "lm_head", transB=1)
            shape = self.op("Concat", [self.op("Shape", [h], "lm_head.lead", end=-1),
                                       self.const(np.array([c.vocab]), "vocab")], "lm_head.shape", axis=0)
            logits = self.op("Reshape", [product, shape], "lm_head.logits", out=out)
        if c.final_softcap:
            cap = self.const(c.final_softcap, "final_softcap")
            logits = self.op("Mul", [self.op("Tanh", [self.op("Div", [logits, cap], "softcap.div")], "softcap.tanh"),
                                     cap], "softcap.mul", out="logits")
        return logits

    def build(self, ids: str) -> str:
        c = self.cfg
        self.embed = self.w.tensor(f"{self.names['embed']}.weight", (c.vocab, c.hidden), "embed")
        h = self.op("Gather", [self.embed, ids], self.names["embed"])
        self.positions(ids)
        if c.family.embed_scale:
            h = self.op("Mul", [h, self.const(math.sqrt(c.hidden), "embed_scale")], "embed_scale")
        if c.family.positions == "learned":
            table = self.w.tensor(f"{self.names['positions']}.weight", (c.context, c.hidden), "embed")
            h = self.op("Add", [h, self.op("Gather", [table, self.position_ids], self.names["positions"])],
                        "embed_positions")
        layer = self.mamba_layer if c.family.mixer == "mamba" else self.transformer_layer
        for i in range(c.layers):
            h = layer(h, i)
        return self.lm_head(self.norm(h, "final_norm", None, c.hidden))


def build_graph(cfg: ModelConfig, weights_source, dtype: DType, seed: int,
                batch: int | str = "batch", seq: int | str = "seq") -> ir.Graph:
    """The graph ``input_ids[batch, seq] (int64) -> logits[batch, seq, vocab]``."""
    graph = ir.Graph(_graph_name(cfg.name))
    graph.metadata = {"source": "xpuc.frontends.hf", "hf.model_type": cfg.model_type}
    weights = Weights(graph, dtype, weights_source, seed)
    ids = graph.add_input("input_ids", TensorType(DType.INT64, (batch, seq))).name
    logits = Builder(cfg, weights, graph).build(ids)
    weights.check()
    graph.outputs.append(logits)
    graph.metadata["hf.parameters"] = str(weights.count)
    return graph


def _graph_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "model"
