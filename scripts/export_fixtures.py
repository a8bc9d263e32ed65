#!/usr/bin/env python
"""Export tiny, randomly initialised Hugging Face models to ONNX test fixtures.

For every model *family* (llama, mistral, qwen2, gemma, phi, gpt2, bert, olmo,
mamba, bitnet) this script

1. builds a tiny ``transformers`` model from a config (no hub access, no
   ``from_pretrained``) with a fixed ``torch.manual_seed`` and re-draws every
   parameter with O(1) scales (see ``randomize_``: HF's default init leaves norm
   weights at 1 and biases at 0 and makes attention nearly uniform, which would
   let broken rewrites pass numerically).  The bitnet decoder weights are also
   ternarized offline (b1.58 absmean rule);
2. exports it twice to ONNX:

   * ``<family>_dynamo.onnx`` -- ``torch.onnx.export(..., dynamo=True)`` at the
     exporter's default opset, with dynamic batch/sequence dims when that works
     (fallbacks: dynamic batch only, then fully static);
   * ``<family>_legacy.onnx`` -- the TorchScript exporter
     (``dynamo=False, opset_version=17``) with ``dynamic_axes`` for
     batch/sequence (same fallbacks).  Current transformers needs two custom
     symbolics there (``aten::diff``, ``aten::cumsum`` on bool), see
     ``LEGACY_CUSTOM_SYMBOLICS``;

   Every file is a single self-contained ``.onnx`` (no external-data sidecar),
   its per-node debug metadata (stack traces, FX node dumps) is stripped to keep
   it small and free of machine-specific paths, and it must be <= 1 MB;
3. verifies each file: ``onnx.checker.check_model``, then onnxruntime
   (CPUExecutionProvider, graph optimisations disabled so the stored graph is
   what runs) against the PyTorch model on random ``input_ids`` of shape
   [2, 16] (rtol 1e-4, atol 1e-5) and, for every dimension claimed dynamic, on
   other shapes (e.g. [2, 8], [1, 5]).  A dynamic variant that fails these
   checks is rejected and the next fallback is tried;
4. exports every causal LM with attention a second time with a KV cache, as
   transformers/optimum exporters write one (``cache/<family>_<exporter>.onnx``:
   ``past_key_values.{i}.key/value`` inputs, ``present.{i}.key/value`` outputs; see
   ``WithCache``), verified on every output at several (batch, seq, past);
5. with ``--greedy`` (and nothing else), writes ``greedy_tokens.json``: the tokens
   transformers' ``generate`` picks greedily for a fixed prompt, per decoder family, checked
   against a no-cache torch loop and onnxruntime on the family's dynamo fixture;
6. writes ``MANIFEST.json`` describing every fixture (inputs with symbolic dim
   names, outputs, opset, config, vocab size, #layers, max abs diff, ...) plus
   the failures, so that tests can generate valid inputs without torch.

Only the model's ``input_ids`` (int64, [batch, seq]) is an input; the only
output is ``logits`` ([batch, seq, vocab]) -- or ``last_hidden_state``
([batch, seq, hidden]) for BERT.  ``use_cache=False``, eval mode.  The
attention implementation is "sdpa" when the model and exporter accept it,
"eager" otherwise (recorded per fixture).

Usage::

    python scripts/export_fixtures.py                     # everything
    python scripts/export_fixtures.py --only llama        # both llama files
    python scripts/export_fixtures.py --only gpt2_legacy,bert
    python scripts/export_fixtures.py --out /tmp/fixtures --threads 2
    python scripts/export_fixtures.py --list
    python scripts/export_fixtures.py --only cache        # the with-cache exports
    python scripts/export_fixtures.py --greedy            # greedy_tokens.json only

Requires the ``export`` extra (torch, transformers, onnxscript) plus onnx and
onnxruntime.  With ``--only`` the existing MANIFEST.json is updated in place
(entries for the re-exported fixtures are replaced, others kept).  Exit status
is 1 if any selected fixture could not be produced (it is then listed under
``failures`` in the manifest), 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers

SEED = 1234
MAX_FILE_BYTES = 1_000_000  # "<= 1 MB"
RTOL, ATOL = 1e-4, 1e-5
PRIMARY_SHAPE = (2, 16)  # (batch, seq) used for tracing and the main check
LEGACY_OPSET = 17
# Per-node metadata keys kept in dynamo exports ("namespace" maps a node to its
# nn.Module path, which is handy for pattern-matching); everything else
# (stack traces with local paths, FX dumps, class hierarchies) is dropped.
KEEP_NODE_METADATA = {"namespace"}

# Tiny common sizes.
H, L, NH, NKV, HD, FF, V, P = 64, 2, 4, 2, 16, 128, 256, 128


@dataclass
class Family:
    name: str
    hf_class: str
    config_class: str
    config: dict[str, Any]
    output: str = "logits"  # attribute of the HF output object to export
    forward_kwargs: dict[str, Any] = field(default_factory=lambda: {"use_cache": False})
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra ctor kwargs
    has_attention: bool = True
    post_init: str | None = None  # name of a function in this module applied after randomize_()
    notes: str = ""


_DECODER = dict(
    vocab_size=V,
    hidden_size=H,
    intermediate_size=FF,
    num_hidden_layers=L,
    num_attention_heads=NH,
    num_key_value_heads=NKV,
    max_position_embeddings=P,
    use_cache=False,
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llama", "LlamaForCausalLM", "LlamaConfig",
               dict(_DECODER, tie_word_embeddings=False),
               notes="RMSNorm, RoPE, GQA (4 q heads / 2 kv heads), SwiGLU MLP."),
        Family("mistral", "MistralForCausalLM", "MistralConfig",
               dict(_DECODER, head_dim=HD, sliding_window=8, tie_word_embeddings=False),
               notes="Llama-like plus a sliding-window causal mask; sliding_window=8 (Mistral-7B-v0.1 "
                     "uses 4096) so the window is actually exercised at the verified seq lengths 16/32."),
        Family("qwen2", "Qwen2ForCausalLM", "Qwen2Config",
               dict(_DECODER, tie_word_embeddings=False),
               notes="Llama-like with q/k/v projection biases."),
        Family("gemma", "GemmaForCausalLM", "GemmaConfig",
               dict(_DECODER, head_dim=HD, hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True),
               notes="RMSNorm with (1 + weight), embeddings scaled by sqrt(hidden), GeGLU (tanh gelu) "
                     "MLP, tied lm_head."),
        Family("phi", "PhiForCausalLM", "PhiConfig",
               dict(_DECODER, partial_rotary_factor=0.5, hidden_act="gelu_new",
                    tie_word_embeddings=False),
               notes="LayerNorm, parallel attention+MLP block, partial rotary (factor 0.5), "
                     "biases everywhere, gelu_new MLP."),
        Family("gpt2", "GPT2LMHeadModel", "GPT2Config",
               dict(vocab_size=V, n_embd=H, n_layer=L, n_head=NH, n_inner=FF, n_positions=P,
                    activation_function="gelu_new", tie_word_embeddings=True, use_cache=False),
               notes="Learned absolute positions, LayerNorm, Conv1D (x @ W + b), fused c_attn "
                     "qkv projection, MHA (no GQA in GPT-2), tied lm_head."),
        Family("bert", "BertModel", "BertConfig",
               dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                    intermediate_size=FF, max_position_embeddings=P, type_vocab_size=2),
               output="last_hidden_state",
               forward_kwargs={},
               model_kwargs={"add_pooling_layer": False},
               notes="Encoder (bidirectional, MHA), post-LayerNorm, GELU(erf). Only input_ids is an "
                     "input: attention_mask defaults to all-ones and token_type_ids to zeros "
                     "(registered buffer). No pooler."),
        Family("olmo", "OlmoForCausalLM", "OlmoConfig",
               dict(_DECODER, tie_word_embeddings=False),
               notes="Non-parametric LayerNorm (no weight/bias), RoPE, GQA, SwiGLU MLP."),
        Family("mamba", "MambaForCausalLM", "MambaConfig",
               dict(vocab_size=V, hidden_size=H, state_size=16, num_hidden_layers=L, expand=2,
                    conv_kernel=4, time_step_rank=4, use_cache=False, tie_word_embeddings=True),
               has_attention=False,
               notes="Selective SSM; the pure-torch sequential scan is a Python loop over the "
                     "sequence, so the sequence length is baked into the graph (unrolled)."),
        Family("bitnet", "BitNetForCausalLM", "BitNetConfig",
               dict(_DECODER, hidden_act="relu2", tie_word_embeddings=False),
               post_init="ternarize_decoder_linears_",
               notes="BitNet b1.58 architecture (extra attn_sub_norm / ffn_sub_norm RMSNorms, "
                     "squared-ReLU GLU). Built from config without a BitNetQuantConfig, so the "
                     "projections are plain float nn.Linear (the BitLinear/AutoBitLinear modules, "
                     "which use @torch.compile + autograd.Function, are only swapped in by the "
                     "quantizer at from_pretrained time). The decoder q/k/v/o/gate/up/down weights "
                     "are ternarized offline with the b1.58 absmean rule (W = s*T, T in {-1,0,1}, one "
                     "scale per matrix), so the stored float weights take 3 values each; embeddings "
                     "and lm_head stay float. No activation (int8 absmax) fake-quant in the graph."),
    ]
}

EXPORTERS = ("dynamo", "legacy")

# Dynamic modes tried in order: which of (batch, seq) are symbolic.
DYN_MODES = {
    "batch+seq": {0: "batch", 1: "seq"},
    "batch": {0: "batch"},
    "static": {},
}

# Range of each symbolic dim: the constraint given to torch.export (dynamo) and the range
# tests should stay within (seq is further capped by max_position_embeddings).
DIM_RANGES = {"batch": (1, 64), "seq": (2, P)}

# Extra (batch, seq) shapes that must also match torch, per dynamic mode.
CHECK_SHAPES = {
    "batch+seq": [PRIMARY_SHAPE, (2, 8), (1, 5), (3, 32)],
    "batch": [PRIMARY_SHAPE, (1, PRIMARY_SHAPE[1]), (3, PRIMARY_SHAPE[1])],
    "static": [PRIMARY_SHAPE],
}


class SingleOutput(torch.nn.Module):
    """Call the HF model with ``input_ids`` only and return one tensor."""

    def __init__(self, model: torch.nn.Module, output: str, forward_kwargs: dict[str, Any]):
        super().__init__()
        self.model = model
        self.output = output
        self.forward_kwargs = forward_kwargs

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, return_dict=True, **self.forward_kwargs)
        return getattr(out, self.output)


def build_model(fam: Family, attn: str | None) -> tuple[torch.nn.Module, Any]:
    cfg_cls = getattr(transformers, fam.config_class)
    model_cls = getattr(transformers, fam.hf_class)
    cfg = cfg_cls(**fam.config)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):  # keep special ids inside tiny vocab
        tok = getattr(cfg, attr, None)
        if isinstance(tok, int) and tok >= cfg.vocab_size:
            setattr(cfg, attr, cfg.vocab_size - 1)
    torch.manual_seed(SEED)
    kwargs = dict(fam.model_kwargs)
    if attn is not None:
        cfg._attn_implementation = attn  # noqa: SLF001 (public setter in transformers 5)
    model = model_cls(cfg, **kwargs).eval()
    randomize_(model)
    if fam.post_init:
        globals()[fam.post_init](model)
    if attn is not None and model.config._attn_implementation != attn:  # noqa: SLF001
        raise RuntimeError(f"model ignored attn_implementation={attn!r} "
                           f"(got {model.config._attn_implementation!r})")  # noqa: SLF001
    return model, cfg


INIT_DESCRIPTION = (
    "HF init, then every parameter is re-drawn (torch.manual_seed(SEED) + model construction order): "
    "embedding matrices ~ N(0, 0.5^2); other >=2-D weights ~ N(0, (1/sqrt(hidden))^2); 1-D '*bias' ~ N(0, 0.1^2); "
    "other 1-D params (norm weights, Mamba D) ~ 1 + N(0, 0.1^2); Mamba A_log += N(0, 0.1^2). "
    "This avoids HF's all-ones/all-zeros norm weights and biases (which hide bugs and which the dynamo "
    "exporter would deduplicate into one shared initializer) and makes attention non-uniform. "
    "Buffers (rotary inv_freq, BERT position_ids/token_type_ids) are untouched."
)


@torch.no_grad()
def randomize_(model: torch.nn.Module) -> None:
    """Deterministically re-draw all parameters with O(1) scales (see INIT_DESCRIPTION)."""
    hidden = model.config.hidden_size
    g = torch.Generator().manual_seed(SEED)
    for name, p in model.named_parameters():  # shared (tied) params are visited once
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "A_log":
            p.add_(0.1 * noise)
        elif p.ndim >= 2 and ("embed" in name or name.endswith(("wte.weight", "wpe.weight"))):
            p.copy_(0.5 * noise)
        elif p.ndim >= 2:
            p.copy_(noise / hidden**0.5)
        elif leaf == "bias":
            p.copy_(0.1 * noise)
        else:
            p.copy_(1.0 + 0.1 * noise)


@torch.no_grad()
def ternarize_decoder_linears_(model: torch.nn.Module) -> None:
    """BitNet b1.58 offline weight quantization (transformers.integrations.bitnet.WeightQuant)."""
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            w = mod.weight.float()
            scale = 1.0 / w.abs().mean().clamp(min=1e-5)
            mod.weight.copy_(((w * scale).round().clamp(-1, 1) / scale).to(mod.weight.dtype))


def make_ids(vocab: int, shape: tuple[int, int], salt: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED + 7919 * salt + 31 * shape[0] + shape[1])
    return torch.randint(0, vocab, shape, generator=g, dtype=torch.int64)


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop bulky/unreproducible debug metadata (stack traces with local paths, etc.)."""

    def nodes(graph: onnx.GraphProto):
        for n in graph.node:
            yield n
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from nodes(a.g)
                for g in a.graphs:
                    yield from nodes(g)

    def clean(msg) -> None:
        keep = [(p.key, p.value) for p in msg.metadata_props if p.key in KEEP_NODE_METADATA]
        del msg.metadata_props[:]
        for k, v in keep:
            msg.metadata_props.add(key=k, value=v)

    for n in nodes(model.graph):
        clean(n)
    for seq in (model.graph.input, model.graph.output, model.graph.value_info, model.graph.initializer):
        for item in seq:
            del item.metadata_props[:]
    for f in model.functions:
        for n in f.node:
            clean(n)
    del model.graph.metadata_props[:]
    model.doc_string = ""
    model.graph.doc_string = ""


