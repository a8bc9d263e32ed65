"""The comparison's arithmetic by hand (efficiency, Pennycook's score, cost per unit of work),
which format each target's accuracy is measured in, and ``xpuc compare`` end to end."""

from __future__ import annotations

import copy
import csv
import io
import json
import math

import pytest

import backends
from ir.errors import XpucError
from backends import portability, portability_report
from backends.calibration import matmul_graph
from backends.portability import Work, efficiency, performance_portability, unit_economics, work_units
from backends.readout import PassEconomics
from backends.report import si
from ir import DType, Graph, TensorType
from ir.passes import infer_shapes, quantize
from xpuc.cli import main


def _matmul(m: int, k: int, n: int) -> Graph:
    """``relu(X @ W)``, X (m x k) an input, W a weightless float32 constant (not the model's
    head, which quantization keeps in float32)."""
    graph = matmul_graph(m, n, k, "f32")
    graph.add_node("Relu", ["Y"], ["Z"], name="relu")
    graph.outputs[:] = ["Z"]
    return infer_shapes(graph)


def test_efficiency_is_achieved_over_the_deployments_peak():
    assert efficiency(2e12, 1.0, 2, 4e12) == 0.25  # 2 TFLOP/s reached of 2 chips x 4 TFLOP/s
    assert efficiency(1e12, 0.0, 1, 1e12) == 0.0


@pytest.mark.parametrize("efficiencies, score", [([0.5, 0.25], 1 / 3),  # 2 / (1/0.5 + 1/0.25) = 2 / 6
                                                 ([0.4], 0.4), ([0.5, 0.5, 0.125], 3 / 12),
                                                 ([0.5, None], 0.0), ([0.5, 0.0], 0.0), ([], 0.0)])
def test_performance_portability_is_the_harmonic_mean_and_zero_when_a_platform_fails(efficiencies, score):
    assert performance_portability(efficiencies) == pytest.approx(score)


def test_unit_economics_by_hand():
    e = unit_economics(100, PassEconomics("single pass", seconds=0.5, usd=0.01, joules=20.0))
    assert e.per_s == 200  # 100 units per half second
    assert e.per_s_per_usd_hour == pytest.approx(200 / (0.01 / 0.5 * 3600))  # $0.02/s = $72/h
    assert e.per_s_per_watt == pytest.approx(200 / (20 / 0.5))  # 40 W on average: 5 units per joule
    assert e.joules == pytest.approx(0.2) and e.usd_per_million == pytest.approx(100.0)


def test_work_is_counted_in_tokens_when_the_graph_takes_token_ids():
    ids = Graph("lm")
    ids.add_input("input_ids", TensorType(DType.INT64, (2, 16)))
    assert work_units(ids) == Work(32, "token")
    assert work_units(_matmul(8, 4, 4)) == Work(8, "inference")


def test_si_prefixes():
    assert (si(0.000126, "s"), si(999.7), si(1.013e6), si(0), si(0.25, "J")) == \
        ("126 us", "1 k", "1.01 M", "0", "250 mJ")


def test_rows_by_hand_on_one_product():
    graph = _matmul(256, 512, 1024)
    targets = [backends.load_target(n) for n in ("gpu-generic", "tpu-v4")]
    c = portability.compare(graph, targets)
    gpu, tpu = c.rows
    flops = 2 * 256 * 512 * 1024 + 256 * 1024  # the product, then one FLOP per element for Relu
    assert gpu.flops == tpu.flops == flops
    assert gpu.formats == {"f32": 1.0} and tpu.formats["bf16"] == pytest.approx(2 * 256 * 512 * 1024 / flops)
    gpu_peak = 16 * 1e9 * 128  # gpu-generic: f32 only on its CUDA cores
    tpu_peak = 8 * 1.05e9 * 32768  # tpu-v4: 8 MXUs x 1.05 GHz x 128x128x2 in bf16
    assert gpu.peak_flops_per_s == pytest.approx(gpu_peak) and tpu.peak_flops_per_s == pytest.approx(tpu_peak)
    for row, peak in ((gpu, gpu_peak), (tpu, tpu_peak)):
        s = c.schedules[row.target]
        assert row.efficiency == pytest.approx(flops / s.latency_s / peak)
        assert row.economics.usd_per_million == pytest.approx(1e6 * s.cost_usd / 256)  # 256 inferences per pass
        assert row.economics.joules == pytest.approx(s.energy_j / 256)
    assert c.portability == pytest.approx(2 / (1 / gpu.efficiency + 1 / tpu.efficiency))
    records = c.schedules["gpu-generic"].ops  # the product on CUDA cores is porting time, its Relu is not,
    product = sum(o.duration_s for o in records if o.op == "MatMul")  # nor their kernel's 5 us launch
    assert gpu.ledger.porting_share == pytest.approx((product - 5e-6) / (sum(o.duration_s for o in records) - 5e-6))
    assert tpu.ledger.porting_share == 0.0


