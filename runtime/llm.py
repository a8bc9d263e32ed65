"""Greedy generation with a KV cache: ``compile_llm(model, max_len) -> CompiledLLM``.

One model, two compiled graphs, both derived by the compiler from the model's prefill-only
graph bound at ``max_len`` positions (``ir.passes.DecodeStep``) and rewritten to write a
preallocated cache in place (``ir.passes.InPlaceKVCache``):

- the *prefill* over the prompt (compiled once per prompt length), which writes the
  prompt's keys and values into the cache;
- the *decode step* (compiled once), one token after ``past_length`` cached positions.

The cache is one buffer per layer for keys and one for values, ``[1, kv_heads, max_len,
head_dim]``, laid out once in an arena by the runtime's memory plan (:mod:`.memory_plan`)
and handed to both graphs as donated inputs: every step writes only its own positions,
nothing reallocates or copies a cache. Models exported with a cache (``past_key_values.*``
inputs, ``present.*`` outputs) are read with an empty cache as their prefill-only graph.

A model without attention to cache (Mamba keeps a state, not keys and values) generates
by recomputing the whole sequence each token (``mode == "recompute"``); so does
``kv_cache=False``, the reference the KV cache is measured against. Both right-pad the
sequence to ``max_len``, which a causal model ignores.

With a hardware target every run also counts its cost there (``runtime.compile(...,
target=T)``): the prefill's emulated latency is the time to first token, each decode
step's the time of one more token.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

import ir
from frontends import hf
from frontends import onnx as onnx_frontend
from ir.errors import XpucError
from ir.passes import DecodeStep, InPlaceKVCache, optimize
from ir.passes.decode import CACHE_INPUT_PREFIX, DecodeError, token_input
from ir.passes.kv_cache import PAST_LENGTH

from .compiled import CompiledModel, compile, hardware_target
from .memory_plan import MemoryPlan, plan_memory


STEP_PIPELINE = ["infer-shapes", "fold-constants", "cse", "dce"]


class GenerationError(XpucError):
    """Generation asked for something the compiled model cannot give (ids, lengths)."""


@dataclass
class Generation:
    """What one ``generate`` call produced and what it took."""

    tokens: list[int]
    """The new tokens, in order (the prompt excluded)."""
    host_ttft_s: float
    """Wall time of the prefill on this CPU (the first new token)."""
    host_step_s: list[float] = field(default_factory=list)
    """Wall time of each later token's step on this CPU."""
    target: str | None = None
    ttft_s: float | None = None
    """With a target: the prefill's emulated latency there."""
    step_s: list[float] = field(default_factory=list)
    """With a target: each later token's emulated latency there."""

    @property
    def tpot_s(self) -> float | None:
        """Emulated time per output token after the first (mean over the decode steps)."""
        return float(np.mean(self.step_s)) if self.step_s else None

    @property
    def host_tpot_s(self) -> float | None:
        return float(np.mean(self.host_step_s)) if self.host_step_s else None


class KVCache:
    """The cache buffers of every layer, placed once in one arena by a memory plan (all alive
    for the whole generation) and handed to the compiled steps by address."""

    def __init__(self, types: Mapping[str, ir.TensorType]):
        sizes = {name: int(np.prod(t.shape)) * t.dtype.numpy.itemsize for name, t in types.items()}
        self.plan: MemoryPlan = plan_memory(sizes, dict.fromkeys(sizes, (0, 0)))
        self.arena = np.zeros(max(self.plan.peak_bytes, 1), np.uint8)
        self.buffers = {name: self.arena[offset:offset + sizes[name]].view(types[name].dtype.numpy)
                        .reshape(types[name].shape) for name, offset in self.plan.offsets.items()}

    @property
    def nbytes(self) -> int:
        return self.plan.peak_bytes


