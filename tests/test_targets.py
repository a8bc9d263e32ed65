"""Target specs: every preset loads with sourced numbers; bad specs give one clear error."""

import re
import tomllib

import pytest

import backends
from backends.target import TARGETS_DIR, TargetSpecError, parse_target
from ir.errors import XpucError

PRESETS = ["a100-80gb", "h100-sxm", "h200", "tpu-v4", "tpu-v5e", "inferentia2", "groq-lpu", "cerebras-wse3",
           "gpu-generic", "systolic-generic", "dataflow-generic"]


def test_every_required_preset_is_bundled():
    assert set(PRESETS) <= set(backends.list_targets())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_every_number_has_a_known_source(name):
    target = backends.load_target(name)
    assert target.name == name and target.family in ("gpu", "systolic", "sram-dataflow")
    raw = tomllib.loads((TARGETS_DIR / f"{name}.toml").read_text())
    numbers = list(_sourced_numbers(raw))
    assert numbers and len(numbers) == len(target.provenance)
    assert set(target.provenance.values()) <= set(target.sources)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_peaks_are_positive_and_the_outer_level_is_largest(name):
    target = backends.load_target(name)
    for engine in target.engines.values():
        assert all(engine.peak(fmt) > 0 for fmt in engine.formats)
    assert target.outer.capacity_bytes == max(m.capacity_bytes for m in target.memory)


def test_published_peaks_are_reproduced_from_per_cycle_figures():
    """The clock x units x ops/cycle decomposition must give back the datasheet peaks (chips.md)."""
    peaks = {"a100-80gb": ("tensor", "f16", 312e12), "h100-sxm": ("tensor", "f16", 989e12),
             "tpu-v4": ("mxu", "bf16", 275e12), "tpu-v5e": ("mxu", "bf16", 197e12),
             "groq-lpu": ("mxm", "f16", 188e12)}
    for name, (engine, fmt, published) in peaks.items():
        assert backends.load_target(name).engines[engine].peak(fmt) == pytest.approx(published, rel=0.02)


def test_family_specific_memory_hierarchies():
    assert [m.name for m in backends.load_target("a100-80gb").memory] == ["smem", "l2", "hbm"]
    assert [m.name for m in backends.load_target("tpu-v4").memory] == ["vmem", "hbm"]
    assert [m.name for m in backends.load_target("groq-lpu").memory] == ["sram"]
    a100, tpu, groq = (backends.load_target(n) for n in ("a100-80gb", "tpu-v4", "groq-lpu"))
    assert (a100.by_role("buffer").name, a100.by_role("l2").name, a100.outer.name) == ("smem", "l2", "hbm")
    assert (tpu.by_role("buffer").name, tpu.outer.name, groq.outer.name) == ("vmem", "hbm", "sram")
    assert [m.name for m in a100.inner] == ["smem", "l2"] and groq.inner == []


def test_load_target_accepts_a_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text((TARGETS_DIR / "gpu-generic.toml").read_text().replace('name = "gpu-generic"', 'name = "mine"'))
    assert backends.load_target(path).name == "mine"


def _spec() -> dict:
    return tomllib.loads((TARGETS_DIR / "systolic-generic.toml").read_text())


def _broken(edit):
    spec = _spec()
    edit(spec)
    return spec