def pin_output_dims(model: onnx.ModelProto, dyn: dict[int, str]) -> None:
    """Name/pin the output's [batch, seq] dims like the input's (the legacy exporter invents names
    such as 'Castlogits_dim_1' for dims that are not in dynamic_axes)."""
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for axis in (0, 1):
            if axis < len(dims):
                dims[axis].Clear()
                if axis in dyn:
                    dims[axis].dim_param = dyn[axis]
                else:
                    dims[axis].dim_value = PRIMARY_SHAPE[axis]


def export_dynamo(wrapper, ids, path: Path, dyn: dict[int, str]) -> None:
    dynamic_shapes = None
    if dyn:
        dims = {}
        for axis, name in dyn.items():
            lo, hi = DIM_RANGES[name]
            dims[axis] = torch.export.Dim(name, min=lo, max=hi)
        dynamic_shapes = {"input_ids": dims}
    prog = torch.onnx.export(
        wrapper, (ids,), dynamo=True, input_names=["input_ids"], output_names=[wrapper.output],
        dynamic_shapes=dynamic_shapes, external_data=False, optimize=True,
    )
    model = prog.model_proto
    strip_metadata(model)
    pin_output_dims(model, dyn)
    onnx.save(model, str(path), save_as_external_data=False)


_LEGACY_SYMBOLICS_REGISTERED = False
# Custom TorchScript-exporter symbolics needed by current transformers; recorded in MANIFEST.json.
LEGACY_CUSTOM_SYMBOLICS = {
    "aten::diff": "transformers' masking_utils.find_packed_sequence_indices calls torch.diff on the "
                  "internally generated position_ids; the TorchScript exporter has no symbolic for it. "
                  "Lowered as Concat(prepend, x) -> Slice[1:] - Slice[:-1] (n=1 only).",
    "aten::cumsum": "the built-in symbolic emits CumSum directly on the bool result of "
                    "`(position_diff != 1)`, which is invalid ONNX (CumSum has no bool kernel/type); "
                    "this override inserts Cast(to=INT64) first for bool/int8/int16/int32/uint8 inputs, "
                    "matching torch's integral promotion.",
}


