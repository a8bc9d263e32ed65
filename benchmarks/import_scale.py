"""Import + optimize time and memory for Llama-3-70B-shaped graphs of growing depth.

Each depth runs in a fresh subprocess so peak-memory figures do not leak between sizes.
The model (``frontends.synthetic.llama_onnx``, fp16 weights as external data that does not
exist) is written to a temporary file and imported from the path with ``weights=False``, so
parsing is part of the measurement. Prints a table, the per-layer slope and the ratio
time(80)/time(8), which is about 10 when the compiler scales linearly.

    python benchmarks/import_scale.py [--layers 8 16 32 80] [--seq 128] [--profile 80]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frontends import onnx as onnx_frontend  # noqa: E402
from frontends.synthetic import LLAMA3_70B, llama_onnx  # noqa: E402
from ir.passes import DEFAULT_PIPELINE, PASSES, PassManager, optimize  # noqa: E402
from ir.summary import summarize  # noqa: E402


def import_and_optimize(path: str, seq: int | None, timings: dict | None = None):
    """The work ``xpuc import --no-weights`` does; per-pass seconds go into ``timings``."""
    shapes = {"input_ids": (1, seq)} if seq else None
    manager = PassManager([(name, PASSES[name]) for name in DEFAULT_PIPELINE])
    graph = optimize(onnx_frontend.load(path, weights=False, input_shapes=shapes), manager=manager)
    if timings is not None:
        timings.update(manager.timings)
    return graph


def measure(layers: int, seq: int | None) -> dict:
    """One depth, in this process: wall time, tracemalloc peak and max-RSS growth."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "llama.onnx")
        start = time.perf_counter()
        onnx.save(llama_onnx(LLAMA3_70B.with_layers(layers)), path)
        build = time.perf_counter() - start

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start, cpu, passes = time.perf_counter(), time.process_time(), {}
        graph = import_and_optimize(path, seq, passes)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        rss_delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        ops, params = len(graph), summarize(graph).parameters
        del graph

        tracemalloc.start()  # a second run: tracemalloc slows Python allocation down
        import_and_optimize(path, seq)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"layers": layers, "build_s": build, "seconds": seconds, "cpu_s": cpu, "ops": ops, "parameters": params, "passes": passes,
            "tracemalloc_peak_mb": peak / 2**20, "maxrss_delta_mb": rss_delta / 1024}


def profile(layers: int, seq: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "llama.onnx")
        onnx.save(llama_onnx(LLAMA3_70B.with_layers(layers)), path)
        profiler = cProfile.Profile()
        profiler.runcall(import_and_optimize, path, seq)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 16, 32, 80])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help="bind input_ids to 1 x SEQ (default: symbolic batch and seq)")
    parser.add_argument("--profile", type=int, metavar="LAYERS", help="cProfile one depth instead")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.seq)))
        return
    if args.profile:
        profile(args.profile, args.seq)
        return

    rows = []
    for layers in args.layers:
        seq = ["--seq", str(args.seq)] if args.seq else []
        out = subprocess.run([sys.executable, __file__, "--child", str(layers), *seq], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.splitlines()[-1]))
    print(f"load average before: {os.getloadavg()[0]:.1f} (CPU s is robust to other load; wall s is not)")
    print(f"{'layers':>6} {'ops':>7} {'parameters':>16} {'build s':>8} {'import+opt s':>13} {'CPU s':>7} "
          f"{'tracemalloc MB':>15} {'maxrss +MB':>11}")
    for r in rows:
        print(f"{r['layers']:>6} {r['ops']:>7} {r['parameters']:>16,} {r['build_s']:>8.2f} {r['seconds']:>13.2f} {r['cpu_s']:>7.2f} "
              f"{r['tracemalloc_peak_mb']:>15.0f} {r['maxrss_delta_mb']:>11.0f}")
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        slope = (last["cpu_s"] - first["cpu_s"]) / (last["layers"] - first["layers"])
        print(f"per-layer slope: {slope * 1000:.1f} CPU ms/layer, "
              f"{(last['tracemalloc_peak_mb'] - first['tracemalloc_peak_mb']) / (last['layers'] - first['layers']):.2f}"
              " MB/layer")
        slowest = sorted(last["passes"].items(), key=lambda kv: -kv[1])[:4]
        print(f"slowest passes at {last['layers']} layers (wall s): "
              + ", ".join(f"{name} {seconds:.2f}" for name, seconds in slowest))
        print(f"time({last['layers']})/time({first['layers']}) = {last['cpu_s'] / first['cpu_s']:.1f} (CPU) "
              f"(linear growth: {last['layers'] / first['layers']:.1f})")


if __name__ == "__main__":
    main()