def test_a_target_that_cannot_run_the_model_zeroes_the_score():
    graph = _matmul(8, 100_000, 50_000)  # 20 GB of float32 weights: two 16 GB chips
    small = copy.deepcopy(backends.load_target("tpu-v5e"))
    small.interconnect.max_chips = 1
    c = portability.compare(graph, [backends.load_target("h200"), small])
    h200, tpu = c.rows
    assert h200.efficiency > 0 and "more than the 1" in tpu.cannot_run and tpu.efficiency is None
    assert c.portability == 0.0 and set(c.schedules) == {"h200"}
    assert "cannot run" in portability_report.format_table(c)


class Recorder:
    """An accuracy measurement that records what it was asked for: (format, target or None)."""

    def __init__(self, refuse: str = ""):
        self.asked, self.refuse = [], refuse

    def __call__(self, fmt: str, target=None) -> dict:
        if target is not None and target.name == self.refuse:
            raise XpucError(f"{target.name}: accumulate.f16 narrower than f32")
        self.asked.append((fmt, target.name if target else None))
        return {"logits": {"max_abs": 0.0, "rel_l2": len(self.asked) / 100, "cosine": 1.0, "top1": 1.0, "kl": 0.0}}


def test_accuracy_is_measured_with_each_targets_own_numerics():
    """Natively each target runs its products in its own format (h100's TF32 tensor cores, a
    TPU's bf16 MXU, Groq's f16 MXM): each target's accuracy is the graph run with its numerics;
    a target the host cannot emulate falls back to the graph quantized to its main format."""
    names = ("h100-sxm", "tpu-v4", "tpu-v5e", "groq-lpu")
    recorder = Recorder(refuse="groq-lpu")
    c = portability.compare(_matmul(64, 128, 256), [backends.load_target(n) for n in names], accuracy=recorder)
    assert recorder.asked == [("native", "h100-sxm"), ("native", "tpu-v4"), ("native", "tpu-v5e"), ("fp16", None)]
    assert [r.accuracy_format for r in c.rows] == ["tf32", "bf16", "bf16", "fp16"]
    assert c.rows[0].accuracy_note == "tf32 products: the target's numerics, run on the host"
    assert "target numerics refused: groq-lpu: accumulate.f16" in c.rows[3].accuracy_note


def test_a_precision_is_measured_as_given_and_weightless_models_say_why_not():
    recorder = Recorder()
    graph = quantize(_matmul(64, 128, 256), "int8")
    targets = [backends.load_target(n) for n in ("h100-sxm", "tpu-v4")]
    c = portability.compare(graph, targets, precision="int8", accuracy=recorder)
    assert recorder.asked == [("int8", None)] and {r.accuracy_format for r in c.rows} == {"int8"}
    c = portability.compare(graph, targets, precision="int8", accuracy_missing="n/a: no weights")
    assert all(r.accuracy is None and r.accuracy_note == "n/a: no weights" for r in c.rows)
    assert portability_report.accuracy_cell(c.rows[0]) == "n/a"


ROW_KEYS = {"target", "family", "cannot_run", "formats", "chips", "deployment", "latency_s", "basis",
            "throughput_per_s", "per_s_per_usd_hour", "per_s_per_watt", "joules_per_unit", "usd_per_million_units",
            "meets_latency_target", "flops", "peak_flops_per_s", "efficiency", "porting_share", "porting_cost",
            "ledger", "accuracy"}