def _register_legacy_symbolics() -> None:
    global _LEGACY_SYMBOLICS_REGISTERED
    if _LEGACY_SYMBOLICS_REGISTERED:
        return
    from torch.onnx import symbolic_helper as sh  # noqa: PLC0415

    def diff(g, self, n, dim, prepend, append):
        if sh._get_const(n, "i", "n") != 1:  # noqa: SLF001
            raise NotImplementedError("aten::diff with n != 1")
        d = sh._get_const(dim, "i", "dim")  # noqa: SLF001
        parts = [t for t in (prepend, self, append) if t is self or not sh._is_none(t)]  # noqa: SLF001
        x = g.op("Concat", *parts, axis_i=d) if len(parts) > 1 else self
        hi = sh._slice_helper(g, x, axes=[d], starts=[1], ends=[sys.maxsize])  # noqa: SLF001
        lo = sh._slice_helper(g, x, axes=[d], starts=[0], ends=[-1])  # noqa: SLF001
        return g.op("Sub", hi, lo)

    def cumsum(g, self, dim, dtype):
        d = sh._get_const(dim, "i", "dim")  # noqa: SLF001
        if not sh._is_none(dtype):  # noqa: SLF001
            to = sh._type_utils.JitScalarType(sh._get_const(dtype, "i", "dtype")).onnx_type()  # noqa: SLF001
            self = g.op("Cast", self, to_i=to)
        elif (self.type().scalarType() or "Float") in ("Bool", "Byte", "Char", "Short", "Int"):
            self = g.op("Cast", self, to_i=onnx.TensorProto.INT64)
        axis = g.op("Constant", value_t=torch.tensor(d, dtype=torch.int64))
        return g.op("CumSum", self, axis)

    torch.onnx.register_custom_op_symbolic("aten::diff", diff, LEGACY_OPSET)
    torch.onnx.register_custom_op_symbolic("aten::cumsum", cumsum, LEGACY_OPSET)
    _LEGACY_SYMBOLICS_REGISTERED = True


