"""Sweep specs: grid, zip, explicit points, hardware variants, the evaluator, and one clear error per bad spec."""

from __future__ import annotations

import dataclasses

import pytest

import backends
from xpuc.cli import DEFAULT_MODEL
from xpuc.sweep import SCHEDULE, SweepSpecError
from xpuc.sweep.evaluate import EVALUATORS, prepare_graph, schedule_metrics, unused_axes
from xpuc.sweep.spec import Deployment, Point, parse

TINY = {"name": "tiny", "path": str(DEFAULT_MODEL)}


def spec(**tables):
    return parse(tables, EVALUATORS)


def test_grid_crosses_axes_and_zip_ties_them():
    s = spec(axes={"model": [TINY], "target": ["h100-sxm", "tpu-v4"], "batch": [1, 2, 4],
                   "prompt_tokens": [16, 64], "output_tokens": [8, 32]},
             sweep={"zip": [["prompt_tokens", "output_tokens"]]})
    got = {(p.target, p.batch, p.prompt_tokens, p.output_tokens) for p in s.points}
    assert len(s.points) == 2 * 3 * 2 == len(got)
    assert {(prompt, out) for _, _, prompt, out in got} == {(16, 8), (64, 32)}  # tied, never (16, 32)
    assert all(p.precision is None and p.deployment is None and p.rate_per_s is None for p in s.points)


def test_list_mode_takes_the_ith_value_of_every_axis_and_repeats_single_values():
    s = spec(axes={"model": [TINY], "target": ["h100-sxm", "tpu-v4", "groq-lpu"], "batch": [1, 2, 4],
                   "precision": "int8"}, sweep={"mode": "list"})
    assert [(p.target, p.batch, p.precision) for p in s.points] == \
        [("h100-sxm", 1, "int8"), ("tpu-v4", 2, "int8"), ("groq-lpu", 4, "int8")]


def test_explicit_points_fix_axes_and_cross_the_rest():
    s = spec(axes={"target": ["h100-sxm", "tpu-v4"], "batch": [1, 8]},
             points=[{"model": TINY, "batch": 2, "deployment": {"chips": 8, "tp": 8, "pp": 1}},
                     {"model": TINY, "precision": "int4"}])
    got = sorted((p.target, p.batch, p.precision, p.deployment) for p in s.points)
    eight = Deployment(8, 8, 1)
    assert got == sorted([("h100-sxm", 2, None, eight), ("tpu-v4", 2, None, eight),
                          ("h100-sxm", 1, "int4", None), ("h100-sxm", 8, "int4", None),
                          ("tpu-v4", 1, "int4", None), ("tpu-v4", 8, "int4", None)])


def test_a_variant_is_a_target_whose_changed_numbers_cite_the_preset_they_vary():
    s = spec(axes={"model": [TINY], "target": ["tpu-v4", "fast-hbm"]},
             variants={"fast-hbm": {"base": "tpu-v4", "scale": {"memory.hbm.bandwidth_bytes_per_s": 2},
                                    "set": {"price.usd_per_chip_hour": 6.44, "engines.mxu.count": 16}}})
    base, variant = s.targets["tpu-v4"], s.targets["fast-hbm"]
    assert variant.name == "fast-hbm" and s.bases["fast-hbm"] == "tpu-v4"
    assert variant.by_role("hbm").bandwidth_bytes_per_s == 2 * 1.2e12
    assert variant.price.usd_per_chip_hour == 6.44 and variant.engines["mxu"].count == 16
    assert variant.by_role("hbm").capacity_bytes == base.by_role("hbm").capacity_bytes
    changed = {"memory[1].bandwidth_bytes_per_s", "price.usd_per_chip_hour", "engines.mxu.count"}
    assert {k for k, v in variant.provenance.items() if v == "sweep-variant"} == changed
    citation = variant.sources["sweep-variant"]
    assert "of preset 'tpu-v4'" in citation and "was 1.2e+12, source gcp" in citation and "was 8" in citation


def test_a_price_variant_changes_cost_by_the_price_ratio_and_nothing_else():
    s = spec(axes={"model": [TINY], "target": ["tpu-v4", "pricier"]},
             variants={"pricier": {"base": "tpu-v4", "set": {"price.usd_per_chip_hour": 3 * 3.22}}})
    graph = prepare_graph(s.models["tiny"], s.points[0])
    base, pricier = (schedule_metrics(graph, s.targets[t], s.points[0]) for t in ("tpu-v4", "pricier"))
    assert pricier["latency_s"] == base["latency_s"] and pricier["energy_j"] == base["energy_j"]
    assert pricier["cost_usd"] == pytest.approx(3 * base["cost_usd"], rel=1e-12)
    # cost of one pass = price per chip-second x chips x latency
    assert base["cost_usd"] == pytest.approx(3.22 / 3600 * base["chips"] * base["latency_s"], rel=1e-12)


