"""fp32 MatMul GFLOP/s of xpuc's generated code vs numpy (OpenBLAS) with the same thread count.

Cases: the square 1024^3 product and a decode-shaped 1x4096 . 4096x4096, each with B as a
runtime input (packed inside the kernel) and as a constant weight (packed at compile time).
Prints GFLOP/s, the ratio to numpy and the fraction of the CPU's peak FMA rate; never asserts.

    python benchmarks/matmul_cpu.py [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--threads", type=int, default=os.cpu_count())
THREADS = ARGS.parse_args().threads
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(THREADS)  # before numpy loads BLAS

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime  # noqa: E402
from machine import best_seconds, describe, peak_gflops  # noqa: E402

CASES = [(1024, 1024, 1024), (1, 4096, 4096)]


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
    peak = peak_gflops(THREADS)
    print(f"{describe()}; {THREADS} threads; peak fp32 FMA {peak:.0f} GFLOP/s")
    print(f"{'case':28} {'xpuc GF/s':>9} {'numpy GF/s':>10} {'ratio':>6} {'xpuc/peak':>9} {'numpy/peak':>10}")
    rng = np.random.default_rng(0)
    for m, k, n in CASES:
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        ref = a @ b
        numpy_gflops = 2 * m * k * n / best_seconds(lambda: a @ b) / 1e9
        for label, weight in (("B input", None), ("B constant", b)):
            compiled = runtime.compile(matmul_model(m, k, n, weight), threads=THREADS)
            feeds = {"a": a} if weight is not None else {"a": a, "b": b}
            np.testing.assert_allclose(compiled.run(feeds)[0], ref, rtol=1e-3, atol=1e-2)
            ours = 2 * m * k * n / best_seconds(lambda: compiled.run(feeds)) / 1e9
            print(f"{f'{m}x{k}x{n} {label}':28} {ours:9.1f} {numpy_gflops:10.1f} {ours / numpy_gflops:6.2f} "
                  f"{ours / peak:9.2f} {numpy_gflops / peak:10.2f}")


if __name__ == "__main__":
    main()
