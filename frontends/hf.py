"""Models from Hugging Face configs: ``config.json`` (a path or a dict) or a bundled preset name.

``load`` builds the decoder graph ``input_ids[batch, seq] -> logits[batch, seq, vocab]``
(:mod:`hf_builder`): weightless by default (shapes and dtypes only, so a 405B-parameter
model schedules in seconds), or with seeded random weights (``weights="random"``, float32,
so it runs), or with given arrays named and laid out as in transformers' state dict.

Presets (``frontends/hf_presets/*.json``) are public configs, hyperparameters only, each
with the repository it was transcribed from in ``_source``; ``xpuc models`` lists them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import ir
from ir.dtypes import DType
from ir.passes.shape_inference import infer_shapes
from ir.types import Dim

from .hf_builder import build_graph
from .hf_config import DTYPES, ConfigError, ModelConfig, parse

PRESET_DIR = Path(__file__).parent / "hf_presets"
DEFAULT_INPUT_SHAPES = {"input_ids": "1x128"}
"""What the CLI binds for a config when no ``--input-shape`` is given: one sequence of 128 tokens."""

ConfigSource = str | os.PathLike | Mapping


def presets() -> list[str]:
    """Names of the bundled configs."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def recognizes(source) -> bool:
    """Whether ``source`` names a config this frontend reads: a preset name, a dict, or a .json path."""
    if isinstance(source, Mapping):
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source)
    return text in presets() or text.endswith(".json")


def read_config(source: ConfigSource) -> tuple[dict, str]:
    """(config dict, name) from a preset name, a config.json path or a dict."""
    if isinstance(source, Mapping):
        return dict(source), str(source.get("_name_or_path") or source.get("model_type") or "model")
    text = os.fspath(source)
    path = PRESET_DIR / f"{text}.json" if text in presets() else Path(text)
    if not path.is_file():
        raise ConfigError(f"{text}: no such config file or bundled preset (presets: {', '.join(presets())})")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a model config must be a JSON object, got {type(config).__name__}")
    return config, text if path.parent == PRESET_DIR else path.stem


def config(source: ConfigSource) -> ModelConfig:
    """The checked, normalized config of ``source``."""
    data, name = read_config(source)
    return parse(data, name)


def load(source: ConfigSource | ModelConfig, *, input_shapes: Mapping[str, Sequence[Dim] | str] | None = None,
         weights: None | str | Mapping = None, seed: int = 0, dtype: str | None = None) -> ir.Graph:
    """Build the decoder graph of a config.

    weights: None (weightless), ``"random"`` (seeded with ``seed``), or a mapping from
        transformers state-dict names to arrays in transformers' layout.
    dtype: element type of weights and activations (float32, float16, bfloat16); default:
        the config's ``torch_dtype`` when weightless, float32 otherwise.
    input_shapes: e.g. ``{"input_ids": "1x128"}``; unbound dims stay symbols ``batch``/``seq``.
    """
    from . import onnx as onnx_frontend

    cfg = source if isinstance(source, ModelConfig) else config(source)
    if isinstance(weights, str) and weights != "random":
        raise ConfigError(f"weights must be None, 'random' or a mapping of arrays, got {weights!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    element = DTYPES[dtype] if dtype else (cfg.dtype if weights is None else DType.FLOAT32)
    if weights == "random":
        _check_fits(cfg, element)
    graph = build_graph(cfg, weights, element, seed)
    if input_shapes:
        onnx_frontend.bind_input_shapes(graph, input_shapes)
    ir.verify(graph)
    return infer_shapes(graph)


def _check_fits(cfg: ModelConfig, dtype: DType) -> None:
    """Refuse random weights that would not fit in half this machine's memory (before making them)."""
    need = parameter_count(build_graph(cfg, None, dtype, 0)) * dtype.itemsize
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have / 2:
        raise ConfigError(f"{cfg.name}: random weights would take {need / 2**30:,.1f} GiB, more than half of this "
                          f"machine's {have / 2**30:,.1f} GiB; schedule it weightless instead")


def parameter_count(graph: ir.Graph) -> int:
    """Parameters of a graph this frontend built (transformers' count: derived scales excluded)."""
    return int(graph.metadata["hf.parameters"])


@dataclass(frozen=True)
class PresetRow:
    name: str
    family: str
    parameters: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    context: int
    source: str


def describe(name: str) -> PresetRow:
    """One line of ``xpuc models``: the preset's shape, parameters counted on its weightless graph."""
    cfg = config(name)
    graph = build_graph(cfg, None, cfg.dtype, 0)
    return PresetRow(name, cfg.model_type, parameter_count(graph), cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads,
                     cfg.context, cfg.source.get("_source", ""))
