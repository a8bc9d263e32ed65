"""A disk cache of compiled object code, so an unchanged model recompiles near-instantly.

Entries are per kernel (see :mod:`jit`). The key hashes everything that decides the
machine code: the kernel's module text, the target triple, CPU name and features, the LLVM
version and the optimization settings. Whole compiled models are cached beside them
(:mod:`model_cache`). ``XPUC_NO_CACHE=1`` turns both off, as ``cache=False`` does.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XPUC_CACHE_DIR") or Path.home() / ".cache" / "xpuc")


def enabled() -> bool:
    return os.environ.get("XPUC_NO_CACHE", "") in ("", "0")


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def load(key: str) -> bytes | None:
    path = cache_dir() / f"{key}.o"
    try:
        return path.read_bytes()
    except OSError:
        return None


def store(key: str, data: bytes) -> None:
    """Write atomically (temp file + rename) so concurrent compiles never see half a file.
    A cache that cannot be written is skipped: it only costs time."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / f"{key}.o")
    except OSError:
        pass
