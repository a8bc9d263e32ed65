"""Predict the published measurements in benchmarks/validation/measurements.csv and compare.

Each in-scope row is predicted by the serving analysis that ``xpuc llm --json`` prints
(``backends.llm.analysis``, where the prefill chunks, the decode step at the mean context,
the deployment and the largest batch that fits are defined): the model from its Hugging
Face preset, weightless, at the row's precision, on the row's hardware preset with the
row's deployment (chips, tp, pp; the smallest that fits when unpublished). Per metric, the
report's field of the same name (``samples_per_s``: ``requests_per_s``), with:

- the row's batch; where unpublished, 1 for ``ttft_s``, ``tpot_s`` and
  ``tokens_per_s_per_user``, and for throughputs and ``latency_s`` (in-flight batching) the
  largest batch whose KV cache fits, at most ``analysis.MAX_BATCH``;
- the row's lengths; per-user decode speeds published without them take
  :data:`DEFAULT_CONTEXT`.

This script keeps only what is about the measurements: scope, split, fit and reporting.

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
from backends.llm import analysis  # noqa: E402
from frontends import hf  # noqa: E402
from ir.errors import XpucError  # noqa: E402
from validation.loader import Measurement, load  # noqa: E402
from xpuc.analysis import costs_of  # noqa: E402

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
SIXTEEN_BIT = {"16bit": "fp16"}
"""Published precisions under another name: "16bit" is unnamed, taken as fp16, which every preset runs."""
REPORTED = {"samples_per_s": "requests_per_s"}
"""Published metric -> the serving analysis's field, where the names differ."""


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


# ---------------------------------------------------------------------------------- predicting
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
    return Setup(row.model, row.hardware, SIXTEEN_BIT.get(precision, precision), chips, tp,
                 row.pp if tp is not None else None)


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
def costs(s: Setup, overrides: tuple) -> analysis.Costs:
    """The setup's schedules, memoized across its rows (and across fit trials with the same overrides)."""
    return costs_of(s.model, target(s.target, overrides), s.precision, s.chips, s.tp, s.pp)


def predict(row: Measurement, overrides: tuple = ()) -> float:
    """The row's metric from the serving analysis ``xpuc llm --json`` prints (``backends.llm.analysis``)."""
    inputs, outputs = row.input_len, row.output_len
    if row.metric in DECODE:
        inputs, outputs = inputs or DEFAULT_CONTEXT[0], outputs or DEFAULT_CONTEXT[1]
    batch = row.batch or (None if row.metric in THROUGHPUT | {"latency_s"} else 1)
    report = analysis.report(costs(setup_of(row), overrides), batch, inputs, outputs)
    return getattr(report, REPORTED.get(row.metric, row.metric))


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
    ("a100-80gb",): [("engines.tensor.efficiency", (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.92)),
                     ("memory.hbm.efficiency", (0.7, 0.75, 0.8, 0.85, 0.9, 0.95))],
    ("groq-lpu",): [("interconnect.latency_s", (1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6, 8e-6, 9e-6, 10e-6))],
    ("cerebras-wse3",): [("sync_s", (1.0e-6, 1.25e-6, 1.5e-6, 1.73e-6, 2.0e-6, 2.25e-6, 2.5e-6, 3.0e-6))],
}
"""Presets sharing the factors -> [(spec path, candidate values)]: what ``--fit`` searches, one
factor at a time. The H100 and H200 share a die and a software stack, so one pair of
efficiencies is fitted to both; the A100 gets its own pair. These are serving efficiencies:
the A100's isolated GEMMs reach more (``calibration.matrix_efficiency``, fitted to its
measured GEMMs in shared/calibration, tests/test_calibration.py)."""


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
