"""Hardware targets, schedulers and code generation (see docs/design.md).

``load_target(name_or_path)`` reads a target spec (``backends/targets/*.toml`` or any
path); ``schedule(graph, target)`` predicts where, when and at what cost every op runs;
``backends.report`` prints a schedule as a table, JSON or a Chrome trace.
"""

from .placement import ScheduleError
from .schedule import OpSchedule, Schedule
from .scheduler import schedule
from .target import Target, TargetSpecError, list_targets, load_target

__all__ = ["load_target", "list_targets", "schedule", "Target", "Schedule", "OpSchedule", "TargetSpecError",
           "ScheduleError"]
