"""The published-measurement dataset (benchmarks/validation/measurements.csv) and its loader.

Checks that every row is traceable (a URL plus where in it), that every configuration is
either complete or says what is missing, that hardware names match the target presets, and
that the loader reports all schema problems of a bad file in one error.
"""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("validation_loader", ROOT / "benchmarks" / "validation" / "loader.py")
loader = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = loader  # dataclasses look the module up while building Measurement
_spec.loader.exec_module(loader)

PRESETS = {p.stem for p in (ROOT / "backends" / "targets").glob("*.toml")}
NON_PRESET_HARDWARE = {"gaudi2"}  # measured hardware xpuc has no preset for (yet)
ROWS = loader.load()


def test_dataset_loads_with_unique_ids():
    assert len(ROWS) >= 40
    assert len({r.id for r in ROWS}) == len(ROWS)


def test_every_row_names_its_source_and_where_in_it():
    for r in ROWS:
        assert r.source.startswith("https://"), r.id
        assert r.source_locator.strip(), r.id
        assert r.value_as_published.strip(), r.id


def test_every_configuration_is_complete_or_says_what_is_missing():
    for r in ROWS:
        if r.config_complete:
            assert None not in (r.chips, r.batch, r.input_len, r.output_len), r.id
            assert r.precision != "unknown" and not r.missing, r.id
        else:
            assert r.missing.strip(), r.id


def test_hardware_names_are_presets_unless_declared_otherwise():
    assert {r.hardware for r in ROWS} - PRESETS <= NON_PRESET_HARDWARE


def test_covers_two_gpu_generations_and_both_sram_dataflow_presets():
    hardware = {r.hardware for r in ROWS}
    assert {"a100-80gb", "h100-sxm", "groq-lpu", "cerebras-wse3"} <= hardware


def test_units_follow_the_metric():
    for r in ROWS:
        assert r.unit == loader.METRIC_UNITS[r.metric], r.id


def _write(tmp_path, rows, columns=loader.COLUMNS):
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _good_row(**changes):
    row = {name: "" for name in loader.COLUMNS}
    row.update(id="x", model="llama-2-7b", hardware="h100-sxm", chips="1", precision="fp16", framework="f",
               batch="1", input_len="128", output_len="1", metric="ttft_s", value="0.0063", unit="s",
               value_as_published="6.3 ms", scenario="batch 1", source="https://example.org/doc",
               source_locator="table 1", date_published="2024", quality="first-party measured",
               config_complete="yes")
    row.update(changes)
    return row


def test_a_well_formed_row_becomes_a_typed_record(tmp_path):
    (record,) = loader.load(_write(tmp_path, [_good_row()]))
    assert record.chips == 1 and record.tp is None and record.value == 0.0063 and record.config_complete


def test_all_problems_of_a_bad_file_are_reported_at_once(tmp_path):
    rows = [
        _good_row(id="a", metric="flops", value="-1"),
        _good_row(id="b", batch="", source="table 3"),
        _good_row(id="b", config_complete="no"),
    ]
    with pytest.raises(loader.ValidationDataError) as error:
        loader.load(_write(tmp_path, rows))
    message = str(error.value)
    for expected in ("unknown metric 'flops'", "value='-1' is not finite and positive", "marked complete but lacks batch",
                     "source is not a URL", "duplicate id", "marked incomplete without saying what is missing"):
        assert expected in message


def test_a_missing_column_is_named(tmp_path):
    columns = [c for c in loader.COLUMNS if c != "source"]
    with pytest.raises(loader.ValidationDataError, match="missing column.*source"):
        loader.load(_write(tmp_path, [_good_row()], columns))
