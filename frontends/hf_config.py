"""A Hugging Face ``config.json`` read into what the graph builder needs, checked all at once.

Families are data (:data:`FAMILIES`): per ``model_type``, the parameter names of its
transformers state dict, its norm, MLP and attention variants and the config keys that
switch biases on. :func:`parse` resolves key aliases (GPT-2's ``n_embd``...), applies the
defaults transformers' config classes apply, derives per-layer attention windows and the
rotary inverse frequencies, and raises one :class:`ConfigError` listing every problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.dtypes import DType
from ir.errors import ModelLoadError


class ConfigError(ModelLoadError):
    """A model config that xpuc cannot build; the message lists every problem found."""


LLAMA_NAMES = {
    "embed": "model.embed_tokens", "layer": "model.layers.{i}", "final_norm": "model.norm", "lm_head": "lm_head",
    "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}
"""transformers' state-dict names (Llama layout), by the role each tensor plays."""


@dataclass(frozen=True)
class Family:
    """How one ``model_type`` differs from a Llama decoder (all fields are data, read by the builder)."""

    names: dict[str, str] = field(default_factory=lambda: LLAMA_NAMES)
    mixer: str = "attention"
    """``attention``, or ``mamba`` (selective state-space block, no attention)."""
    norm: str = "rms"
    """``rms``; ``rms_offset`` (Gemma: scale by 1 + w); ``layer`` (LayerNorm with bias)."""
    mlp: str = "glu"
    """``glu`` act(gate) * up; ``fused_glu`` one gate_up product split in two (Phi-3);
    ``mlp`` fc_in -> act -> fc_out (GPT-2, GPT-J); ``moe`` routed experts (Mixtral)."""
    fused_qkv: bool = False
    """One product for q, k and v, split afterwards (GPT-2, Phi-3)."""
    positions: str = "rotary"
    """``rotary``, or ``learned`` (a position embedding table, GPT-2)."""
    parallel: bool = False
    """Attention and MLP both read the block's one normed input (GPT-J)."""
    sandwich: bool = False
    """Norms on the attention and MLP outputs too (Gemma-2)."""
    sliding: str = "all"
    """Which layers use ``sliding_window`` when no ``layer_types`` list is given: ``all``;
    ``alternate`` (Gemma-2: even layers local, odd global); ``from_max_window_layers`` (Qwen2:
    layers from ``max_window_layers`` on, only when ``use_sliding_window``)."""
    embed_scale: bool = False
    """Embeddings times sqrt(hidden) (Gemma)."""
    ternary: bool = False
    """BitNet b1.58: ternary absmean weights, int8 absmax activations, sub-norms before o/down."""
    interleaved_rotary: bool = False
    """Rotate (2i, 2i+1) pairs (GPT-J's rotate_every_two) instead of halves."""
    linear_in_out: bool = False
    """Linear weights stored [in, out] (GPT-2's Conv1D), not nn.Linear's [out, in]."""
    biases: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "attention_bias": ("q", "k", "v", "o"), "mlp_bias": ("gate", "up", "down")})
    """Config key (or ``always``) -> the linear layers that have a bias when it is true."""
    activation_key: str = "hidden_act"
    defaults: dict[str, Any] = field(default_factory=dict)
    """transformers' defaults for optional keys that differ from :data:`DEFAULTS`."""
    required: tuple[str, ...] = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                 "intermediate_size")


DEFAULTS = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
            "max_position_embeddings": 2048, "attention_bias": False, "mlp_bias": False}
"""Defaults shared by most transformers decoder configs (LlamaConfig's)."""

GPT2_NAMES = {
    "embed": "transformer.wte", "positions": "transformer.wpe", "layer": "transformer.h.{i}",
    "final_norm": "transformer.ln_f", "lm_head": "lm_head", "attn_norm": "ln_1", "mlp_norm": "ln_2",
    "qkv": "attn.c_attn", "o": "attn.c_proj", "fc_in": "mlp.c_fc", "fc_out": "mlp.c_proj",
}
GPTJ_NAMES = {
    "embed": "transformer.wte", "layer": "transformer.h.{i}", "final_norm": "transformer.ln_f", "lm_head": "lm_head",
    "attn_norm": "ln_1", "q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj",
    "fc_in": "mlp.fc_in", "fc_out": "mlp.fc_out",
}
GEMMA2_NAMES = {**LLAMA_NAMES, "attn_out_norm": "post_attention_layernorm", "mlp_norm": "pre_feedforward_layernorm",
                "mlp_out_norm": "post_feedforward_layernorm"}
