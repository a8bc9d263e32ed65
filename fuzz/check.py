"""The differential checks one program goes through, against onnxruntime as the oracle.

1. ``outputs``: ``runtime.compile`` (emulating the case's target, if any, in the host's
   float32 numerics) and ``run`` give onnxruntime's outputs: same dtypes and shapes, values
   within the dtype's tolerance.
2. ``roundtrip``: ``ir.passes.optimize`` then ``ir.to_onnx``, run by onnxruntime, gives the
   same outputs too (so every rewrite is checked apart from code generation).
3. ``schedule``: the optimized graph with the feeds' shapes schedules on one preset of each
   family without an exception, and every number in the schedule is finite and non-negative.
4. ``cost``: the emulated run's ``last_cost`` equals the analytic schedule, record for record.

Each failure is a :class:`Failure`; ``crash`` marks an exception that is not an
``XpucError`` (a refusal with a clear message is a finding too, but a different one).
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

import backends
import ir
import runtime
from backends.codegen import value_inputs
from frontends import onnx as onnx_frontend
from ir.errors import XpucError
from ir.passes import optimize

from .generate import TARGETS, Case

TOLERANCE = {np.dtype(np.float32): (1e-3, 1e-4), np.dtype(np.float16): (2e-2, 1e-2),
             np.dtype(np.float64): (1e-7, 1e-9)}
"""(rtol, atol) per float dtype; atol is relative to the largest expected magnitude (at least 1)."""


class OracleError(Exception):
    """onnxruntime cannot run the program (an op or type its CPU kernels lack): not a finding."""


@dataclass(frozen=True)
class Failure:
    check: str
    detail: str
    crash: bool = False
    cause: str = ""
    """For an exception: its type (and, for a crash, where it was raised)."""

    @property
    def kind(self) -> str:
        """What minimization must preserve: the check, and for an exception its cause."""
        return f"{self.check}:{self.cause}" if self.cause else self.check

    def __str__(self) -> str:
        return f"{self.check}{' (crash)' if self.crash else ''}: {self.detail}"


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list:
    try:
        return session(model).run(outputs, feeds)
    except Exception as exc:  # onnxruntime's errors have no common base class
        raise OracleError(f"onnxruntime: {str(exc).splitlines()[0][:300]}") from None


def check(case: Case, *, targets=TARGETS) -> list[Failure]:
    expected = reference(case.model, case.feeds)
    shapes = {name: array.shape for name, array in case.feeds.items()}
    failures: list[Failure] = []

    compiled = _attempt(failures, "outputs",
                        lambda: runtime.compile(case.model, case.target, input_shapes=shapes if case.bind else None,
                                                host_numerics=True))
    got = _attempt(failures, "outputs", lambda: compiled.run(case.feeds)) if compiled else None
    if got is not None:
        _compare(failures, "outputs", got, expected)

    graph = _attempt(failures, "roundtrip", lambda: optimize(
        onnx_frontend.load(case.model, input_shapes=shapes if case.bind else None)))
    if graph is not None:
        exported = _attempt(failures, "roundtrip", lambda: ir.to_onnx(graph))
        if exported is not None:
            try:
                _compare(failures, "roundtrip", reference(exported, case.feeds), expected)
            except OracleError as exc:
                failures.append(Failure("roundtrip", f"the exported model does not run: {exc}"))

    static = graph if case.bind else _attempt(
        failures, "schedule", lambda: optimize(onnx_frontend.load(case.model, input_shapes=shapes)))
    if static is not None and value_inputs(static):
        # inputs that decide shapes are compiled as constants per value: schedule that graph
        # (the scheduler refuses shapes known only as the model runs); none if it did not compile
        static = compiled._last.graph if got is not None else None
    if static is not None:
        for name in targets:
            plan = _attempt(failures, "schedule", lambda: backends.schedule(static, backends.load_target(name)))
            if plan is not None:
                failures += [Failure("schedule", f"{name}: {p}") for p in problems(plan)]
    if static is not None and got is not None and case.target != "cpu":
        analytic = _attempt(failures, "cost", lambda: backends.schedule(static, backends.load_target(case.target)))
        difference = analytic and schedule_difference(compiled.last_cost, analytic)
        if difference:
            failures.append(Failure("cost", f"{case.target}: emulated != analytic: {difference}"))
    return failures


def _attempt(failures: list[Failure], check: str, fn):
    """``fn()``, or None with the exception recorded as a failure of ``check``."""
    try:
        return fn()
    except XpucError as exc:
        failures.append(Failure(check, f"{type(exc).__name__}: {exc}", cause=type(exc).__name__))
    except Exception as exc:  # anything else escaping xpuc is a crash: where it came from matters
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        place = f"{frame.filename.rsplit('/', 2)[-2]}/{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
        cause = f"{type(exc).__name__} at {place}"
        failures.append(Failure(check, f"{cause}: {str(exc)[:300]}", crash=True, cause=cause))
    return None


def _compare(failures: list[Failure], check: str, got: list, expected: list) -> None:
    if len(got) != len(expected):
        failures.append(Failure(check, f"{len(got)} outputs, expected {len(expected)}"))
        return
    for i, (g, e) in enumerate(zip(got, expected)):
        problem = difference(np.asarray(g), np.asarray(e))
        if problem:
            failures.append(Failure(check, f"output {i}: {problem}"))


def difference(got: np.ndarray, want: np.ndarray) -> str | None:
    """Why ``got`` is not ``want`` (None if it is, within the dtype's tolerance)."""
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if want.dtype.kind != "f":
        bad = got != want
    else:
        rtol, atol = TOLERANCE[want.dtype]
        finite = np.abs(want[np.isfinite(want)].astype(np.float64))
        scale = max(1.0, float(finite.max()) if finite.size else 1.0)
        bad = ~np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol * scale,
                          equal_nan=True)
    if not bad.any():
        return None
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{int(bad.sum())} of {bad.size} elements differ, e.g. at {where}: {got[where]!r}, expected {want[where]!r}"


def problems(plan) -> list[str]:
    """Numbers in a schedule that are not finite and non-negative."""
    found = []

    def expect(what: str, value) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            found.append(f"{what} = {value!r}")

    for key in ("latency_s", "energy_j", "cost_usd"):
        expect(key, getattr(plan, key))
    if not isinstance(plan.chips, int) or plan.chips < 1:
        found.append(f"chips = {plan.chips!r}")
    for engine, value in plan.utilization.items():
        expect(f"utilization[{engine}]", value)
    for level, value in plan.peak_memory.items():
        expect(f"peak_memory[{level}]", value)
    for op in plan.ops:
        for key in ("start_s", "duration_s", "flops", "utilization"):
            expect(f"{op.name}.{key}", getattr(op, key))
        for level, value in op.bytes.items():
            expect(f"{op.name}.bytes[{level}]", value)
    return found


def schedule_difference(emulated, analytic) -> str | None:
    if emulated is None:
        return "no emulated cost"
    if len(emulated.ops) != len(analytic.ops):
        return f"{len(emulated.ops)} op records, analytic has {len(analytic.ops)}"
    for e, a in zip(emulated.ops, analytic.ops):
        if e != a:
            return f"{e} != {a}"
    for key in ("latency_s", "energy_j", "cost_usd", "chips", "utilization", "peak_memory"):
        if getattr(emulated, key) != getattr(analytic, key):
            return f"{key}: {getattr(emulated, key)} != {getattr(analytic, key)}"
    return None
