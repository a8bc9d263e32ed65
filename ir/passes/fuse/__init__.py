"""Fusion passes: recognise the decomposed patterns exporters emit and replace them with the
composite ops hardware targets care about (standard ONNX ops where ONNX has them)."""

from __future__ import annotations

from ..manager import PassFn

FUSIONS: dict[str, PassFn] = {}
"""Fusion passes in the order the default pipeline runs them."""
