"""The HTML report: its figures' data by hand, a self-contained page, and every figure shown by a
real browser (headless Chromium, which ``.ci/run`` installs: a missing browser fails the test)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

import backends
from backends.deployment import Deployment
from backends.economics import SteadyState
from backends import portability
from backends.calibration import matmul_graph
from backends.portability_html import ReportError, family_seconds, kernel_points, lanes, to_html
from backends.portability_serving import ServingPoint, pareto_front
from backends.schedule import OpSchedule, Schedule
from frontends import onnx as onnx_frontend
from ir.passes import optimize
from xpuc.cli import DEFAULT_MODEL, main

FIGURES = ("roofline", "families", "timeline", "pareto")
SERVING = [ServingPoint("a b=1", 80.0, 5.0), ServingPoint("a b=64", 25.0, 0.6), ServingPoint("b", 300.0, 3.0),
           ServingPoint("c", 20.0, 1.0)]


@pytest.fixture(scope="module")
def comparison():
    graph = optimize(onnx_frontend.load(DEFAULT_MODEL, input_shapes={"input_ids": (1, 16)}))
    return portability.compare(graph, [backends.load_target(n) for n in ("h100-sxm", "tpu-v4", "groq-lpu")])


def test_a_kernel_is_one_roofline_point_by_hand():
    target = backends.load_target("gpu-generic")
    s = backends.schedule(matmul_graph(64, 256, 128, "f32"), target)
    (point,) = kernel_points(s, target)
    flops = 2 * 64 * 128 * 256
    moved = 4 * (64 * 128 + 128 * 256 + 64 * 256)  # X, W and Y once through HBM: they fit in L2
    assert point == (float(f"{flops / moved:.3g}"), float(f"{flops / s.latency_s:.3g}"), "matmul")


def _record(name, start, end, op="MatMul", engine="mxu"):
    return OpSchedule(name, op, engine, 0, start, end - start, 1, {}, "compute", 0.0)


def test_timeline_lanes_merge_neighbours_of_one_family_only():
    ops = [_record("a", 0.0, 1.0), _record("b", 1.0005, 2.0), _record("c", 2.0, 3.0, "Relu"),
           _record("d", 5.0, 6.0), _record("e", 0.0, 6.0, "Neg", "host")]
    s = Schedule("t", "systolic", ops, 10.0, 0.0, 0.0, 1, {}, {}, 3, Deployment(1, 1), [], "hbm",
                 SteadyState(10.0, 0.1, 0.0, 0.0))
    assert lanes(s) == {"mxu": [(0.0, 2.0, "matmul"), (2.0, 3.0, "elementwise"), (5.0, 6.0, "matmul")],
                        "host": [(0.0, 6.0, "host")]}  # 0.0005 apart: less than a pixel of a 10 s pass
    assert family_seconds(s) == pytest.approx({"matmul": 2.9995, "elementwise": 1.0, "host": 6.0})


def test_pareto_front_keeps_what_nothing_beats_on_both_cost_and_speed():
    assert [p.label for p in pareto_front(SERVING)] == ["a b=64", "b"]


def test_the_page_is_self_contained_with_every_figure(comparison):
    page = to_html(comparison, serving=SERVING)
    for name in FIGURES:
        assert re.search(rf'<figure id="{name}"><svg', page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.findall(r'(?:src|href)="(?!#|data:)', page)  # only in-page references and inline images
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert 'id="pareto-note"' in to_html(comparison)


def test_html_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["compare", "-t", "tpu-v5e,groq-lpu", "--no-accuracy", "--html", str(out)]) == 0
    page = out.read_text()
    assert all(f'<figure id="{name}">' in page for name in FIGURES[:3]) and "tpu-v5e" in page


PROBE = """<script>
for (const f of document.querySelectorAll('figure')) {
  const box = f.getBoundingClientRect(), svg = f.querySelector('svg').getBBox();
  const images = [...f.querySelectorAll('image')].map(i => i.getBBox().width > 0);
  f.dataset.shown = [Math.round(box.width), Math.round(box.height), Math.round(svg.width),
                     Math.round(svg.height), images.every(x => x)].join(' ');
}
</script></body>"""
"""Appended to a copy of the page: the size the browser laid each figure out at, the size of what
its SVG draws, and whether its inline images have a size (timeline bars are one)."""


def test_chromium_shows_every_figure(comparison, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("headless Chromium is not installed: .ci/run installs it (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(to_html(comparison, serving=SERVING).replace("</body>", PROBE))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shown = dict(re.findall(r'<figure id="(\w+)" data-shown="([^"]*)"', dom))
    assert set(shown) == set(FIGURES), dom[:500]
    for name, sizes in shown.items():
        width, height, drawn_w, drawn_h, images = sizes.split()
        assert int(width) > 300 and int(height) > 100 and int(drawn_w) > 300 and int(drawn_h) > 100, (name, sizes)
        assert images == "true", name


def test_without_matplotlib_the_report_is_one_clear_error(comparison, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what a missing package gives an import
    with pytest.raises(ReportError, match=r"pip install 'xpuc\[report\]'"):
        to_html(comparison)
