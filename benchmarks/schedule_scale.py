"""Scheduling time for a Llama-3-70B-shaped graph on every preset (goal: under 2 s each).

Prints seconds per preset and the ratio to the goal; never asserts (speed is not a test).
Run: .venv/bin/python benchmarks/schedule_scale.py [--seq 128] [--optimize]
"""

from __future__ import annotations

import argparse
import time

import backends
from frontends import onnx as onnx_frontend
from frontends.synthetic import LLAMA3_70B, llama_onnx
from ir.passes import optimize

GOAL_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--optimize", action="store_true", help="run the pass pipeline first (fused graph)")
    args = parser.parse_args()
    graph = onnx_frontend.load(llama_onnx(LLAMA3_70B, batch=1, seq=args.seq), weights=False)
    if args.optimize:
        graph = optimize(graph)
    print(f"graph: {len(graph)} ops, seq {args.seq}, {'optimized' if args.optimize else 'as imported'}")
    print(f"{'preset':18} {'seconds':>8} {'x goal':>7} {'chips':>6} {'latency ms':>11}")
    for name in backends.list_targets():
        target = backends.load_target(name)
        start = time.perf_counter()
        s = backends.schedule(graph, target)
        took = time.perf_counter() - start
        print(f"{name:18} {took:8.2f} {took / GOAL_S:7.2f} {s.chips:6d} {s.latency_s * 1e3:11.2f}")


if __name__ == "__main__":
    main()