class BoundStep:
    """A compiled step bound once to its feed buffers (``Executor.bind``): the tokens, the past
    length and the cache; each call writes the new tokens and length into them and runs."""

    def __init__(self, model: CompiledModel, step: int, cache: KVCache | None):
        self.model = model
        self.executor, self.emulation = model.specialize_static()
        self.ids = np.zeros((1, step), np.int64)
        self.past = np.zeros((), np.int64)
        self.feeds = {"input_ids": self.ids}
        if cache is not None:
            self.feeds.update({PAST_LENGTH: self.past, **cache.buffers})
        self.run = self.executor.bind(self.feeds)

    def __call__(self, tokens: list[int], past: int, row: int = -1) -> tuple[np.ndarray, float | None]:
        """Logits at ``row`` of the step for ``tokens`` after ``past`` cached positions, and the
        step's emulated latency on the target (None without one)."""
        self.ids[0, :len(tokens)] = tokens
        self.past[...] = past
        if self.emulation is None:
            return self.run()[0][0, row], None
        outputs, cost = self.emulation.run(lambda _: self.run(), self.feeds)
        return outputs[0][0, row], cost.latency_s


class CompiledLLM:
    """A decoder compiled for greedy generation on this CPU (see the module docstring)."""

    def __init__(self, template: ir.Graph, max_len: int, target, options: dict[str, Any], kv_cache: bool):
        self.template, self.max_len, self.options = template, max_len, options
        self.target = hardware_target(target) if target is not None else None
        self.vocab_size = int(template.type_of(template.outputs[0]).shape[-1])
        self._prefills: dict[int, BoundStep] = {}
        attention = any(n.op_type == "Attention" for n in template.nodes)
        self.mode = "kv-cache" if kv_cache and attention else "recompute"
        if self.mode == "kv-cache":
            decode = self._compile(DecodeStep(1, past=True)(template.copy()))
            caches = [n for n in decode.input_names if n not in ("input_ids", PAST_LENGTH)]
            self.cache = KVCache({n: decode.graph.type_of(n) for n in caches})
            self.decode = BoundStep(decode, 1, self.cache)
        else:
            self.recompute = BoundStep(compile(template, self.target or "cpu", **options), max_len, None)

    def _compile(self, step: ir.Graph) -> CompiledModel:
        """A step is derived from the optimized template: it only needs what the derivation
        left behind folded and removed."""
        graph = optimize(InPlaceKVCache(self.max_len)(step), pipeline=STEP_PIPELINE)
        return compile(graph, self.target or "cpu", **{**self.options, "optimize": False})

    def prefill(self, length: int) -> BoundStep:
        """The prefill of a ``length``-token prompt (compiled on first use)."""
        if length not in self._prefills:
            model = self._compile(DecodeStep(length, past=False)(self.template.copy()))
            self._prefills[length] = BoundStep(model, length, self.cache)
        return self._prefills[length]

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int) -> Generation:
        """Greedy decoding: the prompt's prefill, then one step per further token."""
        prompt = self._check(prompt_ids, max_new_tokens)
        if self.mode == "kv-cache":
            self.prefill(len(prompt))  # compiled before the clock starts
        result = Generation([], 0.0, target=self.target.name if self.target else None)
        ids = list(prompt)
        for i in range(max_new_tokens):
            start = time.perf_counter()
            logits, cost = self._step(ids, first=i == 0)
            elapsed = time.perf_counter() - start
            ids.append(int(np.argmax(logits)))
            if i == 0:
                result.host_ttft_s, result.ttft_s = elapsed, cost
            else:
                result.host_step_s.append(elapsed)
                if cost is not None:
                    result.step_s.append(cost)
        result.tokens = ids[len(prompt):]
        return result

    def _step(self, ids: list[int], first: bool) -> tuple[np.ndarray, float | None]:
        """The next token's logits for ``ids`` (the prompt on the first step), and its emulated latency."""
        if self.mode == "recompute":  # right-padded with zeros to the compiled length
            return self.recompute(ids + [0] * (self.max_len - len(ids)), 0, row=len(ids) - 1)
        if first:
            return self.prefill(len(ids))(ids, 0)
        return self.decode(ids[-1:], len(ids) - 1)

    def _check(self, prompt_ids, max_new_tokens) -> list[int]:
        array = np.asarray(prompt_ids)
        if array.ndim != 1 or not array.size or array.dtype.kind not in "iu":
            raise GenerationError(f"the prompt must be a non-empty list of integer token ids, got {prompt_ids!r}")
        prompt = [int(t) for t in array]
        outside = [t for t in prompt if not 0 <= t < self.vocab_size]
        if outside:
            raise GenerationError(f"token id(s) {', '.join(map(str, outside[:5]))} outside the vocabulary "
                                  f"0..{self.vocab_size - 1}")
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if len(prompt) + max_new_tokens > self.max_len:
            raise GenerationError(f"{len(prompt)} prompt tokens + {max_new_tokens} new ones exceed max_len "
                                  f"{self.max_len}; compile with a larger max_len")
        return prompt

    def __repr__(self) -> str:
        return f"<CompiledLLM {self.template.name!r}: {self.mode}, max_len {self.max_len}, vocab {self.vocab_size}>"


