"""Sweep specs: which points to evaluate, read from a TOML file (docs/sweeps.md).

A spec names values for each axis of :data:`AXES`; the points are their grid (every
combination), with axes listed together in ``[sweep] zip`` taking their i-th values together,
or ``mode = "list"`` tying all of them (an explicit list of points). ``[[points]]`` tables
add points by hand: each fixes some axes and is crossed with the grid of the others.
``[variants.NAME]`` tables define hardware variants (``xpuc.sweep.variants``) that the
``target`` axis names like presets; ``[sweep] evaluator`` picks what a point measures
(``xpuc.sweep.evaluate.EVALUATORS``); ``[report]`` picks the Pareto metrics.

Every value is checked when the spec loads, so a typo fails before the first point runs:
an unknown axis or key, a model or target that does not exist, a variant key path the base
spec lacks, a number format xpuc does not have.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import backends
from backends.target import read_toml
from frontends import hf
from ir.formats import NAMES as FORMATS

from .errors import SweepSpecError
from .variants import Variant, derive

AXES = {
    "model": "a bundled config (`xpuc models`), a config.json or .onnx path, or {name, path, inputs}",
    "target": "a preset (`xpuc targets`), a target spec .toml path, or the name of a [variants] table",
    "precision": "a number format (docs/formats.md); default: the model's own",
    "deployment": "{chips, tp, pp}, any of them; default: what the scheduler chooses",
    "batch": "sequences per pass (default 1; the llm evaluator's default: the largest that fits)",
    "prompt_tokens": "tokens per sequence in the pass (default 128)",
    "output_tokens": "tokens generated per request (serving); default: none",
    "rate_per_s": "requests arriving per second (serving); default: none",
}
"""The axes a spec may name, and what their values are."""

DEFAULTS = {"precision": None, "deployment": None, "batch": 1, "prompt_tokens": 128, "output_tokens": None,
            "rate_per_s": None}
"""Values of the axes a spec leaves out (model and target have none: a spec must name them)."""

SHAPE_AXES = ("batch", "prompt_tokens")
"""Axes a model's input shapes may be written in (``inputs = {input_ids = ["batch", "prompt_tokens"]}``)."""
DEFAULT_INPUTS = {"input_ids": ("batch", "prompt_tokens")}
DEPLOYMENT_KEYS = ("chips", "tp", "pp")
TOP_LEVEL = ("axes", "points", "sweep", "variants", "report")


@dataclass(frozen=True)
class Deployment:
    chips: int | None = None
    tp: int | None = None
    pp: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A model axis value: ``kind`` is "config" (a preset name or config.json) or "onnx"."""

    name: str
    kind: str
    source: str
    inputs: tuple[tuple[str, tuple], ...]

    def input_shapes(self, point: "Point") -> dict[str, tuple[int, ...]]:
        """The shapes to bind at ``point``: axis names in ``inputs`` take the point's values."""
        return {name: tuple(getattr(point, d) if isinstance(d, str) else d for d in dims) for name, dims in self.inputs}


@dataclass(frozen=True)
class Point:
    """One point of a sweep: a value for every axis."""

    model: str
    target: str
    precision: str | None = None
    deployment: Deployment | None = None
    batch: int | None = 1
    """None: the evaluator picks (the llm evaluator: the largest batch that fits)."""
    prompt_tokens: int = 128
    output_tokens: int | None = None
    rate_per_s: float | None = None

    def columns(self) -> dict:
        """The point as flat result columns (a deployment as deploy_chips, deploy_tp, deploy_pp)."""
        row = {k: v for k, v in asdict(self).items() if k != "deployment"}
        d = self.deployment or Deployment()
        row.update({f"deploy_{k}": getattr(d, k) for k in DEPLOYMENT_KEYS})
        return row


COLUMNS = ["model", "target", "precision", "deploy_chips", "deploy_tp", "deploy_pp", "batch", "prompt_tokens",
           "output_tokens", "rate_per_s"]
"""The axis columns of a result row, in order (``Point.columns``)."""


