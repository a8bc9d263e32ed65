"""The serving evaluator of sweeps (``[sweep] evaluator = "llm"``): each row is ``xpuc llm``'s analysis
of its point, computed again here with ``analyze`` for the same arguments."""

from __future__ import annotations

import pytest

import backends
from xpuc.analysis import analyze
from xpuc.sweep import EVALUATORS, LLM, SCHEDULE, SweepError, SweepSpecError, run
from xpuc.sweep.spec import parse

distributed = pytest.importorskip("distributed")

SPEC = {"sweep": {"evaluator": "llm"},
        "axes": {"model": "llama-3-8b", "target": ["h100-sxm", "tpu-v5e", "no-room"], "batch": [1, 8],
                 "prompt_tokens": 128, "output_tokens": 32, "rate_per_s": 2.0},
        "variants": {"no-room": {"base": "h100-sxm", "set": {"memory.hbm.capacity_bytes": 1e6}}}}


def test_rows_are_the_llm_analysis_of_their_points(tmp_path):
    spec = parse(SPEC, EVALUATORS)
    assert spec.evaluator == "llm" and spec.report.pareto == ("usd_per_mtok", "tokens_per_s_per_user")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  silence_logs=50) as cluster:
        result = run(spec, tmp_path / "out.parquet", scheduler=cluster.scheduler_address, progress=False)
        with pytest.raises(SweepError, match="other columns"):  # a schedule sweep cannot resume into it
            run(parse({**SPEC, "sweep": {}}, EVALUATORS), tmp_path / "out.parquet",
                scheduler=cluster.scheduler_address, progress=False, resume=True)
    assert result.evaluator is LLM and len(result.rows) == 6
    for row in result.rows:
        if row["target"] == "no-room":  # the model fits no deployment: the row says why, no metrics
            assert row["error"].startswith("ScheduleError: the model does not fit no-room"), row["error"]
            assert row["ttft_s"] is None
            continue
        want = analyze("llama-3-8b", backends.load_target(row["target"]), "native", None, None, None, row["batch"],
                       128, 32)
        assert row["error"] is None and row["unused_axes"] == "rate_per_s"
        for name in ("ttft_s", "tpot_s", "tokens_per_s_per_user", "tokens_per_s", "usd_per_mtok", "joules_per_token",
                     "chips", "max_batch"):
            assert row[name] == pytest.approx(getattr(want, name)), name
        assert (row["deploy_tp_chosen"], row["deploy_pp_chosen"]) == (want.deployment["tp"], want.deployment["pp"])
        assert row["batch_served"] == row["batch"]


def test_a_spec_without_batch_serves_the_largest_that_fits():
    axes = {k: v for k, v in SPEC["axes"].items() if k != "batch"}
    point = parse({**SPEC, "axes": {**axes, "target": "h100-sxm"}}, EVALUATORS).points[0]
    assert point.batch is None
    got = LLM.evaluate("llama-3-8b", backends.load_target("h100-sxm"), point)
    want = analyze("llama-3-8b", "h100-sxm", batch=None, prompt_len=128, gen_len=32)
    assert got["batch_served"] == got["max_batch"] == want.max_batch > 1
    assert got["tokens_per_s"] == pytest.approx(want.tokens_per_s)


def test_the_default_evaluator_is_still_the_scheduled_pass():
    spec = parse({**SPEC, "sweep": {}}, EVALUATORS)
    assert spec.evaluator == "schedule" and spec.report.pareto == SCHEDULE.pareto
    assert parse({**SPEC, "sweep": {}, "axes": {"model": "llama-3-8b", "target": "h100-sxm"}},
                 EVALUATORS).points[0].batch == 1
    assert SCHEDULE.unused == ("output_tokens", "rate_per_s") and LLM.unused == ("rate_per_s",)


def test_a_metric_the_evaluator_lacks_is_an_error():
    with pytest.raises(SweepSpecError, match="'cost_usd' is not a metric"):
        parse({**SPEC, "report": {"best": "cost_usd"}}, EVALUATORS)
    with pytest.raises(SweepSpecError, match="evaluator must be one of"):
        parse({**SPEC, "sweep": {"evaluator": "serve"}}, EVALUATORS)


def test_the_documented_example_is_an_llm_sweep():
    from pathlib import Path

    from xpuc.sweep import load

    spec = load(Path(__file__).parents[1] / "docs" / "sweep-llm-example.toml", EVALUATORS)
    assert spec.evaluator == "llm" and len(spec.points) == 4
