"""Scheduling time for a Llama-3-70B-shaped graph on every preset (goal: under 2 s each).

Times ``backends.schedule`` alone (import and optimization are not counted) on the graph as
imported and after the pass pipeline, best of ``--repeat`` runs. CPU seconds are the figure
to compare: on a shared machine, wall time also counts other processes' turns on the cores.
Prints ratios to the goal; never asserts (speed is not a test). ``--precision`` costs the graph
in a format (``backends.precision``) without rewriting it.
Run: .venv/bin/python benchmarks/schedule_scale.py [--seq 128] [--repeat 3] [--precision native]
"""

from __future__ import annotations

import argparse
import os
import time

import backends
from frontends import onnx as onnx_frontend
from frontends.synthetic import LLAMA3_70B, llama_onnx
from ir.passes import optimize

GOAL_S = 2.0


def best_of(repeat: int, graph, target, precision: str) -> tuple[float, float, backends.Schedule]:
    """(least CPU seconds, least wall seconds, schedule) over ``repeat`` runs."""
    cpu, wall = [], []
    for _ in range(repeat):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        plan = backends.schedule(graph, target, precision=precision)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return min(cpu), min(wall), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--precision", default="native", help="an ir.formats name")
    args = parser.parse_args()
    imported = onnx_frontend.load(llama_onnx(LLAMA3_70B, batch=1, seq=args.seq), weights=False)
    graphs = {"imported": imported, "optimized": optimize(imported)}
    print(f"seq {args.seq}; " + ", ".join(f"{k} {len(g)} ops" for k, g in graphs.items())
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'preset':18} {'graph':10} {'cpu s':>6} {'wall s':>7} {'x goal':>7} {'chips':>6} {'latency ms':>11}")
    for name in backends.list_targets():
        target = backends.load_target(name)
        for kind, graph in graphs.items():
            cpu, wall, plan = best_of(args.repeat, graph, target, args.precision)
            print(f"{name:18} {kind:10} {cpu:6.2f} {wall:7.2f} {cpu / GOAL_S:7.2f} {plan.chips:6d} "
                  f"{plan.latency_s * 1e3:11.2f}")


if __name__ == "__main__":
    main()