def test_the_evaluator_reports_the_schedules_totals_and_names_axes_it_does_not_apply():
    s = spec(axes={"model": [TINY], "target": ["h100-sxm"], "batch": [2], "prompt_tokens": [16],
                   "deployment": [{"chips": 2}], "rate_per_s": [3]})
    point = s.points[0]
    graph = prepare_graph(s.models["tiny"], point)
    assert graph.values["input_ids"].type.shape == (2, 16)
    metrics = schedule_metrics(graph, s.targets["h100-sxm"], point)
    plan = backends.schedule(graph, s.targets["h100-sxm"], chips=2)
    assert set(metrics) == set(SCHEDULE.metrics)
    assert (metrics["latency_s"], metrics["energy_j"], metrics["cost_usd"], metrics["chips"], metrics["kernels"]) == \
        (plan.latency_s, plan.energy_j, plan.cost_usd, 2, plan.kernels)
    assert (metrics["deploy_tp_chosen"], metrics["deploy_pp_chosen"]) == (2, 1)  # the widest tp within NVLink
    # kept full, one stage: a pass per latency, 32 tokens each, two chips at $4.9 an hour each
    assert metrics["period_s"] == plan.latency_s and metrics["throughput_per_s"] == pytest.approx(1 / plan.latency_s)
    assert metrics["tokens_per_s"] == pytest.approx(32 / plan.latency_s, rel=1e-12)
    assert metrics["usd_per_token"] == pytest.approx(2 * 4.9 / 3600 * plan.latency_s / 32, rel=1e-12)
    assert metrics["peak_memory_bytes"] == plan.peak_memory["hbm"] and metrics["memory_level"] == "hbm"
    assert metrics["prefill_tokens_per_s"] == pytest.approx(2 * 16 / plan.latency_s, rel=1e-12)
    assert metrics["prefill_usd_per_mtok"] == pytest.approx(plan.cost_usd / (2 * 16) * 1e6, rel=1e-12)
    assert unused_axes(SCHEDULE, point) == "rate_per_s"
    assert unused_axes(SCHEDULE, dataclasses.replace(point, deployment=None, rate_per_s=None)) is None


def test_point_ids_are_stable_and_change_with_a_variants_definition():
    axes = {"model": [TINY], "target": ["v"]}
    one = spec(axes=axes, variants={"v": {"base": "tpu-v4", "scale": {"memory.hbm.bandwidth_bytes_per_s": 2}}})
    again = spec(axes=axes, variants={"v": {"base": "tpu-v4", "scale": {"memory.hbm.bandwidth_bytes_per_s": 2}}})
    other = spec(axes=axes, variants={"v": {"base": "tpu-v4", "scale": {"memory.hbm.bandwidth_bytes_per_s": 3}}})
    ids = [s.point_id(s.points[0]) for s in (one, again, other)]
    assert ids[0] == ids[1] != ids[2]


BAD = [
    ({"axes": {"model": [TINY], "target": ["tpu-v4"], "batchsize": [1]}}, "unknown axis(s) 'batchsize'"),
    ({"axes": {"model": [TINY], "target": ["tpu-v9"]}}, "unknown target 'tpu-v9'"),
    ({"axes": {"model": ["llama-9"], "target": ["tpu-v4"]}}, "unknown model 'llama-9'"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"], "precision": ["int3"]}}, "unknown precision 'int3'"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"], "batch": [0]}}, "batch must be a positive integer"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"], "deployment": [{"chips": 8, "tp": 4, "pp": 1}]}},
     "chips must be tp x pp"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"], "deployment": [{"dp": 2}]}}, "unknown key(s) 'dp'"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"], "batch": [1, 2], "prompt_tokens": [8, 16, 32]},
      "sweep": {"zip": [["batch", "prompt_tokens"]]}}, "batch has 2, prompt_tokens has 3"),
    ({"axes": {"model": [TINY], "target": ["v"]},
      "variants": {"v": {"base": "groq-lpu", "scale": {"memory.hbm.bandwidth_bytes_per_s": 2}}}},
     "groq-lpu has no memory level 'hbm' (levels: sram)"),
    ({"axes": {"model": [TINY], "target": ["v"]},
      "variants": {"v": {"base": "tpu-v4", "scale": {"engines.mxu.counts": 2}}}}, "tpu-v4 has no number "
                                                                                  "'engines.mxu.counts'"),
    ({"axes": {"model": [TINY], "target": ["v"]},
      "variants": {"v": {"base": "tpu-v4", "set": {"engines.gpu.count": 2}}}}, "has no table 'engines.gpu'"),
    ({"axes": {"model": [TINY], "target": ["v"]},
      "variants": {"v": {"base": "tpu-v4", "set": {"memory.hbm.bandwidth_bytes_per_s": -1}}}}, "must be a finite "
                                                                                               "number > 0"),
    ({"axes": {"model": [TINY], "target": ["v"]}, "variants": {"v": {"base": "tpu-v7", "set": {}}}},
     "unknown base 'tpu-v7'"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"]}, "report": {"pareto": ["latency_s", "usd_per_mtok"]}},
     "'usd_per_mtok' is not a metric"),
    ({"axes": {"model": [TINY], "target": ["tpu-v4"]}, "report": {"best": "bound"}}, "'bound' is not a metric"),
    ({"axes": {"target": ["tpu-v4"]}}, "no model"),
    ({"axis": {"model": [TINY]}}, "unknown key(s) 'axis'"),
]


@pytest.mark.parametrize("tables, message", BAD, ids=[m for _, m in BAD])
def test_a_bad_spec_is_one_clear_error(tables, message):
    with pytest.raises(SweepSpecError) as err:
        parse(tables, EVALUATORS, origin="bad.toml")
    assert message in str(err.value) and str(err.value).startswith("bad.toml: ")


def test_points_are_unique():
    s = spec(axes={"model": [TINY], "target": ["tpu-v4", "tpu-v4"], "batch": [1, 1]})
    assert s.points == [Point("tiny", "tpu-v4")]


def test_only_the_sweep_imports_the_sweep_extra():
    """dask, distributed, pyarrow and tqdm are the ``sweep`` extra: compiling and scheduling never need them."""
    from test_layers import ROOT, imported

    extra = ("dask", "distributed", "pyarrow", "tqdm")
    users = {str(path.relative_to(ROOT)) for layer in ("ir", "frontends", "backends", "runtime", "xpuc")
             for path in (ROOT / layer).rglob("*.py")
             if any(n == e or n.startswith(e + ".") for n in imported(path) for e in extra)}
    assert users and all(u.startswith("xpuc/sweep/") for u in users), users
