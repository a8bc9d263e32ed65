"""Engines x formats with peaks (``xpuc targets --formats``), computed by hand from the specs."""

from __future__ import annotations

import pytest

import backends
from backends.capabilities import chip_peak, columns, engine_formats
from xpuc.cli import main


def test_chip_peak_is_the_fastest_engine_in_that_format():
    h100 = backends.load_target("h100-sxm")
    clock, sms = 1.83e9, 132
    assert chip_peak(h100, "bf16") == pytest.approx(sms * clock * 4096)  # tensor cores, not CUDA cores (512)
    assert chip_peak(h100, "f32") == pytest.approx(sms * clock * 256)  # only the CUDA cores run f32
    assert chip_peak(backends.load_target("tpu-v4"), "f8e4m3") == 0.0


def test_columns_follow_the_dtype_table_and_include_auto_cast_sources():
    rows = engine_formats(backends.load_target("tpu-v4"))
    assert columns(rows) == ["f32", "f16", "bf16", "i8", "i32", "bool"]
    mxu = next(r for r in rows if r.engine == "mxu")
    assert mxu.auto_cast == {"f32": "bf16", "f16": "bf16"} and set(mxu.peaks) == {"bf16", "i8"}


def test_targets_formats_lists_every_engine_of_every_preset(capsys):
    assert main(["targets", "--formats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    rows = {tuple(line.split()[:2]): dict(zip(header, line.split())) for line in lines[2:]}
    expected = {(name, engine) for name in backends.list_targets() for engine in backends.load_target(name).engines}
    assert set(rows) == expected
    assert rows[("h100-sxm", "tensor")]["bf16"] == "989.4"  # 132 SMs x 1.83 GHz x 4096 FLOP/clk
    assert rows[("h100-sxm", "tensor")]["f32"] == "->tf32"  # float32 products on TF32 tensor cores by default
    assert rows[("tpu-v4", "mxu")]["f32"] == "->bf16"  # XLA's default: f32 products run as bf16


def test_targets_show_formats_gives_one_target(capsys):
    assert main(["targets", "show", "groq-lpu", "--formats"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[2:]] == [["groq-lpu", "mxm"], ["groq-lpu", "vxm"]]
