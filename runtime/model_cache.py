"""A whole-model compile cache: a warm ``runtime.compile`` of an unchanged model skips import,
optimization, lowering and LLVM, and maps the weights from disk instead of reading them.

Cached are models given as a path, bytes or an ``onnx.ModelProto`` (an ``ir.Graph`` has no
bytes to hash) whose inputs are all static once ``input_shapes`` is applied (the others
compile per feed shape when they run). One file per entry, ``$XPUC_CACHE_DIR/models/<key>.xpm``,
written through :func:`cache.write_atomic` (a temp file renamed into place), so concurrent
compiles never see half of one and an interrupted one leaves no entry::

    header (magic, meta length, blob offset, blob size, sha256 of key + meta, sha256 of blob)
    | meta | pad | blob

The meta (a pickle) is what running needs after lowering: the optimized graph without its
large constants, the kernel call list and aliases, each kernel's object code, where each
constant lies in the blob and, for an emulated target, the counters' layout. The blob holds
the constants the kernels read (the weights as laid out for them), mapped read-only.

An entry is loaded only if its magic, sizes and both digests check out; anything else
(truncated, bit-flipped, another key's entry, another format) is deleted and is a miss,
and the cold compile that follows replaces it. Hashing the blob reads every weight, so it
is done once per version of the file: a verified entry gets a memo ``<key>.xpm.ok`` holding
its stat (size, times, inode), and a later load whose stat matches skips the blob hash. Any
write to the file changes its ctime, so a damaged entry is hashed again; files modified
within :data:`MEMO_MARGIN_NS` of the check are not memoized, as timestamps tick coarsely.
The memo's mtime is also the entry's last use: entries beyond :data:`MAX_BYTES` in all are
evicted least recently used first. The folder is trusted as the object code in it is: an
entry that checks out is unpickled and its code run.

The key hashes everything that decides the result: the model's bytes (and its external
data files), the bound input shapes, host tiling, target and options, xpuc's own sources, the
numpy / networkx / onnx versions, and the LLVM version and host CPU (:func:`jit.host_id`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import networkx as nx
import numpy as np
import onnx

from backends.codegen import KernelSpec, Lowered, value_inputs
from backends import emulate
from backends.target import Target
from ir.graph import Graph

from . import cache, jit
from .executor import Executor

FORMAT = "xpuc-model-cache-2"
MAGIC = b"XPUCMC02"
HEADER = struct.Struct("<8sQQQ32s32s")
ALIGN = 64
"""Every constant starts at a multiple of this in the blob (and so in memory: mmap is page-aligned)."""
SMALL_BYTES = 4096
"""Constants up to this size stay inside the pickled graph; larger ones live only in the blob."""
PACKAGES = ("ir", "frontends", "backends", "runtime")
LOCATION = b"location"
"""The external-data key of a TensorProto, as it appears verbatim in a model file naming one."""
MAX_BYTES = 8 << 30
"""Writing an entry trims the others, least recently used first, to this total (the new one stays)."""
MEMO_MARGIN_NS = 100_000_000
"""A file modified less than this before it was hashed is hashed again next time: file
timestamps tick coarsely, so a second edit right after the first could leave them unchanged."""


@dataclass(frozen=True)
class Key:
    """An entry's name, and the stat of each model file it was hashed from at that moment."""

    name: str
    files: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def unchanged(self) -> bool:
        """The files still look as they did when hashed (else a cold compile may have read other bytes)."""
        return all(_stat(path) == stat for path, stat in self.files)


@dataclass
class Entry:
    graph: Graph
    """The optimized graph; constants over :data:`SMALL_BYTES` have no data here."""
    kernels: list[KernelSpec]
    aliases: dict[str, str]
    symbols: dict[str, str]
    objects: dict[str, bytes]
    constants: dict[str, tuple[np.dtype, tuple[int, ...], int]]
    """value name -> dtype, shape and offset in the blob."""
    layout: emulate.Layout | None
    counters: int
    """Elements of the emulation's counters buffer (written by kernels, so never mapped)."""


# ----------------------------------------------------------------------------- keys
def key(model: str | os.PathLike | bytes | onnx.ModelProto, input_shapes: Mapping[str, Any] | None,
        settings: Any) -> Key | None:
    """The key of compiling ``model`` with ``input_shapes`` and ``settings`` (whose repr must
    name every option that changes the compiled code); None when the model cannot be hashed."""
    files: tuple = ()
    if isinstance(model, onnx.ModelProto):
        try:
            digest = _sha256(model.SerializeToString(deterministic=True))
        except ValueError:  # over protobuf's 2 GiB: such a model cannot come as one proto anyway
            return None
    elif isinstance(model, (bytes, bytearray)):
        digest = _sha256(model)
    else:
        found = _file_digest(Path(model))
        if found is None:
            return None
        digest, files = found
    shapes = sorted((str(name), repr(shape)) for name, shape in (input_shapes or {}).items())
    name = cache.cache_key(FORMAT, digest, repr(shapes), repr(settings), _code_digest(), *jit.host_id())
    return Key(name, files)


