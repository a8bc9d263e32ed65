"""Design-space sweeps: many models x targets x formats x deployments x hardware variants on Dask.

``run(spec, output)`` evaluates every point of a sweep spec (``spec``: axes, variants,
report) on a Dask cluster and streams one Parquet row per point (``store``); ``pareto``
finds the fronts and the best point per target; ``html`` draws the report. The metrics
come from the evaluator the spec names (``evaluate``: one scheduled pass, or serving). See docs/sweeps.md.
"""

from .errors import SweepError, SweepSpecError
from .evaluate import EVALUATORS, LLM, SCHEDULE, Evaluator, Metric
from .runner import SweepResult, run
from .spec import Point, SweepSpec, load
from .store import read

__all__ = ["run", "load", "read", "SweepResult", "SweepSpec", "Point", "Evaluator", "Metric", "SCHEDULE", "LLM",
           "EVALUATORS",
           "SweepError", "SweepSpecError"]
