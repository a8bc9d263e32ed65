"""``xpuc targets`` and ``xpuc schedule`` in-process: listings, the JSON and trace files, errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
import tomllib

import onnx
import pytest

import backends
from backends import report
from backends.schedule import BOUNDS
from backends.target import TARGETS_DIR
from conftest import MODELS
from frontends.synthetic import TINY, llama_onnx
from xpuc.cli import main

PRESETS = {"a100-80gb": "gpu", "h100-sxm": "gpu", "h200": "gpu", "gpu-generic": "gpu", "tpu-v4": "systolic",
           "tpu-v5e": "systolic", "inferentia2": "systolic", "systolic-generic": "systolic",
           "groq-lpu": "sram-dataflow", "cerebras-wse3": "sram-dataflow", "dataflow-generic": "sram-dataflow"}
LLAMA = MODELS / "llama_dynamo.onnx"
OP_KEYS = {"name", "op", "engine", "chip", "start_s", "duration_s", "flops", "bytes", "bound"}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_targets_lists_every_preset_with_its_family(capsys):
    code, out, err = run(capsys, "targets")
    assert code == 0 and err == ""
    listed = dict(line.split()[:2] for line in out.splitlines())
    assert listed == PRESETS


def test_targets_show_prints_the_spec(capsys):
    code, out, err = run(capsys, "targets", "show", "groq-lpu")
    assert code == 0 and err == ""
    assert out.strip() == (TARGETS_DIR / "groq-lpu.toml").read_text().strip()
    spec = tomllib.loads(out)
    assert spec["name"] == "groq-lpu" and spec["family"] == "sram-dataflow"


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """Run the documented command once (capsys is per test, so stdout is redirected here);
    keep its exit code, the printed table and the two files."""
    folder = tmp_path_factory.mktemp("schedule")
    plan, trace = folder / "plan.json", folder / "trace.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["schedule", str(LLAMA), "--input-shape", "input_ids=1x16", "-t", "tpu-v4",
                     "--json", str(plan), "--trace", str(trace), "--limit", "0"])
    return code, out.getvalue(), json.loads(plan.read_text()), json.loads(trace.read_text())


def test_schedule_json_has_the_documented_keys(scheduled):
    code, table, data, _ = scheduled
    assert code == 0
    assert (data["target"], data["family"]) == ("tpu-v4", "systolic")
    assert set(data["totals"]) == {"latency_s", "energy_j", "cost_usd", "chips", "kernels", "period_s", "throughput_per_s",
                                   "joules_per_pass", "usd_per_pass", "tokens_per_pass", "tokens_per_s",
                                   "joules_per_token", "usd_per_token"}
    assert data["totals"]["latency_s"] > 0 and data["totals"]["chips"] == 1
    assert data["ops"] and all(OP_KEYS <= set(op) for op in data["ops"])
    engines = set(backends.load_target("tpu-v4").engines) | {"host"}
    assert {op["engine"] for op in data["ops"]} <= engines
    assert {op["bound"] for op in data["ops"]} <= set(BOUNDS)
    latest = max(op["start_s"] + op["duration_s"] for op in data["ops"])
    assert data["totals"]["latency_s"] == pytest.approx(latest)


def test_schedule_table_matches_the_json(scheduled):
    _, table, data, _ = scheduled
    assert f"schedule of tpu-v4 (systolic), {len(data['ops'])} ops" in table
    assert f"latency {data['totals']['latency_s'] * 1e3:.4f} ms" in table
    assert all(report.short_name(op["name"]) in table for op in data["ops"])  # --limit 0: every row


def test_schedule_trace_has_complete_events_on_named_threads(scheduled):
    _, _, data, trace = scheduled
    events = trace["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == len(data["ops"])
    for e in spans:
        assert {"ph", "pid", "tid", "ts", "dur"} <= set(e) and e["dur"] >= 0
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in spans} <= set(threads)
    by_name = {op["name"]: op for op in data["ops"]}
    for e in spans:
        op = by_name[e["name"]]
        assert threads[(e["pid"], e["tid"])] == op["engine"]
        assert e["ts"] == pytest.approx(op["start_s"] * 1e6) and e["dur"] == pytest.approx(op["duration_s"] * 1e6)


def _garbled(tmp_path):
    path = tmp_path / "garbled.toml"
    path.write_text("name = [unclosed")
    return path


@pytest.mark.parametrize("target, message", [
    (lambda tmp: "no-such-chip", "unknown target 'no-such-chip'"),
    (lambda tmp: tmp / "absent.toml", "does not exist"),
    (_garbled, "not valid TOML"),
], ids=["unknown target", "bad spec path", "malformed toml"])
@pytest.mark.parametrize("command", ["schedule", "show"])
def test_bad_targets_exit_1_with_one_error_line(capsys, tmp_path, target, message, command):
    name = target(tmp_path)
    argv = ["schedule", LLAMA, "-t", name] if command == "schedule" else ["targets", "show", name]
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert re.fullmatch(r"xpuc: error: [^\n]+\n", err) and message in err


def test_schedule_refuses_unbound_symbolic_inputs(capsys, tmp_path):
    """A graph whose input is [batch, seq] would cost every activation 0 bytes and 0 FLOPs:
    refused with one line naming the input to bind, exit 1, no traceback."""
    path = tmp_path / "dynamic.onnx"
    onnx.save(llama_onnx(TINY, external_data=None), path)
    code, out, err = run(capsys, "schedule", path, "-t", "h100-sxm")
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(r"xpuc: error: [^\n]+\n", err)
    assert "bind input_ids (--input-shape input_ids=BATCHxSEQ" in err
    assert "schedule of" not in out
    code, out, err = run(capsys, "schedule", path, "-t", "h100-sxm", "--input-shape", "input_ids=2x8")
    assert code == 0 and "schedule of h100-sxm" in out


def test_launch_graph_on_the_command_line_pays_one_launch(capsys):
    """The bundled tiny Llama on h100: 31 kernels, 4 us each on a stream; as one CUDA Graph,
    one 4 us launch: 30 x 4 us less."""
    latency = {}
    for launch in ("stream", "graph"):
        code, out, _ = run(capsys, "schedule", "--input-shape", "input_ids=1x16", "-t", "h100-sxm", "--launch", launch)
        assert code == 0
        latency[launch] = float(re.search(r"latency ([0-9.]+) ms", out).group(1)) * 1e-3
        kernels = int(re.search(r"(\d+) kernels", out).group(1))
    assert latency["stream"] - latency["graph"] == pytest.approx((kernels - 1) * 4e-6, abs=1e-7)
