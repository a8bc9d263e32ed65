"""Op definitions. Importing this package registers every supported op."""

from . import composite, elementwise, linalg, moe, movement, nn, quant, reduce, ssm  # noqa: F401  (registration)
from .contraction import Contraction, Gemm, Operand
from .registry import (InferContext, OpDef, Pattern, contractions, lookup, moves_elements, numel, register,
                       static_context, supported_ops)

__all__ = ["InferContext", "OpDef", "Pattern", "Contraction", "Gemm", "Operand", "contractions", "lookup",
           "moves_elements", "numel", "register", "static_context", "supported_ops"]
