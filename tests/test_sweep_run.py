"""Sweeps on a real Dask LocalCluster: a worker killed mid-sweep loses no row; a resumed sweep repeats no point.

One cluster of two worker processes serves the module (reached by its address, as
``--scheduler`` would); the CLI test starts its own through ``--workers``. No timing is
asserted; the timeouts are generous for a loaded two-core machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from xpuc.cli import DEFAULT_MODEL, main
from xpuc.sweep import SCHEDULE, SweepError, read, run
from xpuc.sweep.evaluate import EVALUATORS, schedule_metrics
from xpuc.sweep.spec import parse

distributed = pytest.importorskip("distributed")

GRID = {"axes": {"model": [{"name": "tiny", "path": str(DEFAULT_MODEL)}],
                 "target": ["h100-sxm", "tpu-v4", "no-room"], "batch": [1, 2, 3, 4]},
        "variants": {"no-room": {"base": "groq-lpu", "set": {"memory.sram.capacity_bytes": 1e4}}}}
POINTS = 12


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as c:
        yield c


def _die_once(marker: str, prepared, target, point):
    """The real evaluator, except that the first worker to reach tpu-v4 at batch 3 kills itself."""
    if (point.target, point.batch) == ("tpu-v4", 3):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return schedule_metrics(prepared, target, point)


def _recording(folder: str, prepared, target, point):
    """The real evaluator, leaving a file per point it evaluates."""
    Path(folder, f"{point.target}-{point.batch}").touch()
    return schedule_metrics(prepared, target, point)


def _cancel_once(marker: str, prepared, target, point):
    """The real evaluator, except that the first task to reach h100-sxm cancels itself on the
    scheduler, as when a finished task's result is lost and comes back cancelled."""
    if point.target == "h100-sxm":
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            client = distributed.get_client()
            client.cancel([distributed.Future(distributed.get_worker().get_current_task(), client)], force=True)
    return schedule_metrics(prepared, target, point)


def _check_rows(rows):
    """One row per point; the points that do not fit carry their error, the others their metrics."""
    assert len(rows) == POINTS and len({r["point_id"] for r in rows}) == POINTS
    assert {(r["target"], r["batch"]) for r in rows} == {(t, b) for t in GRID["axes"]["target"] for b in (1, 2, 3, 4)}
    for r in rows:
        if r["target"] == "no-room":
            assert r["error"].startswith("ScheduleError: ") and r["latency_s"] is None
            assert r["target_base"] == "groq-lpu"
        else:
            assert r["error"] is None and r["latency_s"] > 0 and r["cost_usd"] > 0 and r["chips"] >= 1


def test_a_worker_killed_mid_sweep_loses_no_row(cluster, tmp_path):
    marker = tmp_path / "killed"
    evaluator = dataclasses.replace(SCHEDULE, evaluate=functools.partial(_die_once, str(marker)))
    result = run(parse(GRID, EVALUATORS), tmp_path / "out.parquet", scheduler=cluster.scheduler_address,
                 evaluator=evaluator, progress=False, points_per_task=2)
    assert marker.exists()  # a worker did die in the middle of a task
    _check_rows(result.rows)
    assert sorted(result.rows, key=lambda r: r["point_id"]) == \
        sorted(read(tmp_path / "out.parquet"), key=lambda r: r["point_id"])


def test_resume_runs_only_the_points_a_half_written_output_lacks(cluster, tmp_path):
    out, seen = tmp_path / "out.parquet", tmp_path / "seen"
    seen.mkdir()
    spec = parse(GRID, EVALUATORS)
    first = run(spec, out, scheduler=cluster.scheduler_address, progress=False, points_per_task=3)
    _check_rows(first.rows)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4  # a task per batch size: the three targets of one prepared graph
    kept, lost = parts[::2], parts[1::2]
    lost_points = {(r["target"], r["batch"]) for p in lost for r in pq.read_table(p).to_pylist()}
    kept_bytes = {p: p.read_bytes() for p in kept}
    for p in lost:  # as if the sweep had been killed before writing them, one write cut short
        p.unlink()
    (out / ".part-cut-short.parquet.tmp").write_bytes(kept_bytes[kept[0]][:100])

    with pytest.raises(SweepError, match="--resume"):
        run(spec, out, scheduler=cluster.scheduler_address, progress=False)
    evaluator = dataclasses.replace(SCHEDULE, evaluate=functools.partial(_recording, str(seen)))
    again = run(spec, out, scheduler=cluster.scheduler_address, evaluator=evaluator, progress=False, resume=True)

    assert again.skipped == POINTS - len(lost_points) and again.ran == len(lost_points)
    assert {tuple(p.name.rsplit("-", 1)) for p in seen.iterdir()} == {(t, str(b)) for t, b in lost_points}
    assert all(p.read_bytes() == b for p, b in kept_bytes.items())
    assert not list(out.glob(".*.tmp"))
    _check_rows(again.rows)
    assert len(read(out)) == POINTS
    spec_order = [spec.point_id(p) for p in spec.points]  # rows come back in the spec's order, however they ran
    assert [r["point_id"] for r in again.rows] == [r["point_id"] for r in first.rows] == spec_order


def test_a_cancelled_task_is_submitted_again(cluster, tmp_path):
    marker = tmp_path / "cancelled"
    spec = parse({"axes": {"model": GRID["axes"]["model"], "target": ["h100-sxm", "tpu-v4"]}}, EVALUATORS)
    evaluator = dataclasses.replace(SCHEDULE, evaluate=functools.partial(_cancel_once, str(marker)))
    result = run(spec, tmp_path / "out.parquet", scheduler=cluster.scheduler_address, evaluator=evaluator,
                 progress=False, points_per_task=1)
    assert marker.exists()
    assert len(result.rows) == 2 and all(r["error"] is None and r["latency_s"] > 0 for r in result.rows)


def test_cli_sweep_prints_the_front_and_writes_the_report(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(f'[axes]\nmodel = [{{name = "tiny", path = "{DEFAULT_MODEL}"}}]\n'
                    'target = ["h100-sxm", "tpu-v4"]\nbatch = [1, 2]\n')
    code = main(["sweep", str(spec), "-o", str(tmp_path / "r.parquet"), "--html", str(tmp_path / "r.html"),
                 "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("4 points in ") and "Pareto front of latency_s" in out and "best point per target" in out
    assert "<svg" in (tmp_path / "r.html").read_text()
    assert len(read(tmp_path / "r.parquet")) == 4


def test_cli_sweep_errors_are_one_line(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('[axes]\nmodel = ["llama-3-70b"]\ntarget = ["h100-sxm"]\nchips = [8]\n')
    assert main(["sweep", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown axis(s) 'chips'" in err