@dataclass(frozen=True)
class ReportSpec:
    pareto: tuple[str, str]
    best: str
    limits: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepSpec:
    points: list[Point]
    models: dict[str, ModelEntry]
    targets: dict[str, backends.Target]
    bases: dict[str, str]
    """The preset or spec each target is (or is a variant of)."""
    report: ReportSpec
    evaluator: str = "schedule"
    """The name of what each point measures (``xpuc.sweep.evaluate.EVALUATORS``)."""
    origin: str = "<spec>"

    def point_id(self, point: Point) -> str:
        """A stable key for ``point`` (what ``--resume`` matches): its axis values and the
        definitions behind its model and target names, so an edited variant is a new point."""
        target = self.targets[point.target]
        text = json.dumps([point.columns(), asdict(self.models[point.model]), target.path,
                           {k: v for k, v in target.sources.items() if k == "sweep-variant"}],
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def load(path: str | Path, evaluators: Mapping[str, object]) -> SweepSpec:
    """Read and check a spec file; ``evaluators`` are what ``[sweep] evaluator`` may name, each
    with the ``metrics`` ``[report]`` may use and its default ``pareto`` pair."""
    path = Path(path)
    return parse(read_toml(path, SweepSpecError, "sweep spec"), evaluators, base_dir=path.parent, origin=str(path))


def parse(data: dict, evaluators: Mapping[str, object], base_dir: Path = Path("."),
          origin: str = "<spec>") -> SweepSpec:
    """Check a spec already read into a dict and expand its points."""
    try:
        return _Parser(data, evaluators, Path(base_dir), origin).spec()
    except SweepSpecError as exc:
        raise SweepSpecError(f"{origin}: {exc}") from None


class _Parser:
    def __init__(self, data: dict, evaluators: Mapping[str, object], base_dir: Path, origin: str):
        self.data, self.evaluators, self.base_dir, self.origin = data, evaluators, base_dir, origin
        self.models: dict[str, ModelEntry] = {}
        self.targets: dict[str, backends.Target] = {}
        self.bases: dict[str, str] = {}

    def spec(self) -> SweepSpec:
        _known(self.data, TOP_LEVEL, "top level")
        self.variants = self._variants(self.data.get("variants", {}))
        axes = self._table("axes")
        _known(axes, AXES, "[axes]", what="axis")
        options = self._table("sweep")
        _known(options, ("zip", "mode", "evaluator"), "[sweep]")
        name = options.get("evaluator", "schedule")
        if name not in self.evaluators:
            raise SweepSpecError(f"[sweep] evaluator must be one of {', '.join(map(repr, self.evaluators))}, "
                                 f"got {name!r}")
        self.evaluator = self.evaluators[name]
        mode = options.get("mode", "grid")
        if mode not in ("grid", "list"):
            raise SweepSpecError(f"[sweep] mode must be \"grid\" or \"list\", got {mode!r}")
        values = {axis: [self._value(axis, v) for v in _as_list(axes[axis], axis)] for axis in axes}
        groups = self._groups(values, options.get("zip", []), mode)
        points = []
        extra = self.data.get("points", [])
        if not isinstance(extra, list) or not all(isinstance(p, dict) for p in extra):
            raise SweepSpecError("[[points]] must be tables of axis values")
        for i, fixed in enumerate(extra or [{}]):
            _known(fixed, AXES, f"points[{i}]", what="axis")
            fixed = {axis: self._value(axis, v) for axis, v in fixed.items()}
            free = [[{a: v for a, v in zip(axes_, combo) if a not in fixed} for combo in combos]
                    for axes_, combos in groups if not set(axes_) <= set(fixed)]
            for parts in itertools.product(*free):
                point = {**DEFAULTS, **self.evaluator.defaults, **fixed}
                for part in parts:
                    point.update(part)
                for axis in ("model", "target"):
                    if axis not in point:
                        raise SweepSpecError(f"no {axis}: give [axes] {axis} = [...] or {axis} in every [[points]]")
                points.append(Point(**point))
        if not points:
            raise SweepSpecError("the spec has no points (an axis with no values?)")
        return SweepSpec(list(dict.fromkeys(points)), self.models, self.targets, self.bases, self._report(), name,
                         self.origin)

    def _table(self, key: str) -> dict:
        table = self.data.get(key, {})
        if not isinstance(table, dict):
            raise SweepSpecError(f"[{key}] must be a table")
        return table

    def _groups(self, values: dict[str, list], zips, mode: str) -> list[tuple[tuple[str, ...], list[tuple]]]:
        """Axes that vary together, each with its list of value tuples."""
        if mode == "list":
            zips = [[a for a in values if len(values[a]) > 1]]
        if not isinstance(zips, list) or not all(isinstance(z, list) for z in zips):
            raise SweepSpecError("[sweep] zip must be a list of lists of axis names, e.g. [[\"prompt_tokens\", "
                                 "\"output_tokens\"]]")
        tied = [a for z in zips for a in z]
        for axis in tied:
            if axis not in values:
                raise SweepSpecError(f"[sweep] zip names {axis!r}, which [axes] does not list")
        if len(set(tied)) != len(tied):
            raise SweepSpecError("[sweep] zip: an axis is tied in two groups")
        groups = []
        for z in zips:
            lengths = {a: len(values[a]) for a in z if len(values[a]) > 1}
            if len(set(lengths.values())) > 1:
                raise SweepSpecError("tied axes need as many values each: "
                                     + ", ".join(f"{a} has {n}" for a, n in lengths.items()))
            n = max([len(values[a]) for a in z], default=0)
            groups.append((tuple(z), [tuple(values[a][i % len(values[a])] for a in z) for i in range(n)]))
        groups += [((a,), [(v,) for v in values[a]]) for a in values if a not in tied]
        return groups

    def _value(self, axis: str, raw):
        return getattr(self, f"_{axis}")(raw)

    def _model(self, raw) -> str:
        if isinstance(raw, dict):
            _known(raw, ("name", "path", "inputs"), "a model table")
            if "path" not in raw:
                raise SweepSpecError(f"a model table needs path: {raw!r}")
            entry = self._model_entry(raw["path"], raw.get("name"), raw.get("inputs"))
        elif isinstance(raw, str):
            entry = self._model_entry(raw, None, None)
        else:
            raise SweepSpecError(f"model: expected a name, a path or a table, got {raw!r}")
        if self.models.setdefault(entry.name, entry) != entry:
            raise SweepSpecError(f"two different models are named {entry.name!r}: give one a name")
        return entry.name

    def _model_entry(self, text: str, name: str | None, inputs) -> ModelEntry:
        if not isinstance(text, str):
            raise SweepSpecError(f"model path must be text, got {text!r}")
        if text in hf.presets():
            kind, source = "config", text
        else:
            path = self.base_dir / text
            kinds = {".json": "config", ".onnx": "onnx"}
            if path.suffix not in kinds or not path.is_file():
                raise SweepSpecError(f"unknown model {text!r}: not a bundled config ({', '.join(hf.presets())}) "
                                     f"nor an existing .json or .onnx file")
            kind, source = kinds[path.suffix], str(path.resolve())
        return ModelEntry(name or text, kind, source, self._inputs(inputs, text))

    def _inputs(self, inputs, model: str) -> tuple[tuple[str, tuple], ...]:
        if inputs is None:
            inputs = DEFAULT_INPUTS
        if not isinstance(inputs, dict) or not inputs:
            raise SweepSpecError(f"model {model}: inputs must be a table of input name = [dims]")
        out = []
        for name, dims in inputs.items():
            ok = isinstance(dims, (list, tuple)) and all(
                d in SHAPE_AXES or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in dims)
            if not ok:
                raise SweepSpecError(f"model {model}: input {name} dims must be positive integers or "
                                     f"{' / '.join(map(repr, SHAPE_AXES))}, got {dims!r}")
            out.append((name, tuple(dims)))
        return tuple(out)

    def _target(self, raw) -> str:
        if not isinstance(raw, str):
            raise SweepSpecError(f"target: expected a name or a .toml path, got {raw!r}")
        if raw in self.targets:
            return raw
        if raw in self.variants:
            variant = self.variants[raw]
            self.targets[raw], self.bases[raw] = derive(variant, self.base_dir), variant.base
            return raw
        if raw.endswith(".toml"):
            target = _load_target(str(self.base_dir / raw))
        elif raw in backends.list_targets():
            target = _load_target(raw)
        else:
            raise SweepSpecError(f"unknown target {raw!r}: presets are {', '.join(backends.list_targets())}; "
                                 f"variants here: {', '.join(self.variants) or 'none'} (or give a .toml path)")
        self.targets[raw], self.bases[raw] = target, raw
        return raw

    def _variants(self, table) -> dict[str, Variant]:
        if not isinstance(table, dict):
            raise SweepSpecError("[variants] must be tables [variants.NAME]")
        out = {}
        for name, v in table.items():
            if not isinstance(v, dict):
                raise SweepSpecError(f"[variants.{name}] must be a table")
            _known(v, ("base", "scale", "set"), f"[variants.{name}]")
            if not isinstance(v.get("base"), str):
                raise SweepSpecError(f"[variants.{name}] needs base = a preset name or a .toml path")
            if v["base"] not in backends.list_targets() and not v["base"].endswith(".toml"):
                raise SweepSpecError(f"[variants.{name}]: unknown base {v['base']!r}; presets: "
                                     f"{', '.join(backends.list_targets())} (or a .toml path)")
            scale, set_ = v.get("scale", {}), v.get("set", {})
            if not isinstance(scale, dict) or not isinstance(set_, dict) or not (scale or set_):
                raise SweepSpecError(f"[variants.{name}] needs scale and/or set tables of key path = number")
            out[name] = Variant(name, v["base"], dict(scale), dict(set_))
        return out

    def _precision(self, raw) -> str:
        if raw not in FORMATS:
            raise SweepSpecError(f"unknown precision {raw!r}; formats: {', '.join(FORMATS)}")
        return raw

    def _deployment(self, raw) -> Deployment:
        if not isinstance(raw, dict) or not raw:
            raise SweepSpecError(f"deployment: expected a table such as {{chips = 8, tp = 8, pp = 1}}, got {raw!r}")
        _known(raw, DEPLOYMENT_KEYS, "a deployment")
        for k, v in raw.items():
            _positive_int(v, f"deployment {k}")
        d = Deployment(**raw)
        if None not in (d.chips, d.tp, d.pp) and d.tp * d.pp != d.chips:
            raise SweepSpecError(f"deployment {raw}: chips must be tp x pp")
        return d

    def _batch(self, raw) -> int:
        return _positive_int(raw, "batch")

    def _prompt_tokens(self, raw) -> int:
        return _positive_int(raw, "prompt_tokens")

    def _output_tokens(self, raw) -> int:
        return _positive_int(raw, "output_tokens")

    def _rate_per_s(self, raw) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw <= 0:
            raise SweepSpecError(f"rate_per_s must be a finite number > 0, got {raw!r}")
        return float(raw)

    def _report(self) -> ReportSpec:
        table = self._table("report")
        _known(table, ("pareto", "best", "limits"), "[report]")
        pareto = table.get("pareto", list(self.evaluator.pareto))
        if not isinstance(pareto, list) or len(pareto) != 2:
            raise SweepSpecError(f"[report] pareto must name two metrics, got {pareto!r}")
        best = table.get("best", pareto[1])
        limits = table.get("limits", {})
        if not isinstance(limits, dict):
            raise SweepSpecError("[report] limits must be a table of metric = bound")
        for name in [*pareto, best, *limits]:
            direction(self.evaluator.metrics, name)
        for name, bound in limits.items():
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise SweepSpecError(f"[report] limits: {name} must be a number, got {bound!r}")
        return ReportSpec(tuple(pareto), best, dict(limits))


def direction(metrics: Mapping[str, object], name: str) -> float:
    """1 if lower is better for metric ``name``, -1 if higher is; an error for a name that is not
    a metric with a direction (a label such as ``bound``, or a typo)."""
    metric = metrics.get(name)
    if getattr(metric, "better", None) not in ("lower", "higher"):
        known = ", ".join(k for k, m in metrics.items() if getattr(m, "better", None))
        raise SweepSpecError(f"{name!r} is not a metric with a better direction; these are: {known}")
    return 1.0 if metric.better == "lower" else -1.0


def _load_target(name: str) -> backends.Target:
    try:
        return backends.load_target(name)
    except backends.TargetSpecError as exc:
        raise SweepSpecError(str(exc)) from None


def _as_list(raw, axis: str) -> list:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise SweepSpecError(f"axis {axis} has no values")
    return values


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SweepSpecError(f"{what} must be a positive integer, got {v!r}")
    return v


def _known(table: dict, known, where: str, what: str = "key") -> None:
    unknown = [k for k in table if k not in known]
    if unknown:
        raise SweepSpecError(f"{where}: unknown {what}(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
