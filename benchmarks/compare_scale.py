"""`xpuc compare --all` on the bundled model and on a 70B weightless graph (goal: seconds).

For each model, times in one run and against the same reference: scheduling the graph on every
preset alone (``backends.schedule``, the work a comparison cannot avoid), the whole comparison
(schedules, fallback ledgers, rows; no accuracy runs), and the HTML report drawn from it. The
bundled model also measures its accuracy runs (float32, bf16 and fp16 compiles of the tiny
Llama, which is what ``--all`` asks for) with the compile cache off (cold) and on (warm).
Best of ``--repeat``. The ratio is of wall seconds (compiles run in worker processes, whose CPU
time this process does not see); on a shared machine wall time also counts other processes.
Prints ratios to the reference; never asserts (speed is not a test).
Run: .venv/bin/python benchmarks/compare_scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402
from backends import portability, portability_html  # noqa: E402
from frontends import hf  # noqa: E402
from frontends import onnx as onnx_frontend  # noqa: E402
from ir.passes import optimize  # noqa: E402
from machine import describe  # noqa: E402
from runtime.accuracy import AgainstFloat32  # noqa: E402
from xpuc.cli import DEFAULT_MODEL  # noqa: E402


def best(fn, repeat: int) -> tuple[float, float]:
    """(least CPU seconds, least wall seconds) of ``repeat`` calls."""
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def accuracy_runs(cache: bool) -> None:
    """The float32, bf16 and fp16 runs of the bundled model (what ``--all`` measures)."""
    os.environ.pop("XPUC_NO_CACHE", None) if cache else os.environ.update(XPUC_NO_CACHE="1")
    runner = AgainstFloat32(DEFAULT_MODEL, input_shapes={"input_ids": (1, 128)})
    for fmt in ("bf16", "fp16"):
        runner(fmt)
    os.environ.pop("XPUC_NO_CACHE", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("XPUC_CACHE_DIR", tempfile.mkdtemp(prefix="xpuc-bench-"))
    targets = [backends.load_target(n) for n in backends.list_targets()]
    models = {"tiny-llama 1x128": optimize(onnx_frontend.load(DEFAULT_MODEL, input_shapes={"input_ids": (1, 128)})),
              "llama-3-70b 1x128": optimize(hf.load("llama-3-70b", input_shapes={"input_ids": (1, 128)}))}
    print(f"{describe()}; load average {os.getloadavg()[0]:.1f}; {len(targets)} presets")
    print(f"{'model':18} {'step':22} {'cpu s':>6} {'wall s':>7} {'x schedules':>11}")
    for name, graph in models.items():
        cpu, reference = best(lambda: [backends.schedule(graph, t) for t in targets], args.repeat)
        print(f"{name:18} {'schedules (reference)':22} {cpu:6.2f} {reference:7.2f} {1:11.2f}")
        comparison = portability.compare(graph, targets)
        steps = {"compare": lambda: portability.compare(graph, targets),
                 "html": lambda: portability_html.to_html(comparison)}
        if name.startswith("tiny"):
            steps["accuracy, cold cache"] = lambda: accuracy_runs(cache=False)
            accuracy_runs(cache=True)
            steps["accuracy, warm cache"] = lambda: accuracy_runs(cache=True)
        for step, fn in steps.items():
            cpu, wall = best(fn, 1 if "cold" in step else args.repeat)
            print(f"{name:18} {step:22} {cpu:6.2f} {wall:7.2f} {wall / reference:11.2f}")


if __name__ == "__main__":
    main()
