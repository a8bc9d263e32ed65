"""A disk cache of compiled object code, so an unchanged model recompiles near-instantly.

Entries are per kernel (see :mod:`jit`). The key hashes everything that decides the
machine code: the kernel's module text, the target triple, CPU name and features, the LLVM
version and the optimization settings. Whole compiled models are cached beside them
(:mod:`model_cache`). ``XPUC_NO_CACHE=1`` turns both off, as ``cache=False`` does.

The cache is shared by every process of the user and must never make a compile fail or
run bad code:

- an entry is ``MAGIC | sha256(key, object code) | object code``, written to a temp file and
  renamed into place (:func:`write_atomic`), so a reader sees a whole entry or none, and a
  process killed while writing leaves only a dot-file that is never read (and is removed
  once stale, :func:`remove_stale`);
- a truncated, bit-flipped or foreign file (another key's entry, another format) fails the
  check on load: it is deleted, counts as a miss, and the compile that follows replaces it;
- a folder that cannot be written (read-only, full) costs only time: the first failure in a
  process warns once (:class:`CacheWarning`), and compiles go on without the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path

MAGIC = b"XPUCKO01"
DIGEST_BYTES = 32
TEMP_PREFIX = ".writing-"
STALE_SECONDS = 3600
"""A temp file this old belongs to a write that was interrupted (no compile takes this long
to write one entry), so it may be removed."""


class CacheWarning(UserWarning):
    """The compile cache folder cannot be used; compiling goes on without it."""


_warned: set[str] = set()


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


def _digest(key: str, data: bytes) -> bytes:
    return hashlib.sha256(key.encode() + b"\0" + data).digest()


def load(key: str) -> bytes | None:
    """The object code stored under ``key``, or None (a miss) if absent or failing its check."""
    path = cache_dir() / f"{key}.o"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        unusable(exc)
        return None
    body = data[len(MAGIC) + DIGEST_BYTES:]
    if data[:len(MAGIC)] != MAGIC or data[len(MAGIC):len(MAGIC) + DIGEST_BYTES] != _digest(key, body):
        discard(path)
        return None
    return body


def store(key: str, data: bytes) -> None:
    write_atomic(cache_dir() / f"{key}.o", [MAGIC, _digest(key, data), data])


def write_atomic(path: Path, chunks) -> bool:
    """Write ``chunks`` to ``path`` through a temp file renamed into place; False (after one
    warning per process) if the folder refuses, with the temp file removed."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        unusable(exc)
        return False


def discard(path: Path) -> None:
    """Delete a bad entry (a folder that refuses keeps it: it fails its check again next time)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def remove_stale(folder: Path) -> None:
    """Delete temp files left by writes that were interrupted long ago."""
    try:
        for tmp in folder.glob(TEMP_PREFIX + "*"):
            if tmp.stat().st_mtime < time.time() - STALE_SECONDS:
                tmp.unlink(missing_ok=True)
    except OSError:
        pass


def unusable(exc: OSError) -> None:
    folder = str(cache_dir())
    if folder in _warned:
        return
    _warned.add(folder)
    warnings.warn(f"xpuc: the compile cache in {folder} cannot be used ({exc.strerror or exc}); "
                  "going on without it: what is compiled now is not kept", CacheWarning, stacklevel=2)
