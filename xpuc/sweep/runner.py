"""Running a sweep on Dask distributed: prepare each model once, scatter it, evaluate points in batches.

The client (this process) expands the spec, skips the points the output already holds,
and groups the rest by the axes the evaluator prepares a model for (``prepared_by``). For
each group it prepares the model (import, optimize, quantize) once, scatters it to every
worker (``broadcast``: workers need no access to the model's files), and submits tasks of
several points each, so the scheduler's cost per task is spread over many points. Rows are
written as each task finishes, one Parquet part per task (``store``).

Failures: a point that raises (does not fit, unsupported) is a row with its ``error``; a
task whose worker dies is rerun elsewhere by the scheduler (``distributed.scheduler.
allowed-failures``), and one that raises outside the evaluator is retried (``retries``);
a task that still fails gives error rows for its points, so every point gets its row.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .errors import SweepError
from .evaluate import EVALUATORS, Evaluator, unused_axes
from .spec import Point, SweepSpec, load
from .store import ResultStore, read, schema

TASKS_PER_WORKER = 4
"""Tasks per worker a sweep aims for: enough to balance uneven points, few enough that
per-task scheduling stays small against the points' own work."""
MAX_POINTS_PER_TASK = 256
RETRIES = 2
CONNECT_TIMEOUT_S = 30


@dataclass
class SweepResult:
    output: Path
    spec: SweepSpec
    evaluator: Evaluator
    ran: int
    skipped: int
    """Points the output already held (``resume``)."""
    rows: list[dict] = field(repr=False)
    """Every row of this spec's points in the output, old and new."""

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["error"] is not None]


def run(spec: SweepSpec | str | Path, output: str | Path, *, scheduler: str | None = None, workers: int | None = None,
        resume: bool = False, evaluator: Evaluator | None = None, progress: bool = True,
        points_per_task: int | None = None) -> SweepResult:
    """Evaluate every point of ``spec`` and stream its rows to the Parquet folder ``output``.

    scheduler: address of a running Dask scheduler (``tcp://HOST:PORT``); default: a local
        cluster of ``workers`` processes (default: one per core), closed at the end.
    resume: continue into an output that already holds rows, skipping their points.
    evaluator: what each point measures; default: the one the spec names (``[sweep] evaluator``)."""
    if isinstance(spec, (str, Path)):
        spec = load(spec, EVALUATORS)
    evaluator = evaluator or EVALUATORS[spec.evaluator]
    if scheduler and workers:
        raise SweepError("--workers sizes the local cluster; a cluster given by --scheduler has its own workers")
    if workers is not None and workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers}")
    store = ResultStore(output, schema(evaluator.metrics), resume)
    ids = {p: spec.point_id(p) for p in spec.points}
    todo = [p for p in spec.points if ids[p] not in store.done]
    if todo:
        with _client(scheduler, workers) as client:
            _Run(client, spec, evaluator, store, ids, progress, points_per_task).all(todo)
    order = {ids[p]: i for i, p in enumerate(spec.points)}  # the spec's order, not the workers' finishing order
    rows = sorted((r for r in read(output) if r["point_id"] in order), key=lambda r: order[r["point_id"]])
    return SweepResult(Path(output), spec, evaluator, len(todo), len(spec.points) - len(todo), rows)


