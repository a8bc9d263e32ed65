"""One CompiledModel run from several Python threads at once (docs/design.md, "Threads").

Runs of a CPU compile proceed in parallel, each on its own arena and outputs; every thread
must get exactly what the same feeds give in a serial run. A model compiled per feed shape
compiles each shape once however many threads ask for it first. Runs that emulate a target
share one counters buffer and are serialized, so each cost counted is a whole run's.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import backends
import runtime
from conftest import MODELS, fixture_feeds
from frontends import onnx as onnx_frontend
from ir.passes import optimize

LLAMA = MODELS / "llama_dynamo.onnx"
THREADS = 8


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path / "cache"))


def hammer(fn, jobs: list) -> list:
    """``fn(job)`` for every job, THREADS at a time, all released together."""
    start = threading.Barrier(THREADS)

    def task(numbered):
        k, job = numbered
        if k < THREADS:
            start.wait()
        return fn(job)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(task, enumerate(jobs)))


@pytest.mark.parametrize("kernel_threads", [1, 2])
def test_concurrent_runs_each_get_their_own_outputs(kernel_threads):
    model = runtime.compile(LLAMA, input_shapes={"input_ids": (1, 16)}, threads=kernel_threads)
    feeds = [fixture_feeds(LLAMA, 1, 16, seed=i) for i in range(THREADS)]
    serial = [model.run(f) for f in feeds]
    jobs = list(range(THREADS)) * 4
    results = hammer(lambda i: (i, model.run(feeds[i])), jobs)
    for i, outputs in results:
        for got, want in zip(outputs, serial[i]):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(serial[0][0], serial[1][0])  # the feeds really differ


def test_concurrent_first_runs_of_new_shapes_compile_each_once(monkeypatch):
    model = runtime.compile(LLAMA)  # symbolic batch and sequence: one specialization per shape
    compiles = []
    real = runtime.compiled.compile_module
    monkeypatch.setattr(runtime.compiled, "compile_module", lambda *a, **k: compiles.append(1) or real(*a, **k))
    shapes = [(1, 5), (1, 9), (2, 5)]
    jobs = [shapes[i % len(shapes)] for i in range(THREADS)]
    results = hammer(lambda s: (s, model.run(fixture_feeds(LLAMA, *s, seed=7))), jobs)
    assert len(compiles) == len(shapes)
    for shape, outputs in results:
        np.testing.assert_array_equal(outputs[0], model.run(fixture_feeds(LLAMA, *shape, seed=7))[0])


def test_concurrent_emulated_runs_are_serialized_and_each_costed_whole():
    target = backends.load_target("tpu-v4")
    model = runtime.compile(LLAMA, target, input_shapes={"input_ids": (1, 16)})
    analytic = backends.schedule(optimize(onnx_frontend.load(LLAMA, input_shapes={"input_ids": (1, 16)})), target)
    feeds = [fixture_feeds(LLAMA, 1, 16, seed=i) for i in range(THREADS)]
    serial = [model.run(f) for f in feeds]
    costs = []

    def run(i):
        outputs = model.run(feeds[i])
        costs.append(model.last_cost)
        return i, outputs

    for i, outputs in hammer(run, list(range(THREADS)) * 2):
        np.testing.assert_array_equal(outputs[0], serial[i][0])
    assert all(c.ops == analytic.ops and c.latency_s == analytic.latency_s for c in costs)
