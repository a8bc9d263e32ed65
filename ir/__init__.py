"""The xpuc intermediate representation: a networkx dataflow graph of ONNX-vocabulary ops."""

from . import ops  # noqa: F401  (registers op rules)
from .dot import to_dot
from .dtypes import DType
from .errors import ModelLoadError, ShapeError, UnsupportedOpsError, VerificationError, XpucError
from .export import to_onnx
from .graph import Graph, Node, Value
from .printer import format_graph
from .shapes import bind_input_shapes, parse_shape
from .types import Dim, TensorType
from .verify import verify

__all__ = ["Graph", "Node", "Value", "TensorType", "Dim", "DType", "verify", "format_graph", "to_dot", "to_onnx",
           "bind_input_shapes", "parse_shape",
           "XpucError", "ModelLoadError", "ShapeError", "UnsupportedOpsError", "VerificationError"]