def compile_llm(model, max_len: int = 128, target=None, *, kv_cache: bool = True, seed: int = 0,
                **options: Any) -> CompiledLLM:
    """Compile a decoder for greedy generation of up to ``max_len`` positions (prompt + new).

    model: an ONNX path, bytes or ``onnx.ModelProto`` (with or without ``past_key_values.*``
        cache inputs), a Hugging Face config (bundled preset name, config.json path or dict;
        built with seeded random weights, ``seed``), or an ``ir.Graph``.
    target: None (this CPU only), or a hardware target whose cost each run emulates.
    kv_cache: False recomputes the whole sequence for every token (the reference).
    options: as :func:`runtime.compile` (threads, cache, tiling ...).
    """
    if not isinstance(max_len, (int, np.integer)) or max_len < 2:
        raise GenerationError(f"max_len must be an integer of at least 2, got {max_len!r}")
    template = optimize(prefill_template(model, int(max_len), seed))
    return CompiledLLM(template, int(max_len), target, options, kv_cache)


def prefill_template(model, max_len: int, seed: int = 0) -> ir.Graph:
    """The model's prefill-only graph ``input_ids[1, max_len] -> logits``, unoptimized."""
    shapes = {"input_ids": (1, max_len)}
    if isinstance(model, ir.Graph):
        graph = model.copy()
        ir.bind_input_shapes(graph, shapes)
    elif isinstance(model, (str, os.PathLike, dict)) and hf.recognizes(model):
        config = hf.config(model)
        if max_len > config.context:
            raise GenerationError(f"max_len {max_len} exceeds {config.name}'s context of {config.context} positions")
        graph = hf.load(config, input_shapes=shapes, weights="random", seed=seed)
    elif isinstance(model, (str, os.PathLike, bytes, onnx.ModelProto)):
        graph = _without_cache(onnx_frontend.load(model, input_shapes=shapes))
    else:
        raise GenerationError(f"cannot generate with a {type(model).__name__}: pass an ONNX model, a config or "
                              "an ir.Graph")
    token_input(graph)
    extra = [n for n in graph.inputs if n != "input_ids"]
    if extra:
        raise DecodeError(f"{graph.name}: generation feeds input_ids only, but the model also takes "
                          f"{', '.join(extra)}")
    logits = graph.type_of(graph.outputs[0])
    if logits.rank != 3 or not isinstance(logits.shape[-1], int):
        raise DecodeError(f"{graph.name}: not a decoder: its first output is {logits}, not logits "
                          "[batch, seq, vocab]")
    return graph


def _without_cache(graph: ir.Graph) -> ir.Graph:
    """An export with cache inputs as its prefill-only graph: the cache empty, its outputs dropped."""
    cached = [n for n in graph.inputs if n.startswith(CACHE_INPUT_PREFIX)]
    if not cached:
        return graph
    for name in cached:
        t = graph.type_of(name)
        shape = (1, *t.shape[1:2], 0, *t.shape[3:]) if t.shape and len(t.shape) == 4 else None
        if shape is None or not all(isinstance(d, int) for d in shape):
            raise DecodeError(f"{graph.name}: cache input {name} is {t}, not [batch, kv_heads, past, head_dim]")
        graph.replace_uses(name, graph.add_constant(np.zeros(shape, t.dtype.numpy), "empty_cache"))
        graph.remove_value(name)
    graph.outputs = graph.outputs[:1]
    return graph


__all__ = ["compile_llm", "CompiledLLM", "Generation", "GenerationError", "KVCache"]
