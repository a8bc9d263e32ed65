"""GPT-2-small-shaped model on the CPU: xpuc vs onnxruntime with the same thread count.

Reports, never asserts:
- end-to-end latency of ``CompiledModel.run`` over onnxruntime's (goal <= 1.3) on every code
  path of ``machine.PATHS`` (the host's own, and AVX2 by ``XPUC_CPU=znver3``), xpuc and
  onnxruntime timed in turn, ``--rounds`` times back to back, with the range of the ratio,
- the kernels that dominate a run on each path (each kernel timed by wrapping the executor's dispatch),
- compile time, each in a new process: cold (empty cache dir; split into import + optimize,
  lowering to LLVM IR, and LLVM optimization + codegen), with only kernels' object code
  cached, and warm (whole-model cache hit; goal < 1 s), with the first ``run`` after each
  (a warm start maps the weights, so they page in on the first run) and the best run,
- peak arena bytes of the executor's memory plan vs the sum of all intermediates, for this
  model and for the largest light CNN shipped with onnx.

    python benchmarks/gpt2_cpu.py [--threads N] [--layers 12] [--seq 128] [--top 12] [--rounds 3]
                                  [--budget 10] [--paths host,avx2] [--no-compile-times]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime  # noqa: E402
from backends.codegen import host_tiling, lower  # noqa: E402
from frontends import onnx as onnx_frontend  # noqa: E402
from gpt2_model import gpt2_onnx  # noqa: E402
from ir.passes import optimize  # noqa: E402
from machine import PATHS, best_seconds, code_path, describe, interleaved_best, path_label  # noqa: E402
from runtime.jit import compile_module  # noqa: E402


def compile_phases(path: str, cache_dir: str) -> dict[str, float]:
    """What ``runtime.compile`` does, phase by phase, with ``cache_dir`` as the object cache."""
    os.environ["XPUC_CACHE_DIR"] = cache_dir
    times = {}
    start = time.perf_counter()
    graph = optimize(onnx_frontend.load(path))
    times["import+optimize"] = time.perf_counter() - start
    start = time.perf_counter()
    lowered = lower(graph, host_tiling())
    times["lower (LLVM IR)"] = time.perf_counter() - start
    library = compile_module(lowered.module)
    times["llvm opt+codegen" + (" (cache hit)" if library.cached else "")] = library.seconds
    times["total"] = sum(times.values())
    return times


def compile_in_new_process(path: str, cache_dir: str, threads: int) -> dict[str, float]:
    """``runtime.compile`` in a fresh interpreter (nothing warm in memory), then its first and best run."""
    done = subprocess.run([sys.executable, __file__, "--measure-compile", path, "--threads", str(threads)],
                          env={**os.environ, "XPUC_CACHE_DIR": cache_dir}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def measure_compile(path: str, threads: int) -> None:
    start = time.perf_counter()
    compiled = runtime.compile(path, threads=threads)
    seconds = {"compile": time.perf_counter() - start}
    feeds = {"input_ids": np.zeros(compiled.graph.type_of("input_ids").shape, np.int64)}
    start = time.perf_counter()
    compiled.run(feeds)
    seconds["first run"] = time.perf_counter() - start
    seconds["best run"] = best_seconds(lambda: compiled.run(feeds), repeat=3, budget_s=0)
    print(json.dumps(seconds))


def evict(folder: str) -> None:
    """Drop a folder's files from the page cache (no root needed), so the weights come from disk."""
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def import_seconds() -> float:
    """What ``import runtime`` costs a new process (not part of a compile, but of a cold start)."""
    done = subprocess.run([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                           "start = time.perf_counter(); import runtime; print(time.perf_counter() - start)",
                           str(Path(__file__).resolve().parents[1])], capture_output=True, text=True, check=True)
    return float(done.stdout)


def kernel_profile(compiled, feeds, runs: int = 3) -> list[tuple[float, str]]:
    """Seconds per kernel over ``runs`` runs, by wrapping the executor's per-kernel dispatch."""
    executor = compiled._last
    specs = {id(fn): spec for fn, spec in executor.kernels}
    seconds: collections.Counter = collections.Counter()
    dispatch = executor._call

    def timed(fn, args, extent, work):
        start = time.perf_counter()
        dispatch(fn, args, extent, work)
        spec = specs[id(fn)]
        seconds[f"{spec.name} ({', '.join(spec.ops[:3])}{' ...' if len(spec.ops) > 3 else ''})"] += \
            time.perf_counter() - start

    executor._call = timed
    try:
        for _ in range(runs):
            compiled.run(feeds)
    finally:
        del executor._call
    return sorted(((s / runs, name) for name, s in seconds.items()), reverse=True)