def export_legacy(wrapper, ids, path: Path, dyn: dict[int, str]) -> None:
    _register_legacy_symbolics()
    axes = {"input_ids": dict(dyn), wrapper.output: dict(dyn)} if dyn else None
    torch.onnx.export(
        wrapper, (ids,), str(path), dynamo=False, opset_version=LEGACY_OPSET,
        input_names=["input_ids"], output_names=[wrapper.output], dynamic_axes=axes,
        do_constant_folding=True,
    )
    model = onnx.load(str(path))  # legacy never writes external data for < 2 GB
    strip_metadata(model)
    pin_output_dims(model, dyn)
    onnx.save(model, str(path), save_as_external_data=False)


def dims_of(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None))
    return out


def dtype_of(vi: onnx.ValueInfoProto) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name


def verify(path: Path, wrapper, vocab: int, mode: str, salt: int) -> tuple[dict[str, float], str]:
    """Check the file and compare onnxruntime with torch; raise on mismatch."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RuntimeError(f"{path.name} is {size} bytes > {MAX_FILE_BYTES}")
    if any(p.name.startswith(path.name) and p != path for p in path.parent.iterdir()):
        raise RuntimeError(f"unexpected sidecar files next to {path.name}")
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
        checker = "check_model(full_check=True)"
    except Exception as e:  # noqa: BLE001 -- strict shape inference can be pickier than the checker
        onnx.checker.check_model(model)
        checker = f"check_model() (full_check failed: {short_err(e, 200)})"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4  # failures surface as exceptions anyway
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    diffs = {}
    for shape in CHECK_SHAPES[mode]:
        ids = make_ids(vocab, shape, salt)
        with torch.no_grad():
            ref = wrapper(ids).detach().numpy()
        got = sess.run(None, {"input_ids": ids.numpy()})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"shape {shape}: onnx {got.shape} vs torch {ref.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
        if not np.allclose(got, ref, rtol=RTOL, atol=ATOL):
            raise RuntimeError(f"shape {shape}: mismatch, max abs diff {diff:.3e}")
        diffs[f"{shape[0]}x{shape[1]}"] = diff
    return diffs, checker


def probe_seq1(path: Path, wrapper, vocab: int, salt: int) -> bool:
    """Informational: does the graph also run (and match) at seq == 1 (outside DIM_RANGES)?"""
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 4
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ids = make_ids(vocab, (2, 1), salt)
        with torch.no_grad():
            ref = wrapper(ids).detach().numpy()
        got = sess.run(None, {"input_ids": ids.numpy()})[0]
        return bool(got.shape == ref.shape and np.allclose(got, ref, rtol=RTOL, atol=ATOL))
    except Exception:  # noqa: BLE001
        return False


def describe(path: Path) -> dict[str, Any]:
    m = onnx.load(str(path))
    ops = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in m.graph.node})
    counts: dict[str, int] = {}
    for n in m.graph.node:
        k = f"{n.domain or 'ai.onnx'}::{n.op_type}"
        counts[k] = counts.get(k, 0) + 1
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    return dict(
        file=path.name,
        size_bytes=path.stat().st_size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        ir_version=m.ir_version,
        opset=opsets.get("ai.onnx"),
        opset_imports=opsets,
        num_nodes=len(m.graph.node),
        num_initializers=len(m.graph.initializer),
        num_functions=len(m.functions),
        op_types=ops,
        op_counts=dict(sorted(counts.items())),
        inputs=[{"name": i.name, "dtype": dtype_of(i), "shape": dims_of(i)} for i in m.graph.input],
        outputs=[{"name": o.name, "dtype": dtype_of(o), "shape": dims_of(o)} for o in m.graph.output],
    )


def short_err(e: BaseException, limit: int = 600) -> str:
    s = f"{type(e).__name__}: {e}".strip()
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit] + " ..."


def export_one(fam: Family, exporter: str, out_dir: Path, log) -> dict[str, Any]:
    """Try (attn impl) x (dynamic mode) until an export passes verification."""
    attns = ["sdpa", "eager"] if fam.has_attention else [None]
    salt = list(FAMILIES).index(fam.name)
    path = out_dir / f"{fam.name}_{exporter}.onnx"
    attempts = []
    for attn in attns:
        try:
            model, cfg = build_model(fam, attn)
        except Exception as e:  # noqa: BLE001
            attempts.append({"attn_implementation": attn, "stage": "build", "error": short_err(e)})
            continue
        wrapper = SingleOutput(model, fam.output, fam.forward_kwargs).eval()
        ids = make_ids(cfg.vocab_size, PRIMARY_SHAPE, salt)
        for mode, dyn in DYN_MODES.items():
            t0 = time.time()
            stage = "export"
            try:
                if path.exists():
                    path.unlink()
                sink = io.StringIO()
                with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                        contextlib.redirect_stderr(sink):
                    warnings.simplefilter("ignore")
                    with torch.no_grad():
                        (export_dynamo if exporter == "dynamo" else export_legacy)(wrapper, ids, path, dyn)
                stage = "verify"
                diffs, checker = verify(path, wrapper, cfg.vocab_size, mode, salt)
            except Exception as e:  # noqa: BLE001
                attempts.append({"attn_implementation": attn, "dynamic": mode, "stage": stage,
                                 "error": short_err(e)})
                log(f"    {fam.name}_{exporter} attn={attn} dyn={mode}: FAILED at {stage}: {short_err(e, 200)}")
                if path.exists():
                    path.unlink()
                continue
            log(f"    {fam.name}_{exporter} attn={attn} dyn={mode}: ok in {time.time() - t0:.1f}s, "
                f"max diff {max(diffs.values()):.2e}")
            info = describe(path)
            seq1 = probe_seq1(path, wrapper, cfg.vocab_size, salt) if "seq" in dyn.values() else False
            cfg_dict = json.loads(cfg.to_json_string(use_diff=False))
            entry = dict(
                name=f"{fam.name}_{exporter}",
                status="ok",
                family=fam.name,
                exporter=exporter,
                exporter_call=(
                    "torch.onnx.export(dynamo=True, optimize=True, external_data=False, default opset)"
                    if exporter == "dynamo" else
                    f"torch.onnx.export(dynamo=False, opset_version={LEGACY_OPSET}, do_constant_folding=True)"
                ),
                hf_class=f"transformers.{fam.hf_class}",
                hf_output=fam.output,
                attn_implementation=attn or "n/a (no attention)",
                dynamic=bool(dyn),
                dynamic_mode=mode,
                dynamic_dims={"input_ids": {str(k): v for k, v in dyn.items()}},
                dim_ranges={v: list(DIM_RANGES[v]) for v in dyn.values()},
                works_at_seq_len_1=seq1,
                traced_shape=list(PRIMARY_SHAPE),
                vocab_size=cfg.vocab_size,
                hidden_size=getattr(cfg, "hidden_size", None),
                num_layers=cfg.num_hidden_layers,
                num_attention_heads=getattr(cfg, "num_attention_heads", None) if fam.has_attention else None,
                num_key_value_heads=getattr(cfg, "num_key_value_heads", None) if fam.has_attention else None,
                max_position_embeddings=getattr(cfg, "max_position_embeddings", None),
                max_seq_len=getattr(cfg, "max_position_embeddings", None) if "seq" in dyn.values() else PRIMARY_SHAPE[1],
                seed=SEED,
                init=INIT_DESCRIPTION,
                config_overrides=fam.config,
                model_kwargs=fam.model_kwargs,
                config=cfg_dict,
                onnx_checker=checker,
                verified_with="onnxruntime CPUExecutionProvider, graph optimizations disabled",
                verified_shapes=list(diffs),
                max_abs_diff=max(diffs.values()),
                max_abs_diff_by_shape=diffs,
                tolerance={"rtol": RTOL, "atol": ATOL},
                notes=fam.notes,
                post_init=fam.post_init,
                legacy_custom_symbolics=LEGACY_CUSTOM_SYMBOLICS if exporter == "legacy" else {},
                fallback_attempts=attempts,
                **info,
            )
            return entry
    return dict(name=f"{fam.name}_{exporter}", status="failed", family=fam.name, exporter=exporter,
                hf_class=f"transformers.{fam.hf_class}", attempts=attempts)


# ----------------------------------------------------------------------------- with a KV cache
# Decoders are also exported the way transformers/optimum exporters write a decoder with a
# cache: inputs input_ids [batch, seq] and past_key_values.{i}.key/value [batch, kv_heads,
# past, head_dim]; outputs logits and present.{i}.key/value [batch, kv_heads, past + seq,
# head_dim] (optimum also takes attention_mask and position_ids; here transformers derives
# both from the cache length, all tokens valid). Files go to <out>/cache/<family>_<exporter>.onnx.

CACHE_SUBDIR = "cache"
CACHE_DIMS = {"batch": (1, 64), "seq": (1, P), "past": (1, P)}
CACHE_TRACE = (2, 3, 5)  # (batch, seq, past) used for tracing
CACHE_CHECKS = [CACHE_TRACE, (1, 1, 7), (2, 8, 16), (3, 5, 1)]
CACHE_PROBE_PAST0 = (2, 6, 0)  # informational: an empty cache (prefill through the cache graph)


class WithCache(torch.nn.Module):
    """``(input_ids, k0, v0, k1, v1, ...) -> (logits, present k0, v0, ...)`` through a DynamicCache."""

    def __init__(self, model: torch.nn.Module, layers: int):
        super().__init__()
        self.model, self.layers = model, layers
        self.output = "logits"

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        cache = transformers.DynamicCache(ddp_cache_data=list(zip(past[0::2], past[1::2])))
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True, return_dict=True)
        present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return ["input_ids", *past], ["logits", *present]


def cache_feeds(cfg, shape: tuple[int, int, int], salt: int) -> list[torch.Tensor]:
    batch, seq, past = shape
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    g = torch.Generator().manual_seed(SEED + 7919 * salt + 131 * past + 31 * batch + seq)
    kv = [torch.randn((batch, heads, past, head_dim), generator=g) for _ in range(2 * cfg.num_hidden_layers)]
    return [make_ids(cfg.vocab_size, (batch, seq), salt), *kv]


def export_cache_dynamo(wrapper, args, path: Path) -> None:
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in CACHE_DIMS.items()}
    kv = {0: dims["batch"], 2: dims["past"]}
    dynamic_shapes = ({0: dims["batch"], 1: dims["seq"]}, (kv,) * (len(args) - 1))  # *past: one nested tuple
    inputs, outputs = cache_names(wrapper.layers)
    prog = torch.onnx.export(wrapper, tuple(args), dynamo=True, input_names=inputs, output_names=outputs,
                             dynamic_shapes=dynamic_shapes, external_data=False, optimize=True)
    model = prog.model_proto
    strip_metadata(model)
    onnx.save(model, str(path), save_as_external_data=False)


def export_cache_legacy(wrapper, args, path: Path) -> None:
    _register_legacy_symbolics()
    inputs, outputs = cache_names(wrapper.layers)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past"} for n in inputs[1:]})
    axes.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    torch.onnx.export(wrapper, tuple(args), str(path), dynamo=False, opset_version=LEGACY_OPSET,
                      input_names=inputs, output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    model = onnx.load(str(path))
    strip_metadata(model)
    onnx.save(model, str(path), save_as_external_data=False)


def run_cache_check(sess, wrapper, cfg, shape, salt) -> float:
    """Max |onnxruntime - torch| over every output at ``shape``; raises on a mismatch."""
    args = cache_feeds(cfg, shape, salt)
    with torch.no_grad():
        ref = [t.detach().numpy() for t in wrapper(*args)]
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, dict(zip(names, (a.numpy() for a in args))))
    worst = 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape or not np.allclose(g, r, rtol=RTOL, atol=ATOL):
            raise RuntimeError(f"shape {shape}: mismatch (onnx {g.shape} vs torch {r.shape})")
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if g.size else 0.0)
    return worst


def export_cache_one(fam: Family, exporter: str, out_dir: Path, log) -> dict[str, Any]:
    """One with-cache export, verified against torch at CACHE_CHECKS (batch, seq, past)."""
    salt = list(FAMILIES).index(fam.name)
    name = f"{fam.name}_{exporter}_cache"
    path = out_dir / CACHE_SUBDIR / f"{fam.name}_{exporter}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    attempts = []
    for attn in ("sdpa", "eager"):
        t0, stage = time.time(), "build"
        try:
            model, cfg = build_model(fam, attn)
            wrapper = WithCache(model, cfg.num_hidden_layers).eval()
            stage = "export"
            sink = io.StringIO()
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    (export_cache_dynamo if exporter == "dynamo" else export_cache_legacy)(
                        wrapper, cache_feeds(cfg, CACHE_TRACE, salt), path)
            stage = "verify"
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise RuntimeError(f"{path.name} is {size} bytes > {MAX_FILE_BYTES}")
            onnx.checker.check_model(onnx.load(str(path)))
            sess = ort_session(path)
            diffs = {"x".join(map(str, s)): run_cache_check(sess, wrapper, cfg, s, salt) for s in CACHE_CHECKS}
        except Exception as e:  # noqa: BLE001
            attempts.append({"attn_implementation": attn, "stage": stage, "error": short_err(e)})
            log(f"    {name} attn={attn}: FAILED at {stage}: {short_err(e, 200)}")
            continue
        try:
            run_cache_check(sess, wrapper, cfg, CACHE_PROBE_PAST0, salt)
            past0 = True
        except Exception:  # noqa: BLE001
            past0 = False
        log(f"    {name} attn={attn}: ok in {time.time() - t0:.1f}s, max diff {max(diffs.values()):.2e}")
        info = describe(path)
        info["file"] = f"{CACHE_SUBDIR}/{path.name}"
        return dict(
            name=name, status="ok", family=fam.name, exporter=exporter, kv_cache=True,
            exporter_call=("torch.onnx.export(dynamo=True, optimize=True, external_data=False, default opset), "
                           "dynamic batch/seq/past" if exporter == "dynamo" else
                           f"torch.onnx.export(dynamo=False, opset_version={LEGACY_OPSET}, do_constant_folding=True), "
                           "dynamic_axes batch/seq/past"),
            hf_class=f"transformers.{fam.hf_class}", hf_output="logits + present key/values",
            wrapper="WithCache: DynamicCache(ddp_cache_data=past pairs) -> model(input_ids, cache=..., "
                    "use_cache=True) -> (logits, every layer's keys and values)",
            attn_implementation=attn, dynamic=True, dynamic_mode="batch+seq+past",
            dim_ranges={k: list(v) for k, v in CACHE_DIMS.items()}, works_at_past_len_0=past0,
            traced_shape=list(CACHE_TRACE), vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            num_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            max_position_embeddings=cfg.max_position_embeddings, seed=SEED, init=INIT_DESCRIPTION,
            config_overrides=fam.config, post_init=fam.post_init, notes=fam.notes,
            verified_with="onnxruntime CPUExecutionProvider, graph optimizations disabled; every output",
            verified_shapes=list(diffs), max_abs_diff=max(diffs.values()), max_abs_diff_by_shape=diffs,
            tolerance={"rtol": RTOL, "atol": ATOL}, versions=versions(),
            legacy_custom_symbolics=LEGACY_CUSTOM_SYMBOLICS if exporter == "legacy" else {},
            fallback_attempts=attempts, **info)
    return dict(name=name, status="failed", family=fam.name, exporter=exporter, kv_cache=True,
                hf_class=f"transformers.{fam.hf_class}", attempts=attempts)


def ort_session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- greedy tokens
# What transformers generates greedily from fixed prompt ids, so tests can compare xpuc's
# generation with transformers without torch: GREEDY_FILE in the output folder.

GREEDY_FILE = "greedy_tokens.json"
GREEDY_PROMPT = [5, 17, 101, 42, 230, 7]
GREEDY_NEW_TOKENS = 26  # prompt + new tokens = 32 positions
GREEDY_STATIC_TOTAL = PRIMARY_SHAPE[1]  # Mamba's export is unrolled for seq 16


def greedy_entry(fam: Family, out_dir: Path) -> dict[str, Any]:
    """transformers' generate (greedy, its own cache) checked against a no-cache torch loop and
    onnxruntime recomputing the whole sequence of the family's dynamo fixture."""
    model, cfg = build_model(fam, "sdpa" if fam.has_attention else None)
    static = not fam.has_attention  # Mamba: static seq 16, the generated sequence right-padded to it
    new_tokens = GREEDY_STATIC_TOTAL - len(GREEDY_PROMPT) if static else GREEDY_NEW_TOKENS
    prompt = torch.tensor([GREEDY_PROMPT])
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=0,
                                           eos_token_id=None, pad_token_id=0, bos_token_id=None)
    with torch.no_grad():
        generated = model.generate(prompt, generation_config=config)[0, len(GREEDY_PROMPT):].tolist()
        ids, margins = list(GREEDY_PROMPT), []
        for _ in range(new_tokens):  # the same greedy loop without a cache
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(logits)))
    if ids[len(GREEDY_PROMPT):] != generated:
        raise RuntimeError(f"{fam.name}: generate() and the no-cache loop disagree")
    sess, ort_ids = ort_session(out_dir / f"{fam.name}_dynamo.onnx"), list(GREEDY_PROMPT)
    for _ in range(new_tokens):
        feed = np.array([ort_ids + [0] * (GREEDY_STATIC_TOTAL - len(ort_ids) if static else 0)], np.int64)
        ort_ids.append(int(np.argmax(sess.run(None, {"input_ids": feed})[0][0, len(ort_ids) - 1])))
    if ort_ids != ids:
        raise RuntimeError(f"{fam.name}: onnxruntime on {fam.name}_dynamo.onnx generates {ort_ids}, torch {ids}")
    return dict(prompt_ids=GREEDY_PROMPT, max_new_tokens=new_tokens, tokens=generated,
                min_top2_margin=min(margins), static_seq=GREEDY_STATIC_TOTAL if static else None)


