"""A weighted product in every format against the same product in float32, same run, same threads.

One x (M x 4096) . W (4096 x 4096) product, W a constant: float32 (the reference, packed at
compile time), then W quantized by ``ir.passes.quantize`` (codes decoded a panel at a time
inside the product; bf16/fp16/fp8 also round x as the model runs; w8a8 is DynamicQuantizeLinear
+ MatMulInteger). M = 1 is a decode step (weight-streaming bound), M = 128 a prefill chunk.
Prints milliseconds, the ratio to float32 and the bytes the weight occupies; never asserts.

On a shared machine wall time measures the neighbours: ``--cpu-time`` runs one thread and
times the CPU time of this process instead (the work done, robust to load, though not to
cache sharing), and the formats are interleaved over rounds, each keeping its best.

    python benchmarks/quantized_matmul.py [--threads N | --cpu-time] [--k 4096] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ir  # noqa: E402
import runtime  # noqa: E402
from ir.dtypes import DType  # noqa: E402
from ir.formats import FORMATS  # noqa: E402
from ir.passes import quantize  # noqa: E402
from machine import add_clock_arguments, best_seconds, clock_of, describe  # noqa: E402

ROWS = (1, 128)


def product(m: int, w: np.ndarray) -> ir.Graph:
    """y = -(x @ w): the Neg makes the product no graph head, so the quantize pass takes it."""
    g = ir.Graph()
    g.add_input("x", ir.TensorType(DType.FLOAT32, (m, w.shape[0])))
    g.add_value("w", ir.TensorType(DType.FLOAT32, w.shape), const=True, data=w)
    y = g.add_node("MatMul", ["x", "w"], 1).outputs[0]
    g.outputs = [g.add_node("Neg", [y], 1).outputs[0]]
    return ir.passes.infer_shapes(g)


def weight_bytes(graph: ir.Graph) -> int:
    return sum(v.type.nbytes for v in graph.initializers() if graph.num_uses(v.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_clock_arguments(parser)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each format's best is kept")
    args = parser.parse_args()
    clock = clock_of(args)
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((args.k, args.k)) / np.sqrt(args.k)).astype(np.float32)
    names = ["fp32"] + [name for name, f in FORMATS.items() if f.changes_graph]
    runs, sizes = {}, {}
    for name in names:
        for m in ROWS:
            graph = quantize(product(m, w), name)
            sizes[name] = weight_bytes(graph)
            feeds = {"x": rng.standard_normal((m, args.k)).astype(np.float32)}
            runs[name, m] = (runtime.compile(graph, optimize=False, threads=args.threads), feeds)
    best = {key: float("inf") for key in runs}
    for _ in range(args.rounds):  # a shared machine's load moves between rounds, not within one
        for key, (compiled, feeds) in runs.items():
            best[key] = min(best[key], best_seconds(lambda: compiled.run(feeds), repeat=3, budget_s=0.3,
                                                    clock=clock))
    print(f"{describe()}; {args.threads} threads, {'CPU' if args.cpu_time else 'wall'} time; W {args.k}x{args.k}; "
          f"best of {args.rounds} rounds")
    print(f"{'format':10} {'weight MB':>9} " + " ".join(f"{f'M={m} ms':>9} {'/fp32':>6}" for m in ROWS))
    for name in names:
        cells = " ".join(f"{best[name, m] * 1e3:9.3f} {best[name, m] / best['fp32', m]:6.2f}" for m in ROWS)
        print(f"{name:10} {sizes[name] / 2**20:9.1f} {cells}")


if __name__ == "__main__":
    main()
