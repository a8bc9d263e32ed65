"""Predict the published measurements in benchmarks/validation/measurements.csv and compare.

Each in-scope row is rebuilt with the project's own builders: the model from its Hugging Face
preset (``frontends.hf``), weightless, at the row's precision; prefill as one graph per chunk
of prompts; decode as one step whose attention reads a KV cache of the row's context; both
scheduled by ``backends.schedule`` on the row's hardware preset with the row's deployment
(chips, tp, pp; the smallest that fits when unpublished). Then, per metric:

- ``ttft_s``: the prefill of the row's batch (1 when unpublished) of ``input_len`` tokens;
- ``tpot_s``, ``tokens_per_s_per_user``: one decode step at the row's batch and mean context
  (``input_len`` + ``output_len`` / 2);
- ``tokens_per_s[_per_chip|_total]``, ``samples_per_s``, ``latency_s``: a generation of
  ``output_len`` tokens for the batch: prefill + (output_len - 1) decode steps at the mean
  context (exact while a step's cost grows linearly with context). Throughput takes the
  deployment's steady-state period (pipeline stages overlapped), latency the single pass.
  Where the source ran in-flight batching without saying its batch, the batch is the
  largest whose KV cache fits the memory left on a chip (``backends.deployment``), at most
  :data:`MAX_BATCH`.

Prefill runs in chunks of at most :data:`PREFILL_TOKENS` prompt tokens (TensorRT-LLM's and
vLLM's default token budget per step), one graph per chunk size.

Scope (:func:`out_of_scope`, decided before any prediction and printed with the reason):
hardware and model need presets; rows need their lengths (per-user decode speeds may omit
them: :data:`DEFAULT_CONTEXT` is assumed, the speed barely depends on it); variable-length
benchmark datasets (MLPerf), serving under load and public-API first-token or end-to-end
times (client network inside) are out. Precision "unknown" takes the stated
:data:`ASSUMED_PRECISION` of the hardware's serving stack.

Split (:func:`split`), fixed up front: within each hardware preset, in-scope rows ordered by
the SHA-256 of their id alternate fit, held out, fit, ... Only fit rows may inform the
fitted factors in the presets (each says which rows and figure it was fitted to); held-out
rows only test. ``--fit`` searches the factors listed in :data:`FACTORS` on fit rows alone
and prints the values to write into the presets; without it the presets are used as they are.

Run: .venv/bin/python benchmarks/validate.py [--rows SUBSTRING] [--markdown] [--fit]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402
from frontends import hf  # noqa: E402
from ir.errors import XpucError  # noqa: E402
from ir.passes import optimize  # noqa: E402
from ir.passes.shape_inference import infer_shapes  # noqa: E402
from ir.types import TensorType  # noqa: E402
from validation.loader import Measurement, load  # noqa: E402

PREFILL_TOKENS = 8192
MAX_BATCH = 1024
"""Largest in-flight batch assumed where the source does not publish one (TensorRT-LLM's
perf-overview builds engines with max_batch_size up to 1024-4096; KV memory binds first for
every in-scope row but the shortest)."""
DEFAULT_CONTEXT = (128, 256)
"""(input_len, output_len) assumed for per-user decode speeds published without lengths."""
ASSUMED_PRECISION = {
    "groq-lpu": ("int8", "8-bit weights: the ~570 chips reported for Llama-2-70B hold 131 GB, less than its "
                         "138 GB in 16 bits (benchmarks/validation/hardware_facts.md), and GroqChip 1 has no fp8"),
    "cerebras-wse3": ("16bit", "Cerebras serves 16-bit weights (hardware_facts.md [CB-INF])"),
}
THROUGHPUT = {"tokens_per_s", "tokens_per_s_per_chip", "tokens_per_s_total", "samples_per_s"}
DECODE = {"tpot_s", "tokens_per_s_per_user"}
METRICS = THROUGHPUT | DECODE | {"ttft_s", "latency_s"}
SIXTEEN_BIT = {"fp16": "float16", "bf16": "bfloat16", "16bit": "float16"}
"""Graph element type per published 16-bit precision ("16bit": unnamed, taken as fp16, which every preset runs);
other precisions are the cost model's policy (``backends.precision``) over the model's own graph."""


# ------------------------------------------------------------------------------ scope and split
def out_of_scope(row: Measurement) -> str | None:
    """Why a row is not predicted, or None."""
    if row.hardware not in backends.list_targets():
        return f"no preset for {row.hardware}"
    if row.model not in hf.presets():
        return f"no preset for {row.model}"
    if row.metric not in METRICS:
        return f"metric {row.metric} not predicted"
    if "MLPerf" in row.scenario or "MLPerf" in row.framework:
        return "variable-length benchmark dataset (MLPerf)"
    public = row.scenario.startswith("public API")
    if public and (row.metric in ("ttft_s", "latency_s") or "includes TTFT" in row.notes):
        return "public-API time includes the client's network"
    if row.precision == "unknown" and row.hardware not in ASSUMED_PRECISION:
        return "precision unknown"
    if (row.input_len is None or row.output_len is None) and row.metric not in DECODE:
        return "lengths not published"
    if row.metric in THROUGHPUT and row.batch is None and "in-flight" not in row.framework + row.scenario \
            and "offline" not in row.scenario:
        return "batch not published"
    return None


def split(rows: list[Measurement]) -> dict[str, str]:
    """id -> "fit" or "held out": per hardware, by the SHA-256 of the id, alternating."""
    roles = {}
    for hardware in sorted({r.hardware for r in rows}):
        mine = sorted((r for r in rows if r.hardware == hardware),
                      key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
        roles.update({r.id: "fit" if i % 2 == 0 else "held out" for i, r in enumerate(mine)})
    return roles


# ----------------------------------------------------------------------------------- building
@dataclass(frozen=True)
class Setup:
    """What a row's prediction is built from."""

    model: str
    target: str
    precision: str
    chips: int | None
    tp: int | None
    pp: int | None