def write_greedy(out_dir: Path, families: list[str], log) -> None:
    path = out_dir / GREEDY_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    entries = data.get("families", {})
    for name in families:
        entries[name] = greedy_entry(FAMILIES[name], out_dir)
        log(f"[greedy {name}] {entries[name]['tokens']} (min top-2 margin {entries[name]['min_top2_margin']:.3f})")
    data = dict(
        description="Greedy tokens transformers generates for the prompt ids, per fixture family: "
                    "model.generate(do_sample=False, eos_token_id=None) on the model the fixtures were "
                    "exported from (same seed and weights). The same tokens come from a no-cache torch loop "
                    "and from onnxruntime recomputing the whole sequence with <family>_dynamo.onnx "
                    "(checked when this file is written). min_top2_margin: the smallest gap between the "
                    "best and second-best logit over the steps. static_seq: the export's fixed sequence "
                    "length, the prompt right-padded to it (causal, so padding does not change the "
                    "logits at earlier positions).",
        generator="scripts/export_fixtures.py --greedy",
        versions=versions(),
        families=dict(sorted(entries.items())),
    )
    path.write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {path}")


def versions() -> dict[str, str]:
    import onnxscript  # noqa: PLC0415

    return dict(
        python=sys.version.split()[0],
        torch=torch.__version__,
        transformers=transformers.__version__,
        onnx=onnx.__version__,
        onnxruntime=ort.__version__,
        onnxscript=onnxscript.__version__,
        numpy=np.__version__,
    )


