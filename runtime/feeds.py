"""Feeds and results for running a compiled model from the command line (``xpuc run``):
inputs read from ``.npy`` files or drawn at random, outputs summarized and saved."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ir.errors import XpucError

from .compiled import CompiledModel


def load_feeds(files: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``{input name: .npy path}`` -> arrays (dtypes and shapes are checked by ``CompiledModel.run``)."""
    feeds = {}
    for name, path in files.items():
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise XpucError(f"input {name!r}: cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise XpucError(f"input {name!r}: {path} is not a .npy array file ({exc})") from None
    return feeds


def random_feeds(model: CompiledModel, given: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random arrays for the inputs not in ``given``: floats from N(0, 1),
    integers (token ids, positions) from [0, 16), booleans fair coins."""
    rng = np.random.default_rng(seed)
    feeds = dict(given)
    for name in model.input_names:
        if name in feeds:
            continue
        t = model.graph.type_of(name)
        if not t.is_static:
            raise XpucError(f"input {name!r} has type {t}: give its shape with --input-shape {name}=DIMS "
                            "to draw random values")
        shape, dtype = tuple(t.shape), t.dtype.numpy
        if t.dtype.is_float:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 16, shape).astype(dtype)
    return feeds


def describe(name: str, array: np.ndarray) -> str:
    """One line: name, dtype[shape], a digest of the bytes, and min/max/mean of the values."""
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
    dims = "x".join(map(str, array.shape)) or "scalar"
    stats = ""
    if array.size and array.dtype != object:
        values = array.astype(np.float64)
        stats = f"  min={values.min():.6g} max={values.max():.6g} mean={values.mean():.6g}"
    return f"{name}  {array.dtype}[{dims}]  sha256:{digest}{stats}"


def save_outputs(folder: str | Path, names: list[str], arrays: list[np.ndarray]) -> list[Path]:
    """Write ``<folder>/<name>.npy`` per output; characters a file name cannot hold become ``_``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in zip(names, arrays):
        path = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "output")
        path = path.with_name(path.name + ".npy")
        np.save(path, array, allow_pickle=False)
        paths.append(path)
    return paths
