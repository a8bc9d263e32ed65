"""Published LLM-serving measurements (measurements.csv) as typed, validated records.

The validation script and the tests read the data through ``load`` so that a malformed row
(a missing source, an unknown metric, a config gap nobody flagged) is reported once, with
every problem listed, instead of surfacing later as a wrong prediction. Stdlib ``csv`` only.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ir.errors import XpucError

CSV_PATH = Path(__file__).with_name("measurements.csv")

# metric -> the unit its value is stored in (see README.md for what each metric means)
METRIC_UNITS = {
    "ttft_s": "s",
    "tpot_s": "s",
    "latency_s": "s",
    "gemm_time_s": "s",
    "tokens_per_s_per_user": "tokens/s/user",
    "tokens_per_s": "tokens/s",
    "tokens_per_s_total": "tokens/s",
    "tokens_per_s_per_chip": "tokens/s/chip",
    "samples_per_s": "samples/s",
}
PRECISIONS = {"fp32", "tf32", "bf16", "fp16", "16bit", "fp8", "int8", "int4", "unknown"}
QUALITIES = {
    "first-party measured",
    "audited submission",
    "vendor claim",
    "independent measurement",
    "independent measurement (second-hand)",
}
_INT_FIELDS = ("chips", "tp", "pp", "batch", "input_len", "output_len")
# A configuration is complete when a predictor needs nothing more than these.
_CONFIG_FIELDS = ("chips", "batch", "input_len", "output_len")
_DATE = re.compile(r"^\d{4}(-\d{2}){0,2}$")


class ValidationDataError(XpucError):
    """measurements.csv breaks its own schema; the message lists every problem found."""


@dataclass(frozen=True)
class Measurement:
    id: str
    model: str
    model_as_published: str
    hardware: str
    hardware_as_published: str
    chips: int | None
    tp: int | None
    pp: int | None
    precision: str
    framework: str
    batch: int | None
    input_len: int | None
    output_len: int | None
    metric: str
    value: float
    unit: str
    value_as_published: str
    scenario: str
    source: str
    source_locator: str
    date_published: str
    quality: str
    config_complete: bool
    missing: str
    notes: str


COLUMNS = tuple(f.name for f in fields(Measurement))
_REQUIRED_TEXT = ("id", "model", "hardware", "precision", "framework", "metric", "unit", "value_as_published",
                  "scenario", "source", "source_locator", "quality")


def _positive_int(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _row_problems(row: dict[str, str]) -> list[str]:
    problems = [f"empty {name}" for name in _REQUIRED_TEXT if not row[name].strip()]
    for name in _INT_FIELDS:
        if row[name] and _positive_int(row[name]) is None:
            problems.append(f"{name}={row[name]!r} is not a positive integer")
    try:
        value = float(row["value"])
        if not math.isfinite(value) or value <= 0:
            problems.append(f"value={row['value']!r} is not finite and positive")
    except ValueError:
        problems.append(f"value={row['value']!r} is not a number")
    if row["metric"] not in METRIC_UNITS:
        problems.append(f"unknown metric {row['metric']!r}")
    elif row["unit"] != METRIC_UNITS[row["metric"]]:
        problems.append(f"unit {row['unit']!r} does not match metric {row['metric']} ({METRIC_UNITS[row['metric']]})")
    if row["precision"] not in PRECISIONS:
        problems.append(f"unknown precision {row['precision']!r}")
    if row["quality"] not in QUALITIES:
        problems.append(f"unknown quality {row['quality']!r}")
    if not row["source"].startswith(("https://", "http://")):
        problems.append("source is not a URL")
    if row["date_published"] and not _DATE.match(row["date_published"]):
        problems.append(f"date_published={row['date_published']!r} is not YYYY[-MM[-DD]]")
    if row["config_complete"] == "yes":
        gaps = [name for name in _CONFIG_FIELDS if not row[name]]
        if row["precision"] == "unknown":
            gaps.append("precision")
        if gaps:
            problems.append(f"marked complete but lacks {', '.join(gaps)}")
        if row["missing"]:
            problems.append("marked complete but names missing items")
    elif row["config_complete"] == "no":
        if not row["missing"].strip():
            problems.append("marked incomplete without saying what is missing")
    else:
        problems.append(f"config_complete={row['config_complete']!r} is not yes/no")
    return problems


def _record(row: dict[str, str]) -> Measurement:
    typed: dict[str, object] = dict(row)
    for name in _INT_FIELDS:
        typed[name] = _positive_int(row[name])
    typed["value"] = float(row["value"])
    typed["config_complete"] = row["config_complete"] == "yes"
    return Measurement(**typed)


def load(path: Path | str = CSV_PATH) -> list[Measurement]:
    """Every row of the file as a Measurement, or one ValidationDataError naming all bad rows."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        absent = [name for name in COLUMNS if name not in header]
        if absent:
            raise ValidationDataError(f"{path}: missing column(s) {', '.join(absent)}")
        rows = list(reader)
    problems, seen = [], set()
    for line, row in enumerate(rows, start=2):
        if row["id"] in seen:
            problems.append(f"line {line} ({row['id']}): duplicate id")
        seen.add(row["id"])
        problems += [f"line {line} ({row['id']}): {p}" for p in _row_problems(row)]
    if problems:
        raise ValidationDataError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems))
    return [_record({name: row[name] for name in COLUMNS}) for row in rows]