@functools.cache
def _code_digest() -> str:
    """xpuc's own sources and the libraries whose objects an entry pickles or whose import it skips."""
    h = hashlib.sha256(f"{np.__version__} {nx.__version__} {onnx.__version__}".encode())
    root = Path(__file__).resolve().parents[1]
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stat(path: str) -> tuple[int, ...] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev


def _file_digest(path: Path) -> tuple[str, tuple] | None:
    """Digest of a model file and the external data files it names, with their stats.

    A memo per path remembers the digest with the files' stats, so an unchanged 500 MB model
    is not read again; files modified within :data:`MEMO_MARGIN_NS` of hashing are not memoized.
    """
    try:
        path = path.resolve(strict=True)
    except OSError:
        return None
    memo = cache.cache_dir() / "models" / f"{cache.cache_key(str(path))}.stat"
    try:
        record = json.loads(memo.read_text())
        files = tuple((p, tuple(s)) for p, s in record["files"])
        if all(_stat(p) == s for p, s in files):
            return record["digest"], files
    except (OSError, ValueError, KeyError, TypeError):
        pass
    started = time.time_ns()
    try:
        model_digest, mentions_location = _hash_file(path)
        names = [path, *(_external_files(path) if mentions_location else [])]
        files = tuple((str(p), _stat(str(p))) for p in names)
        digests = [model_digest] + [_hash_file(p)[0] for p in names[1:]]
    except OSError:
        return None
    if any(s is None for _, s in files):
        return None
    digest = cache.cache_key(*(part for p, d in zip(names, digests)
                               for part in (p.relative_to(path.parent).as_posix(), d)))
    if all(s[1] < started - MEMO_MARGIN_NS and s[2] < started - MEMO_MARGIN_NS for _, s in files):
        cache.write_atomic(memo, [json.dumps({"files": files, "digest": digest}).encode()])
    return digest, files


def _hash_file(path: Path, chunk: int = 1 << 24) -> tuple[str, bool]:
    """sha256 of a file, and whether it contains ``b"location"``: a model whose bytes lack it names
    no external data file, and need not be parsed to find out."""
    h, tail, found = hashlib.sha256(), b"", False
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            found = found or LOCATION in tail + block[:len(LOCATION)] or LOCATION in block
            tail = block[-len(LOCATION):]
    return h.hexdigest(), found


def _external_files(path: Path) -> list[Path]:
    """The external data files a model names, inside its folder (the loader refuses others)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a readable model: no key, and the loader reports what is wrong
        return []
    root = path.parent
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    found = [(root / loc).resolve() for loc in sorted(locations) if loc and not os.path.isabs(loc)]
    return [p for p in found if root in p.parents and p.is_file()]


# ----------------------------------------------------------------------- load / store
def _entry_path(key: Key) -> Path:
    return cache.cache_dir() / "models" / f"{key.name}.xpm"


def _memo_path(path: Path) -> Path:
    return path.with_name(path.name + ".ok")


def _meta_digest(key: Key, meta: bytes) -> bytes:
    """Binds the meta to its key, so another key's entry renamed into place is refused."""
    return hashlib.sha256(key.name.encode() + b"\0" + meta).digest()


def load(key: Key, *, target: Target | None, threads: int,
         min_parallel_work: int) -> tuple[Executor, emulate.Emulation | None] | None:
    """The executor (and emulation) stored under ``key``, or None on a miss or a bad entry."""
    start = time.perf_counter()
    path = _entry_path(key)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        cache.unusable(exc)
        return None
    with f:
        try:
            found = _checked(f, path, key)
        except Exception:  # unreadable, or unpickling objects of a different build: a miss, never a crash
            found = None
    if found is None:
        cache.discard(path)
        cache.discard(_memo_path(path))
        return None
    entry, blob = found
    constants = {name: blob[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)
                 for name, (dtype, shape, offset) in entry.constants.items()}
    emulation = None
    if entry.layout is not None:
        constants[emulate.COUNTERS] = np.zeros(entry.counters, np.int64)
        emulation = emulate.Emulation(entry.graph, target, entry.layout, constants[emulate.COUNTERS])
    library = jit.link(entry.objects, entry.symbols, start)
    executor = Executor(entry.graph, Lowered(None, entry.kernels, constants, entry.aliases), library,
                        threads=threads, min_parallel_work=min_parallel_work)
    return executor, emulation


