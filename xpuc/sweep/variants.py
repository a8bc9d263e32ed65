"""Hardware variants: a target spec with some of its numbers changed, for "what if" sweeps.

A variant names a base (a preset or a spec file) and the numbers it changes, by key path
in the spec's own structure, memory levels by their ``name``::

    [variants.tpu-v4-2x-hbm]
    base = "tpu-v4"
    scale = {"memory.hbm.bandwidth_bytes_per_s" = 2}     # multiply a number the spec has
    set = {"price.usd_per_chip_hour" = 4.5}               # or give it a new value

The result is an ordinary :class:`backends.Target` (validated by ``backends.target``
exactly as a spec file is): the changed numbers cite a new source, ``sweep-variant``,
whose text says which preset this is a variant of and what changed from what.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from backends import Target, TargetSpecError, load_target
from backends.target import parse_target

from .errors import SweepSpecError

SOURCE = "sweep-variant"
"""The ``[sources]`` key every number a variant changes cites."""


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    scale: dict[str, float]
    set: dict[str, object]

    def describe(self) -> str:
        changes = [f"{p} x{f:g}" for p, f in self.scale.items()] + [f"{p} = {v}" for p, v in self.set.items()]
        return ", ".join(changes)


def derive(variant: Variant, base_dir: Path) -> Target:
    """The target ``variant`` describes, validated as a spec file would be."""
    base = load_target(_resolve(variant.base, base_dir))
    raw = tomllib.loads(Path(base.path).read_text())
    was = []
    for path, factor in variant.scale.items():
        _, _, leaf = _leaf(raw, path, variant, must_exist=True)
        if not _number(factor) or factor <= 0:
            raise SweepSpecError(f"variant {variant.name}: scale of {path} must be a number > 0, got {factor!r}")
        if not _number(leaf["value"]):
            raise SweepSpecError(f"variant {variant.name}: {path} is {leaf['value']!r}, not a number to scale")
        was.append(f"{path} x{factor:g} (was {leaf['value']:g}, source {leaf['source']})")
        leaf["value"] = leaf["value"] * factor
        leaf["source"] = SOURCE
    for path, value in variant.set.items():
        table, key, leaf = _leaf(raw, path, variant, must_exist=False)
        old = f"was {leaf['value']}, source {leaf['source']}" if leaf else "not in the base spec"
        was.append(f"{path} = {value} ({old})")
        table[key] = {"value": copy.deepcopy(value), "source": SOURCE}
    raw["name"] = variant.name
    raw["summary"] = f"{raw.get('summary', '')} [sweep variant of {base.name}: {variant.describe()}]"
    raw.setdefault("sources", {})[SOURCE] = (f"xpuc sweep variant {variant.name!r} of preset {base.name!r} "
                                             f"({base.path}): " + "; ".join(was))
    try:
        return parse_target(raw, f"sweep variant {variant.name} of {base.name}")
    except TargetSpecError as exc:
        raise SweepSpecError(str(exc)) from None


def _resolve(name: str, base_dir: Path) -> str:
    """A spec path relative to the sweep spec's folder; a preset name as it is."""
    return str(base_dir / name) if name.endswith(".toml") else name


def _steps(raw: dict, path: str, variant: Variant):
    """(parent table, last key) of ``path``; ``memory.NAME`` picks the memory level named NAME."""
    keys = path.split(".")
    table = raw
    i = 0
    while i < len(keys) - 1:
        key = keys[i]
        if key == "memory" and isinstance(table.get("memory"), list):
            levels = {m.get("name"): m for m in table["memory"]}
            if i + 1 >= len(keys) - 1 or keys[i + 1] not in levels:
                name = keys[i + 1] if i + 1 < len(keys) else ""
                raise SweepSpecError(f"variant {variant.name}: {variant.base} has no memory level {name!r} "
                                     f"(levels: {', '.join(levels)}) for {path}")
            table, i = levels[keys[i + 1]], i + 2
            continue
        if not isinstance(table.get(key), dict) or _is_sourced(table[key]):
            known = ", ".join(k for k, v in table.items() if isinstance(v, (dict, list)) and not _is_sourced(v))
            raise SweepSpecError(f"variant {variant.name}: {variant.base} has no table {'.'.join(keys[:i + 1])!r} "
                                 f"for {path} (tables here: {known})")
        table, i = table[key], i + 1
    return table, keys[-1]


def _leaf(raw: dict, path: str, variant: Variant, must_exist: bool) -> tuple[dict, str, dict | None]:
    """(parent table, key, the sourced number there); ``set`` may add a number the spec leaves
    out (the target schema then decides whether that key exists)."""
    table, key = _steps(raw, path, variant)
    leaf = table.get(key)
    if leaf is not None or must_exist:
        if not _is_sourced(leaf):
            numbers = ", ".join(k for k, v in table.items() if _is_sourced(v))
            raise SweepSpecError(f"variant {variant.name}: {variant.base} has no number {path!r} "
                                 f"(numbers there: {numbers})")
    return table, key, leaf


def _is_sourced(v) -> bool:
    return isinstance(v, dict) and set(v) == {"value", "source"}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
