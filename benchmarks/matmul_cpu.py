"""fp32 MatMul GFLOP/s of xpuc's generated code vs numpy (OpenBLAS) with the same thread count.

Cases: the square 1024^3 product and a decode-shaped 1x4096 . 4096x4096, each with B as a
runtime input and as a constant weight, on every code path of ``machine.PATHS`` (the
host's own, and AVX2 compiled by ``XPUC_CPU=znver3`` on the same machine). Each case times
xpuc and numpy in turn (``machine.interleaved_best``), and the whole set runs ``--rounds``
times back to back; prints GFLOP/s, the ratio to numpy, the fraction of the path's peak
FMA rate, and the range of each ratio over the rounds. Never asserts. ``--cpu-time``: one
thread (xpuc's and OpenBLAS's), each call timed by the process's CPU time: the work each does,
which a shared machine's load does not move as it moves wall time (it still moves cache and
memory bandwidth).

    python benchmarks/matmul_cpu.py [--threads N | --cpu-time] [--rounds 3] [--budget 3] [--paths host,avx2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--rounds", type=int, default=3)
ARGS.add_argument("--budget", type=float, default=3.0, help="seconds of timing per case per round")
ARGS.add_argument("--paths", default="host,avx2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_clock_arguments, clock_of  # noqa: E402

add_clock_arguments(ARGS)
OPTIONS = ARGS.parse_args()
CLOCK = clock_of(OPTIONS)
THREADS = OPTIONS.threads
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(THREADS)  # before numpy loads BLAS

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runtime  # noqa: E402
from backends.codegen import cpu as cpus  # noqa: E402
from machine import code_path, describe, interleaved_best, path_label, peak_gflops  # noqa: E402

CASES = [(1024, 1024, 1024), (1, 4096, 4096)]
LABELS = ("B input", "B constant")


def matmul_model(m: int, k: int, n: int, weight: np.ndarray | None):
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("a", f, (m, k))]
    if weight is None:
        inputs.append(helper.make_tensor_value_info("b", f, (k, n)))
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm", inputs,
                              [helper.make_tensor_value_info("y", f, (m, n))],
                              [] if weight is None else [numpy_helper.from_array(weight, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def main() -> None:
    paths = OPTIONS.paths.split(",")
    clock = "CPU" if OPTIONS.cpu_time else "wall"
    print(f"{describe()}\n{THREADS} threads, {clock} time, {OPTIONS.rounds} rounds, "
          f"{OPTIONS.budget:.0f} s per case per round; load average before: {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    operands = {case: (rng.standard_normal(case[:2], np.float32), rng.standard_normal(case[1:], np.float32))
                for case in CASES}
    compiled, peaks = {}, {}
    for path in paths:
        with code_path(path):
            peaks[path] = peak_gflops(THREADS, cpus.target().vector_bits)
            for case, (a, b) in operands.items():
                for label, weight in zip(LABELS, (None, b)):
                    model = runtime.compile(matmul_model(*case, weight), threads=THREADS)
                    feeds = {"a": a} if weight is not None else {"a": a, "b": b}
                    np.testing.assert_allclose(model.run(feeds)[0], a @ b, rtol=1e-3, atol=1e-2)
                    compiled[path, case, label] = (model, feeds)
    ratios: dict[tuple, list[float]] = {}
    print(f"{'round':5} {'path':34} {'case':26} {'xpuc GF/s':>9} {'numpy GF/s':>10} {'ratio':>6} {'xpuc/peak':>9}")
    for round_ in range(1, OPTIONS.rounds + 1):
        for path in paths:
            for case, (a, b) in operands.items():
                flops = 2 * case[0] * case[1] * case[2]
                fns = {"numpy": lambda a=a, b=b: a @ b}
                fns.update({label: (lambda mf=compiled[path, case, label]: mf[0].run(mf[1])) for label in LABELS})
                best = interleaved_best(fns, OPTIONS.budget, clock=CLOCK)
                ref = flops / best["numpy"] / 1e9
                for label in LABELS:
                    ours = flops / best[label] / 1e9
                    ratios.setdefault((path, case, label), []).append(ours / ref)
                    print(f"{round_:5} {path_label(path):34} {f'{case[0]}x{case[1]}x{case[2]} {label}':26} {ours:9.1f} "
                          f"{ref:10.1f} {ours / ref:6.2f} {ours / peaks[path]:9.2f}")
    print(f"ratio xpuc / numpy over {OPTIONS.rounds} rounds (goal >= 0.8); load average after: {os.getloadavg()[0]:.1f}")
    for (path, case, label), values in ratios.items():
        print(f"  {path:5} {f'{case[0]}x{case[1]}x{case[2]} {label}':26} {min(values):.2f}-{max(values):.2f}")


if __name__ == "__main__":
    main()
