"""Printing a comparison (``backends.portability``): a table, the porting cost per target, the
assumptions behind every dollar and joule, and the same as JSON and CSV.

JSON schema (``to_dict``)::

    {"model", "precision", "unit": "token" | "inference", "units_per_pass", "latency_target_s",
     "performance_portability", "assumptions": [str],
     "targets": [{"target", "family", "cannot_run", "formats": {format: share of FLOPs}, "chips",
                  "deployment": {"chips"[, parallel degrees, memory per chip]}, "latency_s", "basis",
                  "throughput_per_s", "per_s_per_usd_hour", "per_s_per_watt",
                  "joules_per_unit", "usd_per_million_units", "meets_latency_target", "flops",
                  "peak_flops_per_s", "efficiency", "porting_share", "porting_cost",
                  "ledger": [{kind, op, engine, formats, reason, records, time_s, energy_j, bytes, ops}],
                  "accuracy": {"format", "note", "outputs": {name: {max_abs, rel_l2, cosine[, top1, kl]}}}
                  [, "serving": {"cannot_serve", xpuc llm --json's keys, "batch_one": {the same} | null}]}]
     [, "serving_request": {"batch": int | null (each target's largest), "prompt_len", "gen_len"}]}

``serving`` and ``serving_request`` are there with the LLM options (``xpuc compare --llm``,
``backends.portability_serving``); so are the CSV's ``serving_*`` columns and the table's serving block.
"""

from __future__ import annotations

import csv
import io
import json

from .portability import Comparison, Row
from .portability_serving import CSV_COLUMNS as SERVING_COLUMNS
from .portability_serving import Serving, csv_cells, format_block
from .report import si

UNIT_SHORT = {"token": "tok", "inference": "inf"}


def headline(accuracy: dict | None) -> tuple[str, dict] | None:
    """The output whose accuracy a table shows: the first logits, else the first output."""
    if not accuracy:
        return None
    name = next((n for n, a in accuracy.items() if "top1" in a), next(iter(accuracy)))
    return name, accuracy[name]


def accuracy_cell(row: Row) -> str:
    found = headline(row.accuracy)
    if found is None:
        return "n/a"
    a = found[1]
    return f"{row.accuracy_format} {a['rel_l2']:.2g}" + (f" {a['top1']:.1%}" if "top1" in a else "")


def formats_cell(formats: dict[str, float]) -> str:
    return " ".join(f"{f} {share:.0%}" for f, share in formats.items() if share >= 0.005) or "-"


def row_dict(r: Row) -> dict:
    e = r.economics
    return {"target": r.target, "family": r.family, "cannot_run": r.cannot_run, "formats": r.formats,
            "chips": r.chips, "deployment": r.deployment, "latency_s": r.latency_s, "basis": r.basis,
            "throughput_per_s": e and e.per_s, "per_s_per_usd_hour": e and e.per_s_per_usd_hour,
            "per_s_per_watt": e and e.per_s_per_watt, "joules_per_unit": e and e.joules,
            "usd_per_million_units": e and e.usd_per_million, "meets_latency_target": r.meets_latency,
            "flops": r.flops, "peak_flops_per_s": r.peak_flops_per_s, "efficiency": r.efficiency,
            "porting_share": r.ledger and r.ledger.porting_share, "porting_cost": r.ledger and r.ledger.brief(),
            "ledger": [x.to_dict() for x in r.ledger.entries] if r.ledger else [],
            "accuracy": {"format": r.accuracy_format, "note": r.accuracy_note, "outputs": r.accuracy}}


def to_dict(c: Comparison, serving: Serving | None = None) -> dict:
    """The comparison as JSON-ready data (schema above); ``serving``: the LLM options' analyses."""
    cheapest, frugal = c.least(lambda e: e.usd_per_million), c.least(lambda e: e.joules)
    out = {"model": c.model, "precision": c.precision, "unit": c.work.unit, "units_per_pass": c.work.count,
           "latency_target_s": c.latency_target_s, "performance_portability": c.portability,
           "cheapest": cheapest and {"target": cheapest.target,
                                     "usd_per_million_units": cheapest.economics.usd_per_million},
           "least_energy": frugal and {"target": frugal.target,
                                       "joules_per_million_units": 1e6 * frugal.economics.joules},
           "assumptions": assumptions(c), "targets": [row_dict(r) for r in c.rows]}
    if serving:
        out["serving_request"] = serving.request()
        for row in out["targets"]:
            row["serving"] = serving.of(row["target"]).to_dict()
    return out


def to_json(c: Comparison, serving: Serving | None = None) -> str:
    return json.dumps(to_dict(c, serving), indent=1)


CSV_COLUMNS = ("target", "family", "cannot_run", "formats", "chips", "latency_s", "basis", "throughput_per_s",
               "per_s_per_usd_hour", "per_s_per_watt", "joules_per_unit", "usd_per_million_units",
               "meets_latency_target", "efficiency", "porting_share", "porting_cost", "accuracy_format",
               "accuracy_output", "max_abs", "rel_l2", "cosine", "top1", "kl")


