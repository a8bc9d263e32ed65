#!/usr/bin/env python
"""Check ``frontends.hf`` against ``transformers`` itself: same weights, same logits.

For each tiny config in ``tests/fixtures/hf_tiny_configs.json`` (one per family, each with
its distinctive features switched on), this script builds the transformers model from the
config (eager attention, float32, no hub access), re-draws every parameter with O(1)
scales, loads the same state dict into ``frontends.hf.load(config, weights=state)``, and
compares the logits of ``input_ids`` [2, 8] from transformers with xpuc's native code
(``runtime.compile``). BitNet runs transformers' own b1.58 layers (``AutoBitLinear``,
online mode: absmean ternary weights, per-token int8 activations), as its quantizer would.

It also lists transformers parameters the graph did not read (there should be none).

Dev-time only: needs the ``export`` extra (torch, transformers); run
``python scripts/check_hf_builders.py [family ...]``. Exit status 1 if any family differs
by more than ``--atol`` (default 1e-4) relative to the logits' largest magnitude.

Last run (torch 2.13.0+cpu, transformers 5.24.0, x86-64 host; logits of [2, 8] ids):

    family    max |diff|  max |logits|   relative
    llama       1.67e-06          3.13    5.3e-07   (llama3 rope scaling, GQA)
    mistral     1.19e-06          3.12    3.8e-07   (sliding window 5 < 8 tokens)
    qwen2       1.43e-06          3.24    4.4e-07   (qkv bias, sliding window on layer 1)
    gemma       7.63e-06          70.9    1.1e-07   (head_dim 24, one kv head, GeGLU)
    gemma2      3.81e-06            10    3.8e-07   (softcaps, alternating windows)
    phi3        1.19e-06          3.94    3.0e-07   (fused qkv / gate_up, partial rotary)
    gpt2        9.54e-06            45    2.1e-07   (learned positions, tied head)
    gptj        1.43e-06          3.34    4.3e-07   (parallel block, interleaved partial rotary)
    mixtral     1.19e-06          4.12    2.9e-07   (4 experts, top 2)
    mamba       3.81e-06          35.6    1.1e-07   (selective scan)
    bitnet      7.99e-06          55.6    1.4e-07   (ternary weights, int8 activations)

Dropping a feature on the xpuc side only (sliding window, softcap, query_pre_attn_scalar,
rope scaling) moves the difference to 0.09 .. 1.3, so the comparison sees each of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # BitNet's quantizers are @torch.compile'd; eager is the reference

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from frontends import hf  # noqa: E402
from frontends.hf_weights import _random  # noqa: E402

TINY = ROOT / "tests" / "fixtures" / "hf_tiny_configs.json"


def init_kind(name: str, shape: tuple[int, ...], model_type: str) -> str:
    """Which of the frontend's random initialisations suits a transformers parameter."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("A_log", "D"):
        return leaf
    if "conv1d" in name and leaf == "weight":
        return "conv"
    if leaf == "bias":
        return "bias"
    if len(shape) == 1:
        return "offset_norm" if model_type.startswith("gemma") else "norm"
    if "embed" in name or name.endswith(("wte.weight", "wpe.weight")):
        return "embed"
    return "linear"


def hf_model(family: str, config: dict):
    cfg = transformers.AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items()
                                                                     if k != "model_type"})
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    rng = np.random.default_rng(0)
    state = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            data = _random(rng, tuple(p.shape), init_kind(name, tuple(p.shape), config["model_type"]))
            p.copy_(torch.from_numpy(data.astype(np.float32)))
            state[name] = data.astype(np.float32)
    if family == "bitnet":
        model = bitnet_online(model)
    return model.eval(), state


def bitnet_online(model):
    """transformers' BitNet quantizer in online mode: every decoder linear becomes AutoBitLinear."""
    from transformers.integrations.bitnet import replace_with_bitnet_linear
    from transformers.utils.quantization_config import BitNetQuantConfig

    state = model.state_dict()
    config = BitNetQuantConfig(linear_class="autobitlinear", quantization_mode="online")
    model = replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"], quantization_config=config)
    model.load_state_dict(state, assign=True)
    return model


def check(family: str, config: dict) -> tuple[float, float, list[str]]:
    model, state = hf_model(family, config)
    ids = np.random.default_rng(1).integers(0, config["vocab_size"], (2, 8)).astype(np.int64)
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), use_cache=False).logits.float().numpy()
    graph = hf.load(config, weights=state, input_shapes={"input_ids": ids.shape})
    got = runtime.compile(graph, cache=False).run({"input_ids": ids})[0]
    unused = sorted(set(state) - set(graph.values) - {"lm_head.weight"})
    return float(np.abs(got - expected).max()), float(np.abs(expected).max()), unused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="families to check (default: all)")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed max |diff| / max |logits|")
    args = parser.parse_args()
    configs = json.loads(TINY.read_text())["configs"]
    torch.manual_seed(0)
    failed = []
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'family':8} {'max |diff|':>11} {'max |logits|':>13} {'relative':>10}  unused parameters")
    for family in args.families or configs:
        diff, scale, unused = check(family, configs[family])
        print(f"{family:8} {diff:11.3g} {scale:13.3g} {diff / scale:10.2g}  {', '.join(unused) or '-'}")
        if diff / scale > args.atol or unused:
            failed.append(family)
    if failed:
        print("differs:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
