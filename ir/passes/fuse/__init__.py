"""Fusion passes: recognise the decomposed patterns exporters emit and replace them with the
composite ops hardware targets care about (standard ONNX ops where ONNX has them)."""

from __future__ import annotations

from ..manager import Pass
from .activations import fuse_gelu, fuse_silu, fuse_swiglu
from .attention import fuse_attention
from .epilogue import fuse_matmul_epilogue
from .norms import fuse_layer_norm, fuse_rms_norm
from .rotary import fuse_rotary_embedding

FUSIONS: dict[str, Pass] = {p.name: p for p in [
    fuse_layer_norm, fuse_rms_norm, fuse_gelu, fuse_silu, fuse_swiglu, fuse_rotary_embedding, fuse_attention,
    # Keep last: it claims MatMul outputs (bias adds, activations) other patterns start from.
    fuse_matmul_epilogue,
]}
"""Fusion passes in the order the default pipeline runs them."""
