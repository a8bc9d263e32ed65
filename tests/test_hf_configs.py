"""Models from Hugging Face configs: presets' parameter counts, per-layer and expert FLOPs by
hand, and one clear error for a bad config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frontends import hf
from frontends.hf_config import ConfigError
from ir.dtypes import DType
from ir.errors import ModelLoadError, ShapeError
from ir.passes import infer_shapes
from ir.summary import node_flops, summarize
from ir.types import TensorType

PUBLISHED = {
    # The first four are the figures the issue quotes, i.e. the parameter totals on the models'
    # Hugging Face pages (safetensors metadata). Every row, those four included, was also worked
    # out by hand from its config (embedding + per-layer projections, norms and biases + final
    # norm + untied head), e.g. llama-2-7b: 32000*4096*2 + 32*(4*4096^2 + 3*4096*11008 + 2*4096)
    # + 4096; each agrees with the rounded size its model page shows (6.74B, 8.03B, ...).
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "llama-3.1-8b": 8_030_261_248,    # Llama 3's shapes with 3.1's rope scaling and 131072 context
    "llama-3.1-70b": 70_553_706_496,
    "qwen2-7b": 7_615_616_512,      # q/k/v biases: 28*(3584 + 2*512)
    "gemma-2-9b": 9_241_705_984,    # tied head, 4 norms per layer, head_dim 256
    "phi-3-mini": 3_821_079_552,    # fused qkv (3072 x 9216) and gate_up (3072 x 16384)
    "gpt-j-6b": 6_050_882_784,      # untied head with a bias, MLP biases, LayerNorm biases
    "mamba-2.8b": 2_768_345_600,    # per layer: in_proj, conv (+bias), x_proj, dt_proj (+bias), A_log, D, out_proj
    "bitnet-b1.58-2b": 2_412_820_480,  # tied head, sub-norms of 2560 and 6912 (the bf16 master weights)
}
PREFIXES = ("model.", "transformer.", "backbone.", "lm_head.")


def test_every_preset_has_a_published_count():
    assert sorted(PUBLISHED) == hf.presets()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameters_equal_the_published_count(name):
    graph = hf.load(name)
    weights = sum(v.type.numel for v in graph.initializers()
                  if v.name.startswith(PREFIXES) and not v.name.endswith("weight_scale"))
    assert hf.parameter_count(graph) == weights == PUBLISHED[name]
    assert all(v.weightless for v in graph.initializers() if v.name.startswith(PREFIXES))


def _flops(config: dict, layers: int, shape=(1, 128)) -> int:
    graph = hf.load({**config, "num_hidden_layers": layers}, input_shapes={"input_ids": shape})
    summary = summarize(graph)
    assert not summary.ops_with_unknown_work
    return summary.flops


def test_one_llama_layer_costs_its_hand_formula():
    """llama-3-8b at 1x128: the FLOPs one more layer adds, op rule by op rule."""
    config, _ = hf.read_config("llama-3-8b")
    s, h, heads, kv, d, inter = 128, 4096, 32, 8, 128, 14336
    projections = 2 * s * h * heads * d + 2 * 2 * s * h * kv * d + 2 * s * heads * d * h + 3 * 2 * s * h * inter
    scores = heads * s * s
    attention = 2 * scores * d + 2 * scores * d + 5 * scores  # QK^T, PV, scale/mask/softmax
    rotary = 3 * s * (heads + kv) * d
    norms = 2 * 4 * s * h
    swiglu = 12 * s * inter
    residuals = 2 * s * h
    layer = projections + attention + rotary + norms + swiglu + residuals
    assert _flops(config, 2) - _flops(config, 1) == layer


def test_moe_flops_count_only_the_active_experts():
    """mixtral-8x7b at 1x128: router over 8 experts, but each token pays for 2 experts only."""
    config, _ = hf.read_config("mixtral-8x7b")
    tokens, h, inter, experts, k = 128, 4096, 14336, 8, 2
    router = 2 * h * experts + 5 * experts + k * experts + 2 * k
    expert = 2 * h * 2 * inter + 12 * inter + 2 * inter * h + 2 * h  # gate/up, SwiGLU, down, weighted sum
    graph = hf.load(config, input_shapes={"input_ids": (1, tokens)})
    (moe,) = [n for n in graph.nodes if n.op_type == "MixtureOfExperts" and n.name.startswith("model.layers.0.")]
    assert node_flops(graph, moe) == tokens * (router + k * expert)
    doubled = hf.load({**config, "num_local_experts": 16}, input_shapes={"input_ids": (1, tokens)})
    (moe16,) = [n for n in doubled.nodes if n.op_type == "MixtureOfExperts" and n.name.startswith("model.layers.0.")]
    assert node_flops(doubled, moe16) - node_flops(graph, moe) == tokens * (2 * h * 8 + 5 * 8 + k * 8)


def test_selective_scan_flops_follow_the_recurrence():
    """mamba-2.8b at 1x128: 15 FLOP per (token, channel, state) and 2 per (token, channel)."""
    graph = hf.load("mamba-2.8b", input_shapes={"input_ids": (1, 128)})
    scans = [n for n in graph.nodes if n.op_type == "SelectiveScan"]
    assert len(scans) == 64
    tokens, inner, state = 128, 5120, 16
    assert node_flops(graph, scans[0]) == tokens * inner * (15 * state + 2)


def test_llama_405b_is_126_fused_layers_with_all_work_countable():
    graph = hf.load("llama-3.1-405b", input_shapes={"input_ids": (1, 128)})
    ops = summarize(graph).ops_by_type
    assert ops["Attention"] == ops["xpuc.SwiGLU"] == 126 and ops["RotaryEmbedding"] == 252
    assert ops["RMSNormalization"] == 2 * 126 + 1 and ops["MatMul"] == 7 * 126 + 1
    assert not summarize(graph).ops_with_unknown_work


def test_weightless_presets_keep_their_number_formats():
    llama = hf.load("llama-3-8b")
    assert llama.values["model.embed_tokens.weight"].type.dtype is DType.BFLOAT16
    bitnet = hf.load("bitnet-b1.58-2b")
    assert bitnet.values["model.layers.0.mlp.down_proj.weight"].type.dtype is DType.INT4  # ternary values
    assert bitnet.values["model.layers.0.mlp.down_proj.weight"].type.shape == (6912, 2560)  # [in, out]


def test_sliding_windows_follow_each_family():
    gemma2 = hf.config("gemma-2-9b")
    assert gemma2.windows[:4] == (4096, None, 4096, None)  # local layers first, alternating
    assert set(hf.config("mistral-7b").windows) == {4096}
    assert set(hf.config("qwen2-7b").windows) == {None}  # use_sliding_window is false
    assert set(hf.config("mixtral-8x7b").windows) == {None}


def test_llama3_rope_scaling_divides_only_long_wavelengths():
    """Llama 3.1: wavelengths above 8192 / 1 are divided by 8, below 8192 / 4 kept, between blended."""
    plain = hf.config("llama-3-70b").rope.inv_freq
    scaled = hf.config("llama-3.1-405b").rope.inv_freq
    wavelength = 2 * np.pi / plain
    np.testing.assert_array_equal(scaled[wavelength < 2048], plain[wavelength < 2048])
    np.testing.assert_allclose(scaled[wavelength > 8192], plain[wavelength > 8192] / 8, rtol=1e-6)
    middle = (wavelength > 2048) & (wavelength < 8192)
    assert middle.any() and np.all((scaled[middle] < plain[middle]) & (scaled[middle] > plain[middle] / 8))


@pytest.mark.parametrize("config, problems", [
    ({"model_type": "bert"}, ["unsupported model_type 'bert'", "llama", "mamba"]),
    ({"model_type": "llama", "hidden_size": 60, "num_attention_heads": 7, "num_key_value_heads": 3},
     ["missing vocab_size", "missing num_hidden_layers", "missing intermediate_size",
      "hidden_size 60 is not divisible by num_attention_heads 7",
      "num_attention_heads 7 is not a multiple of num_key_value_heads 3"]),
    ({"model_type": "mixtral", "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "intermediate_size": 8, "num_local_experts": 2, "num_experts_per_tok": 3, "hidden_act": "tanh"},
     ["num_experts_per_tok 3 exceeds num_local_experts 2", "unsupported activation 'tanh'"]),
    ({"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
      "intermediate_size": 8, "rope_scaling": {"rope_type": "yarn", "factor": 4}, "layer_types": ["full_attention"],
      "torch_dtype": "int8"},
     ["unsupported rope type 'yarn'", "layer_types has 1 entries for 2 layers", "unsupported torch_dtype 'int8'"]),
    ({"model_type": "mamba", "vocab_size": 8, "hidden_size": 0, "num_hidden_layers": 1},
     ["hidden_size must be a positive integer, got 0", "missing state_size"]),
])
def test_a_bad_config_is_one_error_listing_every_problem(config, problems):
    with pytest.raises(ConfigError) as error:
        hf.load(config)
    for problem in problems:
        assert problem in str(error.value)


def test_config_files_and_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="no such config file or bundled preset"):
        hf.load(tmp_path / "missing.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON config"):
        hf.load(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        hf.load(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="weights must be None, 'random' or a mapping"):
        hf.load("llama-2-7b", weights="zeros")


def test_given_weights_are_checked_by_name_and_shape():
    config = {"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 12}
    rng = np.random.default_rng(0)
    state = {"model.embed_tokens.weight": rng.standard_normal((16, 8)),
             "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((8, 12))}
    with pytest.raises(ModelLoadError) as error:
        hf.load(config, weights=state)
    message = str(error.value)
    assert "model.layers.0.self_attn.q_proj.weight (8, 12) (expected (8, 8))" in message
    assert "10 missing: model.layers.0.input_layernorm.weight" in message


def test_a_config_file_loads_like_its_dict(tmp_path):
    config, _ = hf.read_config("phi-3-mini")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, "num_hidden_layers": 2}))
    graph = hf.load(path, input_shapes={"input_ids": "2x16"})
    assert graph.values["logits"].type.shape == (2, 16, 32064)
    assert hf.parameter_count(graph) == 2 * 32064 * 3072 + 3072 + 2 * (3072 * 9216 + 3072 * 3072 + 3072 * 16384
                                                                       + 8192 * 3072 + 2 * 3072)


def test_composite_shape_rules_refuse_mismatched_operands():
    config = json.loads((hf.PRESET_DIR / "mixtral-8x7b.json").read_text())
    graph = hf.load({**config, "num_hidden_layers": 1}, input_shapes={"input_ids": (1, 4)})
    moe = next(n for n in graph.nodes if n.op_type == "MixtureOfExperts")
    graph.values[moe.inputs[3]].type = TensorType(DType.BFLOAT16, (8, 14336, 4000))  # hidden should be 4096
    with pytest.raises(ShapeError, match=r"Down has shape \(8, 14336, 4000\), expected \(8, 14336, 4096\)"):
        infer_shapes(graph)
