"""A 10,000-point sweep of Llama-3-70B (weightless): points per second serial against a LocalCluster.

The sweep: 10 targets (8 presets, 2 hardware variants) x 4 precisions x 25 deployments (tp x pp
in 1..16) x 10 batch sizes = 10,000 points, 40 prepared graphs. Three measurements, in one run:

- serial: the evaluator in this process, no Dask, over a seeded random 1/``--sample`` of the
  points (the same mix of targets, precisions and batches; preparing graphs timed apart);
- cluster: ``xpuc.sweep.run`` over all points on a LocalCluster of ``--workers`` processes
  (default: one per core), writing Parquet as a real sweep does, preparation included;
- overhead per point: the cluster's worker-seconds (wall x workers) less the seconds the
  evaluator itself took (the rows' ``eval_s``), per point, against the mean ``eval_s``.

On a machine shared with other work the workers do not get whole cores, so wall-time rates
are lower bounds; the ratio of the two rates is the figure to quote, with the load average.
Run: .venv/bin/python benchmarks/sweep_scale.py [--workers N] [--sample 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from machine import describe

from xpuc.sweep import SCHEDULE, run
from xpuc.sweep.runner import evaluate_points
from xpuc.sweep.spec import parse

PRESETS = ["a100-80gb", "h100-sxm", "h200", "tpu-v4", "tpu-v5e", "inferentia2", "groq-lpu", "cerebras-wse3"]
VARIANTS = {"h100-2x-hbm-bw": {"base": "h100-sxm", "scale": {"memory.hbm.bandwidth_bytes_per_s": 2}},
            "tpu-v5e-2x-hbm": {"base": "tpu-v5e", "scale": {"memory.hbm.capacity_bytes": 2}}}
PRECISIONS = ["bf16", "fp8", "int8", "int4"]
DEPLOYMENTS = [{"chips": tp * pp, "tp": tp, "pp": pp} for tp in (1, 2, 4, 8, 16) for pp in (1, 2, 4, 8, 16)]
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def sweep_spec(quick: bool) -> dict:
    return {"axes": {"model": ["llama-3-70b"], "target": [*PRESETS, *VARIANTS], "precision": PRECISIONS,
                     "deployment": DEPLOYMENTS[:5] if quick else DEPLOYMENTS, "batch": BATCHES[:2] if quick else BATCHES},
            "variants": VARIANTS}


def serial(spec, sample: int) -> tuple[int, float, float]:
    """(points, seconds evaluating, seconds preparing) for a random 1/``sample`` of the points, in this process."""
    points = random.Random(0).sample(spec.points, len(spec.points) // sample)
    groups: dict[tuple, list] = {}
    for p in points:
        groups.setdefault(tuple(getattr(p, a) for a in SCHEDULE.prepared_by), []).append(p)
    preparing = evaluating = 0.0
    for group in groups.values():
        start = time.perf_counter()
        graph = SCHEDULE.prepare(spec.models[group[0].model], group[0])
        preparing += time.perf_counter() - start
        start = time.perf_counter()
        evaluate_points(SCHEDULE, graph, spec.targets, group)
        evaluating += time.perf_counter() - start
    return len(points), evaluating, preparing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--sample", type=int, default=20, help="serial: time a random 1/N of the points (default 20)")
    parser.add_argument("--quick", action="store_true", help="400 points instead of 10,000 (a smoke run)")
    args = parser.parse_args()
    spec = parse(sweep_spec(args.quick), SCHEDULE.metrics)
    print(f"{describe()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{len(spec.points):,} points, {len(PRESETS) + len(VARIANTS)} targets, llama-3-70b weightless")

    n, evaluating, preparing = serial(spec, args.sample)
    serial_rate = n / evaluating
    print(f"serial: {n} points (a random 1/{args.sample}) in {evaluating:.1f} s = {serial_rate:.2f} points/s "
          f"({evaluating / n * 1e3:.0f} ms each); preparing their graphs {preparing:.1f} s")

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = run(spec, Path(folder) / "out.parquet", workers=args.workers)
        wall = time.perf_counter() - start
    rows = result.rows
    own = sum(r["eval_s"] for r in rows)
    cluster_rate = len(rows) / wall
    overhead = (wall * args.workers - own) / len(rows)
    print(f"cluster: {len(rows):,} points on {args.workers} workers in {wall:.1f} s = {cluster_rate:.2f} points/s "
          f"({cluster_rate / serial_rate:.2f}x serial); {len(result.failed):,} points failed (does not fit ...)")
    print(f"per point: evaluator {own / len(rows) * 1e3:.1f} ms on its worker; everything else (cluster start, "
          f"preparing and scattering {len({tuple(getattr(p, a) for a in SCHEDULE.prepared_by) for p in spec.points})} "
          f"graphs, tasks, Parquet) {overhead * 1e3:.1f} ms = {overhead / (own / len(rows)):.1%} of the point's work")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
