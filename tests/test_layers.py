"""The package layering: each layer imports only the layers below it.

ir <- frontends <- backends (grouping, cost models, host code generation side by side)
<- backends.emulate (counting kernels: code generation and cost models together) <- runtime.
Host code generation in particular must not know the schedulers, placement or targets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "ir": ("frontends", "backends", "runtime", "xpuc"),
    "frontends": ("backends", "runtime", "xpuc"),
    "backends": ("frontends", "runtime", "xpuc"),
    "backends/codegen": ("backends.scheduler", "backends.placement", "backends.schedule", "backends.target",
                         "backends.families", "backends.tiles", "backends.work", "backends.emulate", "backends.report"),
    "runtime": ("xpuc",),
}


def imported(path: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("layer", FORBIDDEN)
def test_layer_imports_only_what_is_below_it(layer):
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files
    for path in files:
        bad = sorted(n for n in imported(path) for f in FORBIDDEN[layer] if n == f or n.startswith(f + "."))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
