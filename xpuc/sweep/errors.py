"""What a sweep reports to users."""

from ir.errors import XpucError


class SweepSpecError(XpucError):
    """A sweep spec is unreadable or names an axis, a value, a model, a target or a key path that does not exist."""


class SweepError(XpucError):
    """A sweep cannot run or continue: an output folder in the way, a results file of other columns, no cluster."""