def setup_of(row: Measurement) -> Setup:
    precision = row.precision if row.precision != "unknown" else ASSUMED_PRECISION[row.hardware][0]
    chips = row.chips
    tp = row.tp if row.hardware != "inferentia2" or row.tp is None else row.tp // 2  # published in NeuronCores
    if tp is not None and row.pp is not None and chips is not None and tp * row.pp != chips:
        tp = None
    return Setup(row.model, row.hardware, precision, chips, tp, row.pp if tp is not None else None)


@functools.lru_cache(maxsize=None)
def graph(model: str, precision: str, batch: int, seq: int, past: int) -> "ir.Graph":  # noqa: F821
    """The model's graph for ``batch`` x ``seq`` new tokens after a KV cache of ``past`` tokens, in
    the row's 16-bit type (other precisions: the model's own, the policy stores it as asked)."""
    g = hf.load(model, input_shapes={"input_ids": f"{batch}x{seq}"}, dtype=SIXTEEN_BIT.get(precision))
    if past:
        g = with_kv_cache(g, past)
    return optimize(g)


def with_kv_cache(g, past: int):
    """Every Attention also reads a past key and value cache of ``past`` tokens (graph inputs in
    the layout ONNX's Attention takes: batch x kv heads x past x head dim)."""
    for node in [n for n in g.nodes if n.op_type == "Attention"]:
        k = g.values[node.inputs[1]].type
        heads = node.attrs["kv_num_heads"]
        batch, _, width = k.shape
        for index, role in ((4, "past_key"), (5, "past_value")):
            name = g.fresh_name(f"{node.name}.{role}")
            g.add_input(name, TensorType(k.dtype, (batch, heads, past, width // heads)))
            g.set_input(node, index, name)
    return infer_shapes(g)


@functools.lru_cache(maxsize=None)
def target(name: str, overrides: tuple = ()) -> backends.Target:
    t = backends.load_target(name)
    for path, value in overrides:
        apply(t, path, value)
    return t


def field_of(t, path: str) -> tuple[object, str]:
    """(object, attribute) a dotted spec path names on a loaded target: ``engines.tensor.efficiency``,
    ``memory.hbm.efficiency``, ``interconnect.latency_s``, ``sync_s``."""
    *head, key = path.split(".")
    obj = t if not head else t.engines[head[1]] if head[0] == "engines" else t.level(head[1]) \
        if head[0] == "memory" else getattr(t, head[0])
    return obj, key


def apply(t, path: str, value: float) -> None:
    setattr(*field_of(t, path), value)


@functools.lru_cache(maxsize=None)
def scheduled(s: Setup, overrides: tuple, batch: int, seq: int, past: int):
    g = graph(s.model, s.precision, batch, seq, past)
    policy = "native" if s.precision in SIXTEEN_BIT else s.precision
    return backends.schedule(g, target(s.target, overrides), precision=policy, chips=s.chips, tp=s.tp, pp=s.pp)


# --------------------------------------------------------------------------------- predicting
def predict(row: Measurement, overrides: tuple = ()) -> float:
    s = setup_of(row)
    if row.metric in DECODE:
        inputs, outputs = row.input_len or DEFAULT_CONTEXT[0], row.output_len or DEFAULT_CONTEXT[1]
        step = scheduled(s, overrides, row.batch or 1, 1, inputs + outputs // 2).latency_s
        return step if row.metric == "tpot_s" else 1 / step
    inputs, outputs = row.input_len, row.output_len
    if row.metric == "ttft_s":
        return prefill_s(s, overrides, row.batch or 1, inputs, latency=True)
    batch = row.batch or largest_batch(s, overrides, inputs + outputs)
    decode = scheduled(s, overrides, batch, 1, inputs + outputs // 2)
    step = decode.latency_s if row.metric == "latency_s" else decode.steady.period_s
    total = prefill_s(s, overrides, batch, inputs, latency=row.metric == "latency_s") + (outputs - 1) * step
    chips = decode.chips
    return {"latency_s": total, "tokens_per_s": batch * outputs / total,
            "tokens_per_s_per_chip": batch * outputs / total / chips,
            "tokens_per_s_total": batch * (inputs + outputs) / total, "samples_per_s": batch / total}[row.metric]


def prefill_s(s: Setup, overrides: tuple, batch: int, inputs: int, latency: bool) -> float:
    """Prefill of ``batch`` prompts in chunks of at most PREFILL_TOKENS tokens (whole prompts)."""
    per_chunk = max(1, min(batch, PREFILL_TOKENS // inputs))
    full, rest = divmod(batch, per_chunk)
    total = 0.0
    for size, count in ((per_chunk, full), (rest, 1)):
        if size and count:
            plan = scheduled(s, overrides, size, inputs, 0)
            total += (plan.latency_s if latency and count == 1 else plan.steady.period_s * (count - 1)
                      + plan.latency_s)
    return total


def largest_batch(s: Setup, overrides: tuple, context: int) -> int:
    """The most sequences of ``context`` tokens whose KV cache fits the fullest chip's free memory."""
    one = scheduled(s, overrides, 1, 1, context - 1)
    per_sequence = max(m.kv for m in one.memory)
    room = min(m.free + m.kv for m in one.memory)
    return max(1, min(MAX_BATCH, int(room // per_sequence)))


# ---------------------------------------------------------------------------------- reporting
LOWER_BOUNDS = ("more than", "above", "at least")


def error(predicted: float, row: Measurement) -> float:
    """Relative error; a figure published as a lower bound ("more than 100") is met by any
    prediction at or above it."""
    e = predicted / row.value - 1
    return min(e, 0.0) if row.value_as_published.lower().startswith(LOWER_BOUNDS) else e


def run(rows: list[Measurement], overrides_of=lambda row: ()) -> list[tuple[Measurement, float | str]]:
    out = []
    for row in rows:
        try:
            out.append((row, predict(row, overrides_of(row))))
        except XpucError as exc:
            out.append((row, f"error: {exc}"))
    return out


def summary(results, roles: dict[str, str], role: str, hardware: str | None = None) -> str:
    mine = [(r, p) for r, p in results if roles[r.id] == role and hardware in (None, r.hardware)]
    errors = [abs(error(p, r)) for r, p in mine if not isinstance(p, str)]
    failed = sum(1 for _, p in mine if isinstance(p, str))
    label = f"{hardware} {role}" if hardware else role
    if not errors:
        return f"{label}: no predictions" + (f", not predicted: {failed}" if failed else "")
    return (f"{label}: {len(errors)} rows, median |error| {statistics.median(errors):.1%}, worst {max(errors):.1%}, "
            f"over 40%: {sum(e > 0.4 for e in errors)}" + (f", not predicted: {failed}" if failed else ""))


def table(results, roles: dict[str, str], markdown: bool) -> str:
    head = ("id", "hardware", "model", "prec", "metric", "measured", "predicted", "error", "role")
    lines = []
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, p in results:
        cells = (r.id, r.hardware, r.model, r.precision, r.metric, f"{r.value:.4g}",
                 p if isinstance(p, str) else f"{p:.4g}", "" if isinstance(p, str) else f"{error(p, r):+.1%}",
                 roles[r.id])
        lines.append("| " + " | ".join(cells) + " |" if markdown else
                     f"{cells[0]:44} {cells[1]:13} {cells[2]:14} {cells[3]:7} {cells[4]:22} {cells[5]:>10} "
                     f"{cells[6]:>10} {cells[7]:>8} {cells[8]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- fit
FACTORS = {
    ("h100-sxm", "h200"): [("engines.tensor.efficiency", (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.95)),
                           ("memory.hbm.efficiency", (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95))],
    ("groq-lpu",): [("interconnect.latency_s", (1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6, 8e-6, 9e-6, 10e-6))],
    ("cerebras-wse3",): [("sync_s", (1.0e-6, 1.25e-6, 1.5e-6, 1.73e-6, 2.0e-6, 2.25e-6, 2.5e-6, 3.0e-6))],
}
"""Presets sharing the factors -> [(spec path, candidate values)]: what ``--fit`` searches, one
factor at a time. The H100 and H200 share a die and a software stack, so one pair of
efficiencies is fitted to both; the A100's stay fitted to its measured GEMMs
(shared/calibration, tests/test_calibration.py), so every A100 row only tests."""


FLAT = 0.005
"""Median |log error| within which candidates count as equally good (half a percent)."""


def fit(rows: list[Measurement], roles: dict[str, str]) -> dict[tuple[str, ...], dict[str, float]]:
    """Per group of presets, each factor in turn: the candidate with the least median |log error|
    over the group's fit rows (the median, so that a row a mechanism the model lacks gets wrong,
    such as Mixtral's routing, does not drag a physical factor); where candidates score within
    :data:`FLAT` of the best, the data do not decide, and the preset's own value (or the
    candidate nearest it) stays."""
    chosen: dict[tuple[str, ...], dict[str, float]] = {}
    for presets, factors in FACTORS.items():
        mine = [r for r in rows if r.hardware in presets and roles[r.id] == "fit"]
        best: dict[str, float] = {}
        for path, candidates in factors:
            scores = {}
            for value in candidates:
                trial = tuple(sorted({**best, path: value}.items()))
                logs = [abs(math.log(1 + error(p, r))) for r, p in run(mine, lambda row: trial)
                        if not isinstance(p, str)]
                scores[value] = statistics.median(logs) if logs else math.inf
            least = min(scores.values())
            current = getattr(*field_of(target(presets[0]), path))
            best[path] = min((v for v, score in scores.items() if score <= least + FLAT),
                             key=lambda v: abs(v - current))
            print(f"{'+'.join(presets)} {path}: " + ", ".join(f"{v:g} -> {s:.3f}" for v, s in scores.items()),
                  flush=True)
        chosen[presets] = best
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="", help="only rows whose id contains this")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for BENCHMARKS.md)")
    parser.add_argument("--fit", action="store_true", help="search FACTORS on the fit rows and print them")
    args = parser.parse_args()
    every = load()
    scoped = [r for r in every if out_of_scope(r) is None]
    roles = split(scoped)
    start = time.perf_counter()
    if args.fit:
        print(fit(scoped, roles))
        return
    rows = [r for r in scoped if args.rows in r.id]
    results = run(rows)
    print(table(results, roles, args.markdown))
    print()
    for role in ("fit", "held out"):
        print(summary(results, roles, role))
    for hardware in sorted({r.hardware for r in rows}):
        print("  " + "; ".join(summary(results, roles, role, hardware) for role in ("fit", "held out")))
    print(f"{len(scoped)} of {len(every)} rows in scope; {time.perf_counter() - start:.0f} s")
    reasons: dict[str, int] = {}
    for r in every:
        why = out_of_scope(r)
        if why:
            reasons[why] = reasons.get(why, 0) + 1
    print("out of scope: " + "; ".join(f"{why} ({n})" for why, n in sorted(reasons.items(), key=lambda x: -x[1])))


if __name__ == "__main__":
    main()