def to_csv(c: Comparison, serving: Serving | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS + (SERVING_COLUMNS if serving else ()), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in c.rows:
        flat = row_dict(r)
        flat["formats"] = formats_cell(r.formats)
        flat["accuracy_format"] = r.accuracy_format
        found = headline(r.accuracy)
        if found:
            flat["accuracy_output"] = found[0]
            flat.update(found[1])
        if serving:
            flat.update(csv_cells(serving.of(r.target)))
        writer.writerow(flat)
    return out.getvalue()


def format_table(c: Comparison, serving: Serving | None = None) -> str:
    unit = UNIT_SHORT[c.work.unit]
    head = (f"{'target':17} {'formats':15} {'chips':>5} {'latency':>9} {unit + '/s':>9} {unit + '/s/$h':>9} "
            f"{unit + '/s/W':>9} {'J/' + unit:>9} {'$/M' + unit:>9} {'porting':>7} {'rel L2, top-1':>18} {'eff':>7}")
    lines = [f"{c.model}: {c.work.count} {c.work.unit}s per pass, precision {c.precision}", head]
    for r in c.rows:
        if r.cannot_run:
            lines.append(f"{r.target:17} cannot run: {r.cannot_run}")
            continue
        e = r.economics
        late = "*" if r.meets_latency is False else " "
        lines.append(f"{r.target:17} {formats_cell(r.formats)[:15]:15} {r.chips:>5} {si(r.latency_s, 's'):>8}{late} "
                     f"{si(e.per_s):>9} {si(e.per_s_per_usd_hour):>9} {si(e.per_s_per_watt):>9} {e.joules:>9.3g} "
                     f"{e.usd_per_million:>9.3g} {r.ledger.porting_share:>7.1%} {accuracy_cell(r):>18} "
                     f"{r.efficiency:>7.2%}")
    lines.append(f"{unit}/s/$h: {c.work.unit}s per second per dollar-hour of the deployment; {unit}/s/W: per watt "
                 f"of its average power; porting: share of time in the fallback ledger; {accuracy_legend(c)}; "
                 "eff: achieved over peak FLOP/s")
    lines.append(f"performance portability (Pennycook et al., harmonic mean of efficiency): {c.portability:.4g} "
                 f"over {len(c.rows)} targets" + ("" if all(not r.cannot_run for r in c.rows)
                                                   else " (0: a target cannot run the model)"))
    lines.append(cost_per_unit(c))
    if serving:
        lines += format_block(serving)
    lines.append("porting cost (fallback ledger):")
    lines += [f"  {r.target:17} {r.ledger.brief()}" for r in c.rows if r.ledger]
    lines.append("assumptions:")
    lines += [f"  {a}" for a in assumptions(c)]
    return "\n".join(lines)


def cost_per_unit(c: Comparison) -> str:
    """The hardware-neutral cost per unit of work (docs/portability.md): the least dollars and the
    least joules per million units among the targets within the latency target."""
    unit = c.work.unit
    within = "without a latency target" if c.latency_target_s is None else \
        f"within {si(c.latency_target_s, 's')} per pass"
    cheapest, frugal = c.least(lambda e: e.usd_per_million), c.least(lambda e: e.joules)
    if cheapest is None:
        return f"cost per million {unit}s {within}: no target meets it"
    return (f"cost per million {unit}s {within}: least ${cheapest.economics.usd_per_million:.3g} on "
            f"{cheapest.target}, least {si(1e6 * frugal.economics.joules, 'J')} on {frugal.target}")


def assumptions(c: Comparison) -> list[str]:
    """Everything a dollar, joule or accuracy figure of the comparison rests on, in words."""
    basis = sorted({r.basis for r in c.rows if r.basis}) or ["steady state"]
    unit = c.work.unit
    lines = [
        f"work: {c.work.count} {unit}s per pass of the graph as given (for an LLM: one prefill pass; "
        "decode needs the LLM options)",
        f"time per pass: {', '.join(basis)} (the deployment kept full, pipeline stages overlapped across "
        "passes: its slowest stage's time per pass)",
        "dollars: the deployment's chips x price per chip-second x time per pass; a purchase price is spread "
        "over its amortization years with the chips busy all the time; no host, network or facility cost",
        "energy: chips' idle power x chips x time, plus each op's dynamic energy (TDP headroom x activity, "
        "or per-MAC and per-byte energies); chips only, PUE 1",
        "efficiency: FLOPs per pass / time per pass / (chips x the chip's peak in the format most FLOPs ran "
        "in, on its fastest engine for that format)",
        "porting share: own time of host fallbacks, products on vector engines, format conversions and "
        "the collectives of ops cut over chips, over all records' own time (kernel launches are the kernels')",
        f"latency target: {'none' if c.latency_target_s is None else f'{c.latency_target_s * 1e3:g} ms'}"
        + ("" if c.latency_target_s is None else " (* marks a target that misses it)"),
        f"accuracy: against float32 on the same seeded inputs; {_accuracy_basis(c)}",
    ]
    for t in c.targets:
        p, w = t.price, t.power
        price = (f"${p.usd_per_chip_hour:g} per chip-hour" if p.usd_per_chip_hour is not None else
                 f"${p.purchase_usd:,.0f} per chip over {p.amortization_years:g} years "
                 f"(${p.usd_per_second() * 3600:.3g} per chip-hour)")
        power = (f"{w.idle_w:g} W idle, {w.tdp_w:g} W TDP" if w.energy_per_mac_j is None else
                 f"{w.idle_w:g} W idle, {w.energy_per_mac_j * 1e12:g} pJ per MAC")
        lines.append(f"{t.name}: {price}; {power} (sources: `xpuc targets show {t.name}`)")
    return lines


def accuracy_legend(c: Comparison) -> str:
    """What the accuracy column shows, or why it is empty."""
    found = next((headline(r.accuracy) for r in c.rows if r.accuracy), None)
    if found is None:
        return "accuracy " + next((r.accuracy_note for r in c.rows if r.accuracy_note), "not measured")
    return f"accuracy: relative L2 and top-1 agreement of output {found[0]!r} against float32, in the format shown"


def _accuracy_basis(c: Comparison) -> str:
    notes = sorted({r.accuracy_note for r in c.rows if r.accuracy_note})
    return "; ".join(notes) or "none measured"