class _Run:
    def __init__(self, client, spec: SweepSpec, evaluator: Evaluator, store: ResultStore, ids: dict[Point, str],
                 progress: bool, points_per_task: int | None):
        self.client, self.spec, self.evaluator, self.store, self.ids = client, spec, evaluator, store, ids
        self.progress, self.points_per_task = progress, points_per_task
        self.tasks: dict = {}
        """Each future's (points, model future, targets future, attempt)."""

    def all(self, todo: list[Point]) -> None:
        from distributed import as_completed

        workers = max(1, len(self.client.scheduler_info()["workers"]))
        per_task = self.points_per_task or min(MAX_POINTS_PER_TASK,
                                               math.ceil(len(todo) / (workers * TASKS_PER_WORKER)))
        groups: dict[tuple, list[Point]] = {}
        for p in todo:
            groups.setdefault(tuple(getattr(p, a) for a in self.evaluator.prepared_by), []).append(p)
        targets = self.client.scatter([self.spec.targets], broadcast=True)[0]
        pending = as_completed()
        with tqdm(total=len(todo), unit="point", desc="sweep", disable=not self.progress, smoothing=0.1) as self.bar:
            for points in groups.values():
                self._submit(points, targets, per_task, pending)
                for future in pending.next_batch(block=False) if pending.has_ready() else []:
                    self._finish(future, pending)
            for future in pending:
                self._finish(future, pending)

    def _submit(self, points: list[Point], targets, per_task: int, pending) -> None:
        """Prepare the model of one group once, scatter it, submit its points in tasks."""
        first = points[0]
        try:
            prepared = self.evaluator.prepare(self.spec.models[first.model], first)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be built is every one of its points' error
            self._write(points, [(None, f"preparing the model: {_describe(exc)}", 0.0)] * len(points))
            return
        model = Scattered(prepared, self.client.scatter([prepared], broadcast=True, hash=False)[0])
        for start in range(0, len(points), per_task):
            self._task(points[start:start + per_task], model, targets, pending, attempt=0)

    def _task(self, points: list[Point], model: Scattered, targets, pending, attempt: int) -> None:
        future = self.client.submit(evaluate_points, self.evaluator, model.future, targets, points, retries=RETRIES,
                                    pure=False)
        # The task keeps its model's future: the scattered copy then stays on the workers
        # until the task's rows are written, so the task can run again (below).
        self.tasks[future] = (points, model, targets, attempt)
        pending.add(future)

    def _finish(self, future, pending) -> None:
        points, model, targets, attempt = self.tasks.pop(future)
        try:
            results = future.result()
        except Exception as exc:  # noqa: BLE001 - outside the evaluator: a worker died, a result was lost
            if attempt < RETRIES:  # Dask reruns a task whose worker dies while it runs, but a result lost
                future.release()   # after the task finished can come back cancelled: submit it again,
                # scattering its inputs again if the dead worker held their last copy ("lost dependencies")
                if model.future.status != "finished":
                    model.future = self.client.scatter([model.value], broadcast=True, hash=False)[0]
                if targets.status != "finished":
                    targets = self.client.scatter([self.spec.targets], broadcast=True)[0]
                self._task(points, model, targets, pending, attempt + 1)
                return
            results = [(None, f"task failed: {_describe(exc)}", 0.0)] * len(points)
        future.release()
        self._write(points, results)

    def _write(self, points: list[Point], results: list[tuple[dict | None, str | None, float]]) -> None:
        rows = []
        for p, (metrics, error, seconds) in zip(points, results, strict=True):
            metrics = metrics or {}
            if set(metrics) - set(self.evaluator.metrics):
                raise SweepError(f"the evaluator returned metrics it does not declare: "
                                 f"{sorted(set(metrics) - set(self.evaluator.metrics))}")
            rows.append({"point_id": self.ids[p], **p.columns(), "target_base": self.spec.bases[p.target],
                         **{name: metrics.get(name) for name in self.evaluator.metrics},
                         "unused_axes": unused_axes(self.evaluator, p), "error": error, "eval_s": seconds})
        self.store.write(rows)
        self.bar.update(len(rows))


@dataclass
class Scattered:
    """A prepared model and its copy on the workers, kept so that a lost copy can be sent again."""

    value: object
    future: object


def evaluate_points(evaluator: Evaluator, prepared, targets: dict, points: list[Point]) -> list[tuple]:
    """Run on a worker: (metrics or None, error or None, seconds) per point."""
    out = []
    for p in points:
        start = time.perf_counter()
        try:
            metrics, error = evaluator.evaluate(prepared, targets[p.target], p), None
        except Exception as exc:  # noqa: BLE001 - the point's row records what went wrong
            metrics, error = None, _describe(exc)
        out.append((metrics, error, time.perf_counter() - start))
    return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _client(address: str | None, workers: int | None):
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"cannot reach a Dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client