def by_op_type(profile) -> dict[str, float]:
    kinds: collections.Counter = collections.Counter()
    for seconds, name in profile:
        kinds[name.split("_", 1)[1].split(" ")[0]] += seconds
    return dict(kinds.most_common())


def memory_line(label: str, compiled) -> str:
    peak, total = compiled.peak_bytes, compiled.intermediate_bytes
    return (f"{label}: plan peak {peak / 2**20:.1f} MiB, all intermediates {total / 2**20:.1f} MiB, "
            f"ratio {peak / total:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of latency timing per path per round")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--no-compile-times", action="store_true", help="skip the compile-time measurements")
    parser.add_argument("--measure-compile", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_compile:
        return measure_compile(args.measure_compile, args.threads)
    print(f"{describe()}\n{args.threads} threads; GPT-2 small shape, {args.layers} layers, seq {args.seq}; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gpt2.onnx")
        onnx.save(gpt2_onnx(layers=args.layers, seq=args.seq), path)
        cache = os.path.join(tmp, "cache")
        if not args.no_compile_times:
            compile_times(path, tmp, cache, args.threads)
        os.environ["XPUC_CACHE_DIR"] = cache
        latency(path, args)


def compile_times(path: str, tmp: str, cache: str, threads: int) -> None:
    """Compile time by phase (cold), and in new processes: cold, kernels cached, warm, evicted."""
    phases = compile_phases(path, os.path.join(tmp, "phases"))
    print("compile cold, by phase: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    print(f"import runtime (new process): {import_seconds():.2f} s")
    for label in ("cold", "kernel objects cached", "warm", "warm, entry evicted from page cache"):
        if label == "kernel objects cached":
            shutil.rmtree(os.path.join(cache, "models"))  # a model cache miss whose kernels all hit
        if label.startswith("warm, entry evicted"):
            evict(os.path.join(cache, "models"))
        seconds = compile_in_new_process(path, cache, threads)
        print(f"compile {label} (new process): " + ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()))


def latency(path: str, args) -> None:
    """xpuc vs onnxruntime on each code path, in turn, over several rounds; kernel profiles; memory."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 50257, (1, args.seq), dtype=np.int64)}
    ref = session.run(None, feeds)[0]
    paths = args.paths.split(",")
    models = {}
    for name in paths:
        with code_path(name):
            models[name] = runtime.compile(path, threads=args.threads)
        print(f"{path_label(name)}: max |xpuc - onnxruntime| = {np.abs(models[name].run(feeds)[0] - ref).max():.2e}")
    ratios: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(1, args.rounds + 1):
        for name in paths:
            best = interleaved_best({"xpuc": lambda m=models[name]: m.run(feeds),
                                     "onnxruntime": lambda: session.run(None, feeds)}, args.budget)
            ratios[name].append(best["xpuc"] / best["onnxruntime"])
            print(f"round {round_} {path_label(name)}: xpuc {best['xpuc'] * 1e3:.1f} ms, onnxruntime "
                  f"{best['onnxruntime'] * 1e3:.1f} ms, ratio {ratios[name][-1]:.2f}")
    print(f"latency ratio xpuc / onnxruntime over {args.rounds} rounds (goal <= 1.3); load average after: "
          f"{os.getloadavg()[0]:.1f}")
    for name, values in ratios.items():
        print(f"  {path_label(name)}: {min(values):.2f}-{max(values):.2f}")
    for name in paths:
        profile = kernel_profile(models[name], feeds)
        total = sum(s for s, _ in profile)
        print(f"{path_label(name)}: kernels: {len(profile)}, {total * 1e3:.1f} ms summed; by op type:")
        for kind, seconds in by_op_type(profile).items():
            print(f"  {kind:24} {seconds * 1e3:8.1f} ms {seconds / total:6.1%}")
        print(f"top {args.top} kernels:")
        for seconds, kernel in profile[:args.top]:
            print(f"  {seconds * 1e3:8.2f} ms  {kernel}")
    print(memory_line("memory gpt2", models[paths[0]]))
    cnns = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")),
                  key=os.path.getsize)
    if cnns:
        print(memory_line(f"memory {Path(cnns[-1]).stem}", runtime.compile(cnns[-1], threads=args.threads)))


if __name__ == "__main__":
    main()
