"""Sweep results on disk: a Parquet dataset, one part file per finished task.

``results.parquet`` is a folder (as Spark and Dask write Parquet) of ``part-*.parquet``
files. A part is written to a hidden temporary name and renamed into place, so a sweep
killed at any moment leaves only whole parts, and readers (``pyarrow.parquet.read_table``,
pandas, DuckDB) skip hidden files. Resuming reads the ``point_id`` column of every part
and runs only the points not there. One row per point: its axis values, its metrics,
``error`` (None when it ran), ``unused_axes`` and ``eval_s`` (seconds it took on its worker).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SweepError
from .evaluate import Metric

ARROW = {"float": pa.float64(), "int": pa.int64(), "str": pa.string()}
AXIS_TYPES = {"model": "str", "target": "str", "target_base": "str", "precision": "str", "deploy_chips": "int",
              "deploy_tp": "int", "deploy_pp": "int", "batch": "int", "prompt_tokens": "int", "output_tokens": "int",
              "rate_per_s": "float"}
"""Result columns for the axes (``spec.Point.columns`` plus the preset a target derives from)."""
RUN_TYPES = {"unused_axes": "str", "error": "str", "eval_s": "float"}


def schema(metrics: Mapping[str, Metric]) -> pa.Schema:
    types = {"point_id": "str", **AXIS_TYPES, **{k: m.type for k, m in metrics.items()}, **RUN_TYPES}
    return pa.schema([(name, ARROW[t]) for name, t in types.items()])


class ResultStore:
    """The output folder of one sweep: what it already holds, and where new rows go."""

    def __init__(self, path: str | Path, schema: pa.Schema, resume: bool):
        self.path, self.schema = Path(path), schema
        if self.path.exists() and not self.path.is_dir():
            raise SweepError(f"{self.path} is a file; sweep results are a folder of Parquet parts: give a new path")
        parts = self.parts()
        if parts and not resume:
            raise SweepError(f"{self.path} already holds {len(parts)} result part(s): --resume to continue that "
                             "sweep, or give another output path")
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".part-*.tmp"):  # a write cut short by a kill
            stale.unlink(missing_ok=True)
        self.done: set[str] = set()
        for part in parts:
            self.done.update(self._point_ids(part))
        # unique per writer: a resume within the same second of the same process must not
        # overwrite the parts it keeps
        self._prefix = f"part-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self._count = 0

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def _point_ids(self, part: Path) -> list[str]:
        try:
            found = pq.read_schema(part)
            ids = pq.read_table(part, columns=["point_id"]).column("point_id").to_pylist()
        except (pa.ArrowException, OSError) as exc:
            aside = part.with_name(f".corrupt-{part.name}")
            part.rename(aside)
            warnings.warn(f"{part}: unreadable ({exc}); moved to {aside.name}, its points run again", stacklevel=3)
            return []
        if not found.equals(self.schema):
            raise SweepError(f"{part} has other columns than this sweep writes (written by another version or "
                             "evaluator): give another output path")
        return ids

    def write(self, rows: list[dict]) -> None:
        """One part, whole or not at all."""
        if not rows:
            return
        name = f"{self._prefix}-{self._count:05d}.parquet"
        self._count += 1
        temporary = self.path / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), temporary)
        os.replace(temporary, self.path / name)
        self.done.update(r["point_id"] for r in rows)


def read(path: str | Path) -> list[dict]:
    """Every row of a results folder (or a single Parquet file) as dicts."""
    path = Path(path)
    if not path.exists():
        raise SweepError(f"no sweep results at {path}")
    return pq.read_table(path).to_pylist()