def _checked(f, path: Path, key: Key) -> tuple[Entry, np.ndarray] | None:
    """The entry in the open file ``f`` and its blob mapped read-only, if every check passes.
    The blob is mapped from ``f`` itself: a concurrent compile renaming a new entry into
    place cannot swap the bytes between the check and the mapping."""
    head = f.read(HEADER.size)
    if len(head) != HEADER.size:
        return None
    magic, meta_size, blob_offset, blob_size, meta_digest, blob_digest = HEADER.unpack(head)
    stat = os.fstat(f.fileno())
    if magic != MAGIC or stat.st_size != blob_offset + blob_size or blob_offset < HEADER.size + meta_size:
        return None
    meta = f.read(meta_size)
    if _meta_digest(key, meta) != meta_digest:
        return None
    blob = (np.memmap(f, np.uint8, "r", offset=blob_offset, shape=(blob_size,)) if blob_size
            else np.zeros(0, np.uint8))  # mmap refuses an empty range
    if not _verified(path, stat, blob, blob_digest):
        return None
    return pickle.loads(meta), blob


def _verified(path: Path, stat: os.stat_result, blob: np.ndarray, digest: bytes) -> bool:
    """The blob hashes to ``digest``, or was found to when the file last had this stat.
    Either way the memo's modification time records the use (for :func:`_trim`)."""
    memo = _memo_path(path)
    fingerprint = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    try:
        if json.loads(memo.read_text()) == fingerprint:
            os.utime(memo)
            return True
    except (OSError, ValueError):
        pass
    if hashlib.sha256(blob).digest() != digest:
        return False
    settled = time.time_ns() - MEMO_MARGIN_NS
    trusted = stat.st_mtime_ns < settled and stat.st_ctime_ns < settled
    cache.write_atomic(memo, [json.dumps(fingerprint if trusted else None).encode()])
    return True


def store(key: Key, executor: Executor, emulation: emulate.Emulation | None) -> None:
    """Write the entry for ``key``; skipped (it only costs time) when the model files changed
    since they were hashed, a constant cannot be mapped, or the disk refuses."""
    graph = executor.graph
    arrays = {name: np.ascontiguousarray(a) for name, a in executor.constants.items()  # only what kernels read
              if emulation is None or a is not emulation.counters}
    if not key.unchanged() or value_inputs(graph) or any(a.dtype.hasobject for a in arrays.values()):
        return
    places, size = {}, 0
    for name, a in arrays.items():
        offset = _aligned(size, ALIGN)
        places[name] = (a.dtype, tuple(a.shape), offset)
        size = offset + a.nbytes
    stripped = graph.copy()
    for value in stripped.values.values():
        if value.data is not None and value.data.nbytes > SMALL_BYTES:
            value.data = None
    lib = executor.library
    meta = pickle.dumps(Entry(stripped, executor.lowered.kernels, executor.lowered.aliases, lib.symbols, lib.objects,
                              places, emulation and emulation.layout,
                              emulation.counters.size if emulation else 0), protocol=pickle.HIGHEST_PROTOCOL)
    blob_offset = _aligned(HEADER.size + len(meta), 4096)
    blob, position = [], blob_offset
    for name, a in arrays.items():
        offset = places[name][2] + blob_offset
        blob += [bytes(offset - position), a.reshape(-1).view(np.uint8)]
        position = offset + a.nbytes
    digest = hashlib.sha256()
    for chunk in blob:
        digest.update(chunk)
    header = HEADER.pack(MAGIC, len(meta), blob_offset, size, _meta_digest(key, meta), digest.digest())
    if cache.write_atomic(_entry_path(key), [header, meta, bytes(blob_offset - HEADER.size - len(meta)), *blob]):
        _trim(_entry_path(key))


def _trim(keep: Path) -> None:
    """Delete the least recently used entries until all of them fit in :data:`MAX_BYTES`, and
    temp files of interrupted writes. (A process that has an entry mapped keeps reading it:
    unlinking leaves the mapping valid.)"""
    folder = keep.parent
    cache.remove_stale(folder)
    cache.remove_stale(folder.parent)

    def last_use(path: Path) -> int:
        times = [path.stat().st_mtime_ns]
        memo = _memo_path(path)
        if memo.exists():
            times.append(memo.stat().st_mtime_ns)
        return max(times)

    try:
        stats = [(p.stat().st_size, last_use(p), p) for p in folder.glob("*.xpm") if p != keep]
        total = sum(size for size, _, _ in stats) + (keep.stat().st_size if keep.exists() else 0)
        for size, _, path in sorted(stats, key=lambda item: item[1]):
            if total <= MAX_BYTES:
                break
            cache.discard(path)
            cache.discard(_memo_path(path))
            total -= size
    except OSError:
        pass


def _aligned(n: int, to: int) -> int:
    return -(-n // to) * to
