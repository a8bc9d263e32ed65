"""Op definitions. Importing this package registers every supported op."""

from . import composite, elementwise, linalg, movement, nn, quant, reduce  # noqa: F401  (registration)
from .registry import InferContext, OpDef, lookup, numel, register, supported_ops

__all__ = ["InferContext", "OpDef", "lookup", "numel", "register", "supported_ops"]
