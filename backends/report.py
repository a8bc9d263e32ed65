"""Looking at a schedule: a per-op table, JSON, and a Chrome trace that Perfetto opens.

JSON schema (``to_json``)::

    {"target": str, "family": "gpu" | "systolic" | "sram-dataflow",
     "precision": {"policy": str, "weights": str, "activations": str, "kv": str[, "products": str]},
     "launch": "stream" | "graph",
     "totals": {"latency_s": float, "energy_j": float, "cost_usd": float, "chips": int, "kernels": int,
                (one pass alone; then the deployment kept full, backends.economics:)
                "period_s": float, "throughput_per_s": float (passes), "joules_per_pass": float,
                "usd_per_pass": float, "tokens_per_pass": int | null, "tokens_per_s": float | null,
                "joules_per_token": float | null, "usd_per_token": float | null},
     "deployment": {"chips": int, "tp": int, "pp": int, "ep": bool (experts cut over the tp chips)},
     "memory_per_chip": [{"stage": int, "chips": [int], "level": str, "capacity", "weights", "kv",
                          "activations", "reserve", "free": bytes on each chip of that stage}],
     "utilization": {engine: fraction of peak over the run},
     "peak_memory": {level: bytes on the fullest chip},
     "ops": [{"name", "op", "engine", "chip", "start_s", "duration_s", "flops",
              "bytes": {level: int}, "bound", "utilization", "format",
              "kernel": int (the fused kernel the record is part of) | null (transfers),
              "format_reason": str (why it computes in that format: backends/precision.py)}]}

Trace (``to_chrome_trace``): the Trace Event Format's complete ("X") events in
microseconds, one process per chip (pid = chip) and one thread per engine (tid), named
with metadata events so Perfetto and chrome://tracing label the tracks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

from .schedule import Schedule


def to_dict(s: Schedule) -> dict:
    steady = s.steady
    tokens_per_s = steady.throughput_per_s * steady.tokens_per_pass if steady.tokens_per_pass else None
    return {"target": s.target, "family": s.family, "precision": s.precision, "launch": s.launch,
            "totals": {"latency_s": s.latency_s, "energy_j": s.energy_j, "cost_usd": s.cost_usd, "chips": s.chips,
                       "kernels": s.kernels, "period_s": steady.period_s, "throughput_per_s": steady.throughput_per_s,
                       "joules_per_pass": steady.joules_per_pass, "usd_per_pass": steady.usd_per_pass,
                       "tokens_per_pass": steady.tokens_per_pass, "tokens_per_s": tokens_per_s,
                       "joules_per_token": steady.per_token(steady.joules_per_pass),
                       "usd_per_token": steady.per_token(steady.usd_per_pass)},
            "deployment": deployment(s), "memory_per_chip": memory_per_chip(s),
            "utilization": s.utilization, "peak_memory": s.peak_memory, "ops": [asdict(o) for o in s.ops]}


def deployment(s: Schedule) -> dict:
    d = s.deployment
    return {"chips": d.chips, **d.as_dict()}


def memory_per_chip(s: Schedule) -> list[dict]:
    """Per pipeline stage, what each of its chips holds, in bytes."""
    return [{"stage": i, "chips": list(s.deployment.group(i)), "level": s.memory_level, "capacity": m.capacity,
             "weights": m.weights, "kv": m.kv, "activations": m.activations, "reserve": m.reserve, "free": m.free}
            for i, m in enumerate(s.memory)]


def to_json(s: Schedule) -> str:
    return json.dumps(to_dict(s), indent=1)


def format_table(s: Schedule, limit: int | None = None) -> str:
    """Per-op rows (start order), then totals, utilization and peak memory."""
    rows = sorted(s.ops, key=lambda o: (o.start_s, o.chip))
    shown = rows if limit is None else rows[:limit]
    levels = sorted({level for o in rows for level in o.bytes})
    head = f"{'op':32} {'type':18} {'kernel':>6} {'engine':12} {'chip':>4} {'start us':>10} {'dur us':>9} " \
        f"{'MFLOP':>10} " + \
        " ".join(f"{level + ' MB':>10}" for level in levels) + f" {'bound':12} {'util':>5}"
    lines = [f"schedule of {s.target} ({s.family}), {len(rows)} ops", *precision_lines(s), head]
    for o in shown:
        kernel = "" if o.kernel is None else o.kernel
        lines.append(f"{short_name(o.name):32} {o.op[:18]:18} {kernel:>6} {o.engine[:12]:12} {o.chip:>4} "
                     f"{o.start_s * 1e6:>10.2f} {o.duration_s * 1e6:>9.2f} {o.flops / 1e6:>10.3f} "
                     + " ".join(f"{o.bytes.get(level, 0) / 1e6:>10.3f}" for level in levels)
                     + f" {o.bound:12} {o.utilization:>5.2f}")
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more ops")
    graph = " in one CUDA Graph per chip" if s.launch == "graph" else ""
    lines.append(f"latency {s.latency_s * 1e3:.4f} ms, energy {s.energy_j:.4g} J, cost ${s.cost_usd:.4g}, "
                 f"{s.chips} chip(s), {s.kernels} kernels{graph}")
    lines += _deployment_lines(s)
    lines.append("utilization: " + ", ".join(f"{k} {v:.1%}" for k, v in s.utilization.items()))
    lines.append("peak memory: " + ", ".join(f"{k} {v / 1e6:,.2f} MB" for k, v in s.peak_memory.items()))
    return "\n".join(lines)


def _deployment_lines(s: Schedule) -> list[str]:
    """The deployment, its steady state (kept full), and the fullest chip's memory."""
    d, steady = s.deployment, s.steady
    lines = [f"deployment: {d.chips} chip(s) = {d.describe()}"]
    state = (f"steady state: {steady.throughput_per_s:,.4g} passes/s (period {steady.period_s * 1e3:.4f} ms), "
             f"{steady.joules_per_pass:.4g} J and ${steady.usd_per_pass:.4g} per pass")
    if steady.tokens_per_pass:
        state += (f"; {steady.throughput_per_s * steady.tokens_per_pass:,.4g} tokens/s, "
                  f"{steady.per_token(steady.joules_per_pass):.4g} J and "
                  f"${steady.per_token(steady.usd_per_pass) * 1e6:.4g} per million tokens")
    lines.append(state)
    stage = max(range(len(s.memory)), key=lambda i: s.memory[i].used)
    m = s.memory[stage]
    where = f"stage {stage} of {len(s.memory)}, the fullest" if len(s.memory) > 1 else "each chip"
    lines.append(f"memory per chip ({s.memory_level}, {where}): weights {m.weights / 1e9:,.3f} GB, "
                 f"KV {m.kv / 1e9:,.3f} GB, activations {m.activations / 1e9:,.3f} GB, "
                 f"reserve {m.reserve / 1e9:,.3f} GB, free {m.free / 1e9:,.3f} GB of {m.capacity / 1e9:,.3f} GB")
    return lines


PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"))


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """``value`` with an SI prefix and ``digits`` significant figures: ``si(0.000126, "s") == "126 us"``."""
    if not value or not math.isfinite(value):
        return f"{value:g} {unit}".rstrip()
    for scale, prefix in PREFIXES:
        scaled = float(f"{value / scale:.{digits}g}")
        if abs(scaled) >= 1 or scale == PREFIXES[-1][0]:
            return f"{scaled:g} {prefix}{unit}".rstrip()


def precision_lines(s: Schedule) -> list[str]:
    """The policy, then each (engine, format, reason) the ops ran with and how many ran so."""
    p = s.precision
    lines = [f"precision {p.get('policy', 'native')}: weights {p.get('weights', '?')}, activations "
             f"{p.get('activations', '?')}, KV cache {p.get('kv', '?')}"]
    used: dict[tuple[str, str, str], int] = {}
    for o in s.ops:
        if o.format_reason:
            key = (o.engine, o.format, o.format_reason)
            used[key] = used.get(key, 0) + 1
    lines += [f"  {count:6d} {'op ' if count == 1 else 'ops'} on {engine:12} {fmt:7} {reason}"
              for (engine, fmt, reason), count in sorted(used.items(), key=lambda item: -item[1])]
    return lines


def short_name(name: str, width: int = 32) -> str:
    """A record name cut to ``width`` from the middle: the end says which slice or companion it is."""
    return name if len(name) <= width else name[:width // 2 - 1] + "~" + name[-(width // 2):]


def to_chrome_trace(s: Schedule) -> dict:
    tracks = sorted({(o.chip, o.engine) for o in s.ops})
    tids = {track: i for i, track in enumerate(tracks)}
    events = [{"ph": "M", "name": "process_name", "pid": chip, "args": {"name": f"{s.target} chip {chip}"}}
              for chip in sorted({c for c, _ in tracks})]
    events += [{"ph": "M", "name": "thread_name", "pid": chip, "tid": tids[(chip, engine)], "args": {"name": engine}}
               for chip, engine in tracks]
    events += [{"ph": "X", "name": o.name, "cat": o.bound, "pid": o.chip, "tid": tids[(o.chip, o.engine)],
                "ts": o.start_s * 1e6, "dur": o.duration_s * 1e6,
                "args": {"op": o.op, "kernel": o.kernel, "flops": o.flops, "bytes": o.bytes, "bound": o.bound,
                         "utilization": round(o.utilization, 4), "format": o.format}} for o in s.ops]
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"target": s.target, "latency_s": s.latency_s, "energy_j": s.energy_j,
                          **s.deployment.as_dict()}}