BAD_SPECS = {
    "missing number": (lambda s: s["memory"][1].pop("bandwidth_bytes_per_s"), "memory[1].bandwidth_bytes_per_s: is required"),
    "negative number": (lambda s: s["power"].update(idle_w={"value": -5, "source": "teaching"}),
                        "power.idle_w: value must be a finite number >= 0, got -5"),
    "zero clock": (lambda s: s["engines"]["array"]["clock_hz"].update(value=0),
                   "engines.array.clock_hz: value must be a finite number > 0, got 0"),
    "NaN bandwidth": (lambda s: s["memory"][0]["bandwidth_bytes_per_s"].update(value=float("nan")),
                      "memory[0].bandwidth_bytes_per_s: value must be a finite number > 0, got nan"),
    "infinite peak": (lambda s: s["engines"]["array"]["peak_ops_per_cycle"]["i8"].update(value=float("inf")),
                      "engines.array.peak_ops_per_cycle.i8: value must be a finite number > 0, got inf"),
    "unsourced number": (lambda s: s["power"].update(idle_w=5), "every number names its source"),
    "unknown source": (lambda s: s["power"].update(idle_w={"value": 5, "source": "blog"}), "source 'blog' is not in"),
    "unknown family": (lambda s: s.update(family="quantum"), "unknown family 'quantum'"),
    "unknown format": (lambda s: s["engines"]["array"]["peak_ops_per_cycle"].update(
        f12={"value": 1, "source": "teaching"}), "unknown number format"),
    "wrong type": (lambda s: s["engines"]["array"].update(ops="matmul"), "expected a list"),
    "unknown key": (lambda s: s["interconnect"].update(bandwith_bytes_per_s=1), "unknown key(s) bandwith_bytes_per_s"),
    "systolic without array": (lambda s: s["engines"]["array"].pop("array"), "needs array = [rows, cols]"),
    "no power model": (lambda s: s["power"].pop("energy_per_mac_j"), "power needs tdp_w or energy_per_mac_j"),
    "no price": (lambda s: s.update(price={}), "price needs"),
    "unknown memory role": (lambda s: s["memory"][0].update(role="cache"), "memory[0].role: unknown role 'cache'"),
    "memory role twice": (lambda s: s["memory"][0].update(role="hbm"), "memory[1].role: 'hbm' is also memory[0]'s"),
    "no level holds the model": (lambda s: s["memory"][1].update(role="l2"), "exactly one level that holds the model"),
    "role the family needs": (lambda s: s["memory"][0].update(role="l2"), "needs levels with role buffer"),
    "unknown topology": (lambda s: s["interconnect"].update(topology="hypercube"),
                         "interconnect.topology: unknown 'hypercube'; known: ring"),
    "link efficiency above 1": (lambda s: s["interconnect"].update(efficiency={"value": 1.5, "source": "teaching"}),
                                "interconnect.efficiency must be in (0, 1]"),
    "part of a chip": (lambda s: s["interconnect"].update(domain_chips={"value": 2.5, "source": "teaching"}),
                       "interconnect.domain_chips must be a whole number of chips"),
    "reserve all memory": (lambda s: s["memory"][1].update(reserve_fraction={"value": 1, "source": "teaching"}),
                           "hbm.reserve_fraction must be in [0, 1)"),
    "unknown launch": (lambda s: s.update(launch="eager"), "launch: unknown launch 'eager'; known: stream, graph"),
    "os array preloading weights": (lambda s: s["engines"]["array"].update(
        weight_load_cycles={"value": 128, "source": "teaching"}), "an output-stationary array preloads no operand"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_specs_give_one_clear_error(case):
    edit, message = BAD_SPECS[case]
    with pytest.raises(TargetSpecError, match=re.escape(message)):
        parse_target(_broken(edit), "bad.toml")


def test_bad_files_and_names_are_xpuc_errors(tmp_path):
    garbled = tmp_path / "garbled.toml"
    garbled.write_text("name = [unclosed")
    for source, message in [("no-such-chip", "unknown target 'no-such-chip'"), (garbled, "not valid TOML"),
                            (tmp_path / "absent.toml", "does not exist")]:
        with pytest.raises(XpucError, match=message):
            backends.load_target(source)


def _sourced_numbers(table):
    if isinstance(table, dict):
        if set(table) == {"value", "source"}:
            yield table
            return
        for value in table.values():
            yield from _sourced_numbers(value)
    elif isinstance(table, list):
        for value in table:
            yield from _sourced_numbers(value)


def test_a_new_family_is_one_class_and_one_registration(monkeypatch):
    """A family that costs every op as a roofline on its engine, registered under a new name:
    specs naming it load (its memory roles checked) and graphs schedule on it."""
    from backends.calibration import matmul_graph
    from backends.families import FAMILIES, Family
    from backends.families.base import Cost
    from backends.roofline import slowest, streaming_bytes

    class Roofline(Family):
        name, shared_stream, memory = "roofline", True, ("hbm",)

        @staticmethod
        def tiling(g, engine):
            return None

        @staticmethod
        def matrix_cost(work, engine, fmt, target, counts=None):
            sizes = streaming_bytes(work, target)
            busy, bound = slowest(work.flops / engine.peak(fmt), sizes, target)
            return Cost(busy, sizes, bound)

    monkeypatch.setitem(FAMILIES, "roofline", Roofline())
    spec = tomllib.loads((TARGETS_DIR / "gpu-generic.toml").read_text())
    spec.update(family="roofline", name="mine")
    target = parse_target(spec, "mine.toml")
    s = backends.schedule(matmul_graph(256, 256, 256), target)
    (op,) = s.ops
    assert s.family == "roofline" and s.kernels == 1 and target.engines[op.engine].role == "matrix"
    compute = 2 * 256 ** 3 / target.engines[op.engine].peak("f16")
    hbm = 3 * 256 * 256 * 2 / target.bandwidth(target.outer.name)  # X, W and Y in f16, once
    assert op.duration_s == pytest.approx(target.launch_overhead_s + max(compute, hbm))


def _numbers_with_paths(table, path=""):
    """(key path as the loader names it, the {value, source} table) for every sourced number."""
    if isinstance(table, dict):
        if set(table) == {"value", "source"}:
            yield path, table
            return
        for key, value in table.items():
            yield from _numbers_with_paths(value, f"{path}.{key}" if path else key)
    elif isinstance(table, list):
        for i, value in enumerate(table):
            yield from _numbers_with_paths(value, f"{path}[{i}]")


ZERO_ALLOWED = {"latency_s", "energy_per_byte_j", "idle_w", "energy_per_mac_j", "usd_per_chip_hour", "purchase_usd",
                "launch_overhead_s", "measurement_overhead_s", "collective_latency_s", "reserve_fraction"}
"""Costs may be zero (an idealization); what sizes or rates the hardware may not (see backends/target.py)."""


@pytest.mark.parametrize("preset", ["systolic-generic", "gpu-generic", "groq-lpu", "h100-sxm"])
def test_every_number_refuses_nan_infinity_negatives_and_zero_unless_a_cost(preset):
    numbers = [path for path, table in _numbers_with_paths(tomllib.loads((TARGETS_DIR / f"{preset}.toml").read_text()))
               if not isinstance(table["value"], (list, str))]
    assert len(numbers) > 15
    for path in numbers:
        for bad in (float("nan"), float("inf"), -1.0, 0.0):
            spec = tomllib.loads((TARGETS_DIR / f"{preset}.toml").read_text())
            dict(_numbers_with_paths(spec))[path]["value"] = bad
            if bad == 0.0 and path.rsplit(".", 1)[-1] in ZERO_ALLOWED:
                parse_target(spec, "zero.toml")
                continue
            with pytest.raises(TargetSpecError, match=re.escape(f"{path}: value must be a finite number")):
                parse_target(spec, "bad.toml")


def test_a_bad_spec_is_one_line_and_a_nonzero_exit_from_the_cli(tmp_path, capsys):
    from xpuc.cli import main

    spec = tmp_path / "bad.toml"
    spec.write_text((TARGETS_DIR / "gpu-generic.toml").read_text().replace(
        "bandwidth_bytes_per_s = {value = ", "bandwidth_bytes_per_s = {value = -", 1))
    assert main(["targets", "show", str(spec)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bandwidth_bytes_per_s: value must be a finite number > 0, got -" in err