PHI3_NAMES = {**LLAMA_NAMES, "qkv": "self_attn.qkv_proj", "gate_up": "mlp.gate_up_proj"}
MIXTRAL_NAMES = {**LLAMA_NAMES, "router": "mlp.gate", "experts_gate_up": "mlp.experts.gate_up_proj",
                 "experts_down": "mlp.experts.down_proj"}
BITNET_NAMES = {**LLAMA_NAMES, "attn_sub_norm": "self_attn.attn_sub_norm", "mlp_sub_norm": "mlp.ffn_sub_norm"}
MAMBA_NAMES = {
    "embed": "backbone.embeddings", "layer": "backbone.layers.{i}", "final_norm": "backbone.norm_f",
    "lm_head": "lm_head", "attn_norm": "norm", "in_proj": "mixer.in_proj", "conv": "mixer.conv1d",
    "x_proj": "mixer.x_proj", "dt_proj": "mixer.dt_proj", "A_log": "mixer.A_log", "D": "mixer.D",
    "out_proj": "mixer.out_proj",
}
_LAYER_NORM_DEFAULTS = {"layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "tie_word_embeddings": True}

FAMILIES: dict[str, Family] = {
    "llama": Family(),
    "mistral": Family(defaults={"sliding_window": 4096}),
    "qwen2": Family(biases={"always": ("q", "k", "v")}, sliding="from_max_window_layers",
                    defaults={"sliding_window": 4096}),
    "gemma": Family(norm="rms_offset", embed_scale=True,
                    defaults={"hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True}),
    "gemma2": Family(names=GEMMA2_NAMES, norm="rms_offset", embed_scale=True, sandwich=True, sliding="alternate",
                     activation_key="hidden_activation",
                     defaults={"hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
                               "sliding_window": 4096, "query_pre_attn_scalar": 256,
                               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}),
    "phi3": Family(names=PHI3_NAMES, fused_qkv=True, mlp="fused_glu", biases={}, defaults={"rms_norm_eps": 1e-5}),
    "gpt2": Family(names=GPT2_NAMES, norm="layer", mlp="mlp", fused_qkv=True, positions="learned",
                   linear_in_out=True, biases={"always": ("qkv", "o", "fc_in", "fc_out")},
                   activation_key="activation_function", defaults=_LAYER_NORM_DEFAULTS,
                   required=("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")),
    "gptj": Family(names=GPTJ_NAMES, norm="layer", mlp="mlp", parallel=True, interleaved_rotary=True,
                   biases={"always": ("fc_in", "fc_out", "lm_head")}, activation_key="activation_function",
                   defaults={**_LAYER_NORM_DEFAULTS, "tie_word_embeddings": False},
                   required=("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")),
    "mixtral": Family(names=MIXTRAL_NAMES, mlp="moe", biases={}, defaults={"rms_norm_eps": 1e-5, "rope_theta": 1e6},
                      required=Family.required + ("num_local_experts", "num_experts_per_tok")),
    "mamba": Family(names=MAMBA_NAMES, mixer="mamba", mlp="none",
                    biases={"use_bias": ("in_proj", "out_proj"), "use_conv_bias": ("conv",), "always": ("dt_proj",)},
                    defaults={"layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "use_conv_bias": True,
                              "use_bias": False, "expand": 2, "conv_kernel": 4, "time_step_rank": "auto"},
                    required=("vocab_size", "hidden_size", "num_hidden_layers", "state_size")),
    "bitnet": Family(names=BITNET_NAMES, ternary=True,
                     defaults={"hidden_act": "relu2", "rms_norm_eps": 1e-5, "rope_theta": 500000.0}),
}
"""Every supported ``model_type``. Mistral and Llama differ only in their configs (sliding window)."""

ALIASES = {
    "hidden_size": ("n_embd", "d_model"), "num_hidden_layers": ("n_layer",), "num_attention_heads": ("n_head",),
    "max_position_embeddings": ("n_positions",), "intermediate_size": ("n_inner",),
}
"""Other spellings of a key (transformers' ``attribute_map``), tried after the key itself."""

ACTIVATIONS = {"silu": "SiLU", "swish": "SiLU", "gelu": "Gelu", "gelu_new": "GeluTanh",
               "gelu_pytorch_tanh": "GeluTanh", "gelu_fast": "GeluTanh", "relu": "Relu", "relu2": "Relu2"}
"""transformers' ``ACT2FN`` names -> the activation the graph computes (``Relu2``: relu(x)^2)."""

DTYPES = {"float32": DType.FLOAT32, "float16": DType.FLOAT16, "bfloat16": DType.BFLOAT16}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class Rope:
    inv_freq: np.ndarray
    """float32 inverse frequencies, one per rotated pair."""
    interleaved: bool

    @property
    def dim(self) -> int:
        """Rotated dims per head (the rest pass through)."""
        return 2 * len(self.inv_freq)


@dataclass(frozen=True)
class Mamba:
    state: int
    conv: int
    inner: int
    dt_rank: int


@dataclass(frozen=True, eq=False)
class ModelConfig:
    """A decoder-only model, as the builder needs it."""

    name: str
    model_type: str
    family: Family
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    context: int
    eps: float
    activation: str
    tie_embeddings: bool
    dtype: DType
    biases: frozenset[str]
    rope: Rope | None = None
    windows: tuple[int | None, ...] = ()
    """Per layer: the sliding-window length (keys within it are visible), or None (full causal)."""
    attn_scale: float | None = None
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    experts: int = 0
    top_k: int = 0
    mamba: Mamba | None = None
    source: dict = field(default_factory=dict)


def parse(config: dict, name: str | None = None) -> ModelConfig:
    """Check and normalize a config dict (raises one :class:`ConfigError` listing every problem)."""
    if not isinstance(config, dict):
        raise ConfigError(f"a model config must be a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}")
    reader = _Reader(config, FAMILIES[model_type])
    result = reader.build(name or config.get("_name_or_path") or model_type, model_type)
    if reader.problems:
        raise ConfigError(f"config for {name or model_type!r} ({model_type}): " + "; ".join(reader.problems))
    return result


class _Reader:
    """Reads keys with aliases and family defaults, collecting problems instead of stopping at the first."""

    def __init__(self, config: dict, family: Family):
        self.config, self.family = config, family
        self.problems: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        for k in (key, *ALIASES.get(key, ())):
            if self.config.get(k) is not None:
                return self.config[k]
        return self.family.defaults.get(key, DEFAULTS.get(key, default))

    def positive(self, key: str, default: Any = None, required: bool = False) -> int:
        value = self.get(key)
        if value is None and required:
            self.problems.append(f"missing {key}")
            return 1
        value = default if value is None else value
        if value is None:
            return 1
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.problems.append(f"{key} must be a positive integer, got {value!r}")
            return 1
        return value

    def build(self, name: str, model_type: str) -> ModelConfig:
        f = self.family
        sizes = {key: self.positive(key, required=key in f.required)
                 for key in ("vocab_size", "hidden_size", "num_hidden_layers")}
        hidden, layers = sizes["hidden_size"], sizes["num_hidden_layers"]
        common = dict(name=name, model_type=model_type, family=f, vocab=sizes["vocab_size"], hidden=hidden,
                      layers=layers, context=self.positive("max_position_embeddings"), eps=self._eps(),
                      activation=self._activation(), tie_embeddings=bool(self.get("tie_word_embeddings")),
                      dtype=self._dtype(), biases=self._biases(), source=self.config)
        if f.mixer == "mamba":
            return ModelConfig(**common, heads=0, kv_heads=0, head_dim=0, intermediate=0, mamba=self._mamba(hidden))
        heads = self.positive("num_attention_heads", required=True)
        kv_heads = self.positive("num_key_value_heads", heads)
        head_dim = self.get("head_dim")
        if head_dim is None:
            if hidden % heads:
                self.problems.append(f"hidden_size {hidden} is not divisible by num_attention_heads {heads} "
                                     "(and no head_dim is given)")
            head_dim = hidden // heads
        else:
            head_dim = self.positive("head_dim")
        if heads % kv_heads:
            self.problems.append(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        inter = self.positive("intermediate_size", 4 * hidden, required="intermediate_size" in f.required)
        experts = top_k = 0
        if f.mlp == "moe":
            experts = self.positive("num_local_experts", required=True)
            top_k = self.positive("num_experts_per_tok", required=True)
            if top_k > experts:
                self.problems.append(f"num_experts_per_tok {top_k} exceeds num_local_experts {experts}")
            if self._activation() == "Relu2":
                self.problems.append("relu2 experts are not supported")
        scalar = self.get("query_pre_attn_scalar")
        return ModelConfig(**common, heads=heads, kv_heads=kv_heads, head_dim=head_dim, intermediate=inter,
                           rope=self._rope(head_dim) if f.positions == "rotary" else None,
                           windows=self._windows(layers), attn_scale=scalar ** -0.5 if scalar else None,
                           attn_softcap=float(self.get("attn_logit_softcapping") or 0.0),
                           final_softcap=float(self.get("final_logit_softcapping") or 0.0),
                           experts=experts, top_k=top_k)

    def _eps(self) -> float:
        key = "layer_norm_epsilon" if self.family.norm == "layer" or self.family.mixer == "mamba" else "rms_norm_eps"
        eps = self.get(key, self.get("layer_norm_eps"))
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
            self.problems.append(f"{key} must be a positive number, got {eps!r}")
            return 1e-5
        return float(eps)

    def _activation(self) -> str:
        act = self.get(self.family.activation_key, self.get("hidden_act"))
        if act not in ACTIVATIONS:
            self.problems.append(f"unsupported activation {act!r} ({self.family.activation_key}); "
                                 f"supported: {', '.join(sorted(ACTIVATIONS))}")
            return "SiLU"
        return ACTIVATIONS[act]

    def _dtype(self) -> DType:
        text = self.config.get("torch_dtype") or self.config.get("dtype") or "float32"
        if text not in DTYPES:
            self.problems.append(f"unsupported torch_dtype {text!r}; supported: {', '.join(DTYPES)}")
            return DType.FLOAT32
        return DTYPES[text]

    def _biases(self) -> frozenset[str]:
        return frozenset(layer for key, layers in self.family.biases.items()
                         if key == "always" or self.get(key) for layer in layers)

    def _rope(self, head_dim: int) -> Rope | None:
        params = dict(self.get("rope_parameters") or self.get("rope_scaling") or {})
        theta = params.get("rope_theta", self.get("rope_theta"))
        kind = params.get("rope_type", params.get("type", "default"))
        if kind not in ROPE_TYPES:
            self.problems.append(f"unsupported rope type {kind!r}; supported: {', '.join(ROPE_TYPES)}")
            return None
        if "rotary_dim" in self.config:
            dim = self.get("rotary_dim") or head_dim
        else:
            dim = int(head_dim * params.get("partial_rotary_factor", self.get("partial_rotary_factor", 1.0)))
        if dim % 2 or not 0 < dim <= head_dim:
            self.problems.append(f"rotary dimension {dim} must be even and at most head_dim {head_dim}")
            return None
        inv_freq = (1.0 / np.float32(theta) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim)))
        inv_freq = inv_freq.astype(np.float32)
        try:
            if kind == "linear":
                inv_freq = inv_freq / np.float32(params["factor"])
            elif kind == "llama3":
                inv_freq = _llama3(inv_freq, params, self.get("max_position_embeddings"))
        except KeyError as missing:
            self.problems.append(f"rope type {kind!r} needs {missing.args[0]}")
        return Rope(inv_freq.astype(np.float32), self.family.interleaved_rotary)

    def _windows(self, layers: int) -> tuple[int | None, ...]:
        """transformers' layer types: an explicit ``layer_types`` list, else the family's rule."""
        window = self.get("sliding_window")
        types = self.get("layer_types")
        if types is None:
            sliding = {"all": lambda i: True, "alternate": lambda i: i % 2 == 0,
                       "from_max_window_layers": lambda i: bool(self.get("use_sliding_window"))
                       and i >= self.get("max_window_layers", 28)}[self.family.sliding]
            types = ["sliding_attention" if sliding(i) else "full_attention" for i in range(layers)]
        if len(types) != layers:
            self.problems.append(f"layer_types has {len(types)} entries for {layers} layers")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
            self.problems.append(f"sliding_window must be a positive integer or null, got {window!r}")
            window = None
        return tuple(window if t == "sliding_attention" else None for t in types)

    def _mamba(self, hidden: int) -> Mamba:
        expand = self.positive("expand")
        inner = self.positive("intermediate_size", expand * hidden)
        rank = self.get("time_step_rank")
        if rank == "auto":
            rank = math.ceil(hidden / 16)
        elif isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            self.problems.append(f"time_step_rank must be 'auto' or a positive integer, got {rank!r}")
            rank = 1
        return Mamba(self.positive("state_size", required=True), self.positive("conv_kernel"), inner, rank)


def _llama3(inv_freq: np.ndarray, params: dict, context: int) -> np.ndarray:
    """transformers' ``_compute_llama3_parameters``, in float32 as there."""
    factor = np.float32(params["factor"])
    low, high = params["low_freq_factor"], params["high_freq_factor"]
    old = params.get("original_max_position_embeddings", context)
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
    smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
