"""Pareto fronts and best points on hand-made rows; the text and HTML reports built from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xpuc.sweep import SCHEDULE, SweepSpecError
from xpuc.sweep.evaluate import Metric
from xpuc.sweep.html import page
from xpuc.sweep.pareto import best_per_target, front
from xpuc.sweep.runner import SweepResult
from xpuc.sweep.spec import COLUMNS, ReportSpec, SweepSpec
from xpuc.sweep.svg import Axis
from xpuc.sweep.tables import format_report

METRICS = {"latency_s": Metric("float", "lower", ""), "cost_usd": Metric("float", "lower", ""),
           "tokens_per_s": Metric("float", "higher", ""), "bound": Metric("str", None, "")}


def row(target, latency, cost, tokens=None, error=None, batch=1):
    base = {c: None for c in COLUMNS}
    return {**base, "point_id": f"{target}-{latency}-{cost}", "target": target, "batch": batch,
            "latency_s": latency, "cost_usd": cost, "tokens_per_s": tokens, "bound": "memory", "error": error}


ROWS = [row("a", 1.0, 9.0), row("a", 2.0, 4.0), row("a", 3.0, 5.0),  # (3, 5) is beaten by (2, 4)
        row("b", 2.5, 2.0), row("b", 4.0, 1.0), row("b", 5.0, 1.0),  # (5, 1) ties (4, 1) on cost, slower
        row("c", 0.5, None), row("c", 0.1, 0.1, error="ScheduleError: does not fit")]


def test_front_keeps_the_points_nothing_beats_on_both():
    got = [(r["latency_s"], r["cost_usd"]) for r in front(ROWS, "latency_s", "cost_usd", METRICS)]
    assert got == [(1.0, 9.0), (2.0, 4.0), (2.5, 2.0), (4.0, 1.0)]


def test_front_follows_each_metrics_direction():
    rows = [row("a", 1.0, 1.0, tokens=10.0), row("a", 2.0, 1.0, tokens=30.0), row("a", 3.0, 1.0, tokens=20.0)]
    got = [(r["latency_s"], r["tokens_per_s"]) for r in front(rows, "tokens_per_s", "latency_s", METRICS)]
    assert got == [(2.0, 30.0), (1.0, 10.0)]


def test_best_per_target_within_limits():
    best = best_per_target(ROWS, "cost_usd", {}, METRICS)
    assert {t: r and (r["latency_s"], r["cost_usd"]) for t, r in best.items()} == \
        {"a": (2.0, 4.0), "b": (4.0, 1.0), "c": None}
    best = best_per_target(ROWS, "cost_usd", {"latency_s": 2.5}, METRICS)
    assert {t: r and r["latency_s"] for t, r in best.items()} == {"a": 2.0, "b": 2.5, "c": None}


def test_a_label_is_no_pareto_metric():
    with pytest.raises(SweepSpecError, match="'bound' is not a metric"):
        front(ROWS, "latency_s", "bound", METRICS)


def test_log_axis_where_values_span_decades():
    assert Axis([1e-6, 1e-2], 0, 100).log and not Axis([1.0, 50.0], 0, 100).log
    linear = Axis([0.0, 10.0], 0, 100)
    assert linear(0.0) < linear(10.0) and linear.ticks() == [0, 2, 4, 6, 8, 10]
    log = Axis([1e-6, 1e-2], 100, 0)  # y grows upwards
    assert log(1e-6) > log(1e-2) and log.ticks() == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]


def result(rows, limits=None) -> SweepResult:
    spec = SweepSpec([], {}, {}, {}, ReportSpec(("latency_s", "cost_usd"), "cost_usd", limits or {}), "s.toml")
    return SweepResult(Path("out.parquet"), spec, SCHEDULE, len(rows), 0, rows)


def test_text_report_counts_failures_and_lists_front_and_best():
    rows = [{**r, **{k: None for k in SCHEDULE.metrics if k not in r}} for r in ROWS]
    text = format_report(result(rows, {"latency_s": 2.5}))
    assert "8 points in out.parquet: 8 evaluated now, 0 already there; 1 failed" in text
    assert "1 x c: ScheduleError: does not fit" in text
    assert "4 of 6 points" in text  # c's first row has no cost, its second failed
    front_lines = text.split("Pareto front")[1].split("best point")[0].strip().splitlines()[2:]
    assert [line.split()[:3] for line in front_lines] == [["a", "1", "9"], ["a", "2", "4"], ["b", "2.5", "2"],
                                                          ["b", "4", "1"]]
    assert "by cost_usd within latency_s <= 2.5" in text and "c: no point within" in text


def test_html_report_is_one_self_contained_page():
    rows = [{**r, **{k: None for k in SCHEDULE.metrics if k not in r}} for r in ROWS]
    html = page(result(rows))
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 1
    assert not re.search(r"<script|<link|src=|url\(", html)
    assert len(re.findall(r'<circle [^>]*fill="#', html)) == 6 + 2  # one per drawn point, a legend dot per target drawn (c has none)
    assert html.count('r="5" fill="none"') == 4 + 1  # the front's four points and its legend
    assert "Best point per target by cost_usd" in html and "ScheduleError: does not fit" in html