def test_compare_the_bundled_model_with_accuracy_json_and_csv(tmp_path, capsys):
    out_json, out_csv = tmp_path / "c.json", tmp_path / "c.csv"
    code = main(["compare", "-t", "tpu-v5e,h100-sxm", "--latency-target", "0.05", "--json", str(out_json),
                 "--csv", str(out_csv)])
    text = capsys.readouterr().out
    assert code == 0 and "performance portability" in text and "assumptions:" in text
    data = json.loads(out_json.read_text())
    assert data["unit"] == "token" and data["units_per_pass"] == 128 and data["latency_target_s"] == 5e-5
    tpu, h100 = data["targets"]
    assert set(tpu) == ROW_KEYS and (tpu["target"], h100["target"]) == ("tpu-v5e", "h100-sxm")
    assert tpu["chips"] == 1
    assert {k: tpu["deployment"][k] for k in ("chips", "tp", "pp")} == {"chips": 1, "tp": 1, "pp": 1}
    assert tpu["basis"] == "steady state" and len(tpu["deployment"]["memory_per_chip"]) == 1
    assert tpu["accuracy"]["format"] == "bf16" and 1e-4 < tpu["accuracy"]["outputs"]["logits"]["rel_l2"] < 5e-2
    tf32 = h100["accuracy"]["outputs"]["logits"]["rel_l2"]  # TF32 tensor cores: operands to 10 mantissa bits
    assert h100["accuracy"]["format"] == "tf32" and 1e-5 < tf32 < tpu["accuracy"]["outputs"]["logits"]["rel_l2"] / 4
    assert tpu["meets_latency_target"] is True and h100["meets_latency_target"] is False  # launch-bound: ~125 us
    assert data["cheapest"] == {"target": "tpu-v5e", "usd_per_million_units": tpu["usd_per_million_units"]}
    assert "cost per million tokens within 50 us per pass: least $" in text
    assert data["performance_portability"] == pytest.approx(2 / (1 / tpu["efficiency"] + 1 / h100["efficiency"]))
    assert any("$1.2 per chip-hour" in a for a in data["assumptions"])
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [r["target"] for r in rows] == ["tpu-v5e", "h100-sxm"]
    assert math.isclose(float(rows[0]["rel_l2"]), tpu["accuracy"]["outputs"]["logits"]["rel_l2"])


def test_compare_a_weightless_config_says_accuracy_is_not_available(tmp_path, capsys):
    out = tmp_path / "c.json"
    code = main(["compare", "llama-3-8b", "--input-shape", "input_ids=1x16", "-t", "h100-sxm,groq-lpu",
                 "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["units_per_pass"] == 16
    assert all(t["accuracy"]["outputs"] is None and t["accuracy"]["note"].startswith("n/a") for t in data["targets"])


def test_compare_needs_targets_and_names_bad_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare"])
    assert exc.value.code == 2
    assert main(["compare", "-t", "h100-sxm,nonesuch", "--no-accuracy"]) == 1
    assert "unknown target 'nonesuch'" in capsys.readouterr().err


def test_the_cost_per_unit_is_the_least_among_targets_within_the_latency_target():
    targets = [backends.load_target(n) for n in ("gpu-generic", "tpu-v4", "h100-sxm")]
    free = portability.compare(_matmul(256, 512, 1024), targets)
    usd = lambda e: e.usd_per_million  # noqa: E731
    assert free.least(usd) is min(free.rows, key=lambda r: r.economics.usd_per_million)
    fastest = min(free.rows, key=lambda r: r.latency_s)
    bound = portability.compare(_matmul(256, 512, 1024), targets, latency_target_s=fastest.latency_s)
    assert [r.meets_latency for r in bound.rows] == [r is fastest for r in free.rows]
    assert bound.least(usd).target == fastest.target
    assert portability.compare(_matmul(256, 512, 1024), targets, latency_target_s=1e-12).least(usd) is None
