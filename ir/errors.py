"""Errors that xpuc reports to users.

Every failure a user can cause (a bad file, an unsupported op, a wrong shape) is an
``XpucError``: the CLI prints its message as one line and exits non-zero. Anything else
escaping is a bug in xpuc.
"""


class XpucError(Exception):
    """Base class for user-facing errors."""


class ModelLoadError(XpucError):
    """The model file could not be read: missing, corrupt, not ONNX, unsafe."""


class UnsupportedOpsError(XpucError):
    """The model uses ops xpuc does not implement; lists all of them at once."""

    def __init__(self, unsupported: dict[str, list[str]], opset: int):
        self.unsupported = unsupported
        self.opset = opset
        lines = [
            f"{op} (opset {opset}): {', '.join(names[:5])}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            for op, names in sorted(unsupported.items())
        ]
        super().__init__(
            f"{len(unsupported)} unsupported op type(s) in {sum(map(len, unsupported.values()))} node(s): "
            + "; ".join(lines)
        )


class VerificationError(XpucError):
    """The graph breaks an IR invariant (a cycle, two producers for a value, a type clash)."""


class ShapeError(XpucError):
    """Shapes or dtypes are inconsistent, or a requested input shape contradicts the model."""