def cached(family: str) -> bool:
    """Whether a family is also exported with a KV cache (the causal LMs with attention)."""
    fam = FAMILIES[family]
    return fam.has_attention and fam.output == "logits"


def all_jobs() -> list[tuple[str, str, bool]]:
    """(family, exporter, with cache) in manifest order."""
    return [(f, e, c) for c in (False, True) for f in FAMILIES for e in EXPORTERS if cached(f) or not c]


def job_name(family: str, exporter: str, cache: bool) -> str:
    return f"{family}_{exporter}_cache" if cache else f"{family}_{exporter}"


def select(only: str | None) -> list[tuple[str, str, bool]]:
    jobs = all_jobs()
    if not only:
        return jobs
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    unknown = wanted - set(FAMILIES) - {job_name(*j) for j in jobs} - set(EXPORTERS) - {"cache"}
    if unknown:
        raise SystemExit(f"--only: unknown name(s) {sorted(unknown)}; "
                         f"use a family {sorted(FAMILIES)}, an exporter {list(EXPORTERS)}, 'cache' "
                         f"or <family>_<exporter>[_cache]")
    return [(f, e, c) for f, e, c in jobs
            if f in wanted or e in wanted or job_name(f, e, c) in wanted or (c and "cache" in wanted)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/models", help="output directory (default: %(default)s)")
    ap.add_argument("--only", default=None,
                    help="comma-separated families (llama), exporters (dynamo), 'cache' (every with-cache "
                         "export) or fixtures (llama_legacy, llama_dynamo_cache)")
    ap.add_argument("--greedy", action="store_true",
                    help=f"only write {GREEDY_FILE} (no exports): transformers' greedy tokens for the selected "
                         "decoder families, checked against their dynamo fixtures")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--list", action="store_true", help="list fixtures and exit")
    args = ap.parse_args(argv)

    jobs = select(args.only)
    if args.list:
        for f, e, c in jobs:
            print(f"{job_name(f, e, c)}\t{FAMILIES[f].hf_class}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "MANIFEST.json"
    transformers.logging.set_verbosity_error()
    # "torchvision is not installed. Skipping torchvision::nms" etc. -- harmless noise.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.greedy:
        write_greedy(out_dir, [f for f in dict.fromkeys(f for f, _, _ in jobs) if FAMILIES[f].output == "logits"], log)
        return 0
    manifest: dict[str, Any] = {}
    if args.only and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    fixtures = {e["name"]: e for e in manifest.get("fixtures", [])}
    failures = {e["name"]: e for e in manifest.get("failures", [])}

    for fam_name, exporter, cache in jobs:
        name = job_name(fam_name, exporter, cache)
        log(f"[{name}]")
        t0 = time.time()
        try:
            entry = (export_cache_one if cache else export_one)(FAMILIES[fam_name], exporter, out_dir, log)
        except Exception as e:  # noqa: BLE001 -- never abort the whole run
            traceback.print_exc()
            entry = dict(name=name, status="failed", family=fam_name, exporter=exporter,
                         attempts=[{"stage": "driver", "error": short_err(e)}])
        fixtures.pop(name, None)
        failures.pop(name, None)
        if entry["status"] == "ok":
            fixtures[name] = entry
            log(f"  -> {entry['file']} {entry['size_bytes']} B, opset {entry['opset']}, "
                f"{entry['num_nodes']} nodes, dynamic={entry['dynamic_mode']}, attn={entry['attn_implementation']}, "
                f"max diff {entry['max_abs_diff']:.2e} ({time.time() - t0:.1f}s)")
        else:
            failures[name] = entry
            log(f"  -> FAILED: {entry['attempts'][-1]['error'][:300] if entry['attempts'] else '?'}")

    order = {job_name(*j): i for i, j in enumerate(all_jobs())}
    everything = len(jobs) == len(order)
    manifest = dict(
        schema_version=1,
        description="Tiny random-weight HF models exported to ONNX by scripts/export_fixtures.py. "
                    "Each fixture takes input_ids (int64 [batch, seq], values in [0, vocab_size)) and "
                    "returns one float32 tensor. Symbolic dims are named 'batch' and 'seq'; "
                    "static dims are integers (see dynamic_mode / traced_shape). Entries with kv_cache "
                    "(files under cache/) also take past_key_values.{i}.key/value [batch, kv_heads, past, "
                    "head_dim] and return present.{i}.key/value [batch, kv_heads, past + seq, head_dim] "
                    "after the logits; each records the library versions it was made with.",
        generator="scripts/export_fixtures.py",
        seed=SEED,
        versions=versions() if everything or not manifest.get("versions") else manifest["versions"],
        tolerance={"rtol": RTOL, "atol": ATOL},
        fixtures=sorted(fixtures.values(), key=lambda e: order.get(e["name"], 1 << 30)),
        failures=sorted(failures.values(), key=lambda e: order.get(e["name"], 1 << 30)),
    )
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    log(f"wrote {manifest_path} ({len(fixtures)} fixtures, {len(failures)} failures)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
